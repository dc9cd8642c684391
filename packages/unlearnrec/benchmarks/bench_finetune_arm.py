"""The demo's fine-tuned arm alone, on the demo's full ML-100K setup, step by step.

Recipe (needs recbole for the data: `pip install --no-deps recbole`):

    uv run python packages/unlearnrec/benchmarks/bench_finetune_arm.py \
        --cache /tmp/unlearnrec_arm0.pt --params mlp_w,mlp_b,e0 --lr 1e-3 --steps 30

The first run trains the demo's base LightGCN (dim 64, 60 epochs), pre-trains the encoder
(40 x 10 steps) and retrains without the fakes (the gold standard), all as
`trainforge demo unlearnrec` does with the same seed, and caches them in `--cache`
(about 15 minutes of one idle core). Later runs load the cache and fine-tune only: the
zero-shot encoder, then every `--every` steps the Recall@20 (relative to retraining),
NDCG@20, the fakes' and random non-edges' mean scores. `--params` picks what is trained
(the reference's fineTune.py trains the MLP weight and bias and a copy of E0).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from trainforge_unlearnrec import (
    InfluenceEncoder,
    PretrainConfig,
    UnlearnRecModel,
    edge_scores,
    lightgcn,
    ndcg_at_k,
    pretrain,
    recall_at_k,
    retrain_without,
    sample_negatives,
    sample_non_edges,
    split_request,
    train_lightgcn,
)
from trainforge_unlearnrec.demo import _FULL, _data
from trainforge_unlearnrec.graph import inject_random_edges
from trainforge_unlearnrec.training import Request, unlearning_loss


def build(path: Path, seed: int) -> dict:
    s = _FULL
    torch.manual_seed(seed)
    clean, _ = _data(s, seed)
    graph, fake = inject_random_edges(clean, max(10, int(s.fake_share * clean.train.size(1))), seed)
    nu, ni = graph.num_users, graph.num_items
    kw = {"epochs": s.base_epochs, "batch_size": s.batch, "lr": s.base_lr, "seed": seed}
    base = lightgcn(graph.num_nodes, s.dim, 3, seed=seed)
    train_lightgcn(base, graph.train, nu, ni, **kw)
    model = UnlearnRecModel(
        base, InfluenceEncoder(graph.num_nodes, s.dim, 3), nu, ni, graph.edge_index()
    )
    cfg = PretrainConfig(
        epochs=s.pre_epochs, steps_per_epoch=s.pre_steps, batch_size=1024,
        resample_every=s.resample_every, seed=seed,
    )  # fmt: skip
    pretrain(model, graph.train, cfg)
    remain, _ = split_request(graph.train, fake, nu, ni)
    rt = lightgcn(graph.num_nodes, s.dim, 3, seed=seed)
    retrain_without(rt, graph.train, fake, nu, ni, **kw)
    with torch.no_grad():
        e = rt(graph.edge_index(remain))
    d = {
        "graph": graph,
        "fake": fake,
        "base": base.state_dict(),
        "enc": model.encoder.state_dict(),
        "retrain_recall": recall_at_k(e[:nu], e[nu:], remain, graph.test, 20),
    }
    torch.save(d, path)
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=Path("unlearnrec_arm0.pt"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="mlp_w,mlp_b,e0")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--forget-weight", type=float, default=0.2)
    ap.add_argument("--align-weight", type=float, default=0.01)
    ap.add_argument("--align-temp", type=float, default=10.0)
    ap.add_argument("--align-target", choices=["original", "remaining"], default="original")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cache.is_file():
        d = torch.load(args.cache, weights_only=False)
    else:
        d = build(args.cache, args.seed)
    g, fake = d["graph"], d["fake"]
    nu, ni = g.num_users, g.num_items
    base = lightgcn(g.num_nodes, 64, 3, seed=args.seed)
    base.load_state_dict(d["base"])
    model = UnlearnRecModel(base, InfluenceEncoder(g.num_nodes, 64, 3), nu, ni, g.edge_index())
    model.encoder.load_state_dict(d["enc"])
    remain, _ = split_request(g.train, fake, nu, ni)
    req = Request.build(model, g.train, fake)
    negs = sample_non_edges(g.train, nu, ni, 4096, seed=args.seed)
    gold = d["retrain_recall"]

    def report(tag: str) -> None:
        with torch.no_grad():
            e = model.embeddings(req.remain_edge_index, req.drop_edge_index)
        u, i = e[:nu], e[nu:]
        r = recall_at_k(u, i, remain, g.test, 20)
        print(
            f"| {tag} | {r:.4f} ({(r / gold - 1) * 100:+.1f}%) | "
            f"{ndcg_at_k(u, i, remain, g.test, 20):.4f} | "
            f"{float(edge_scores(u, i, fake).mean()):.3f} | "
            f"{float(edge_scores(u, i, negs).mean()):.3f} |",
            flush=True,
        )

    print(f"retrain Recall@20 {gold:.4f}; {args}")
    print("| step | Recall@20 (vs retrain) | NDCG@20 | fake score | non-edge score |")
    print("|---|---|---|---|---|")
    report("0 (zero-shot)")
    chosen = set(args.params.split(","))
    for p in model.parameters():
        p.requires_grad_(False)
    params = [model.init_embeds] if "e0" in chosen else []
    for layer in model.encoder.mlp:
        params += [layer.weight] if "mlp_w" in chosen else []
        params += [layer.bias] if "mlp_b" in chosen else []
    for p in params:
        p.requires_grad_(True)
    target = None
    if args.align_target == "remaining":
        with torch.no_grad():
            target = model.backbone.propagate(model.init_embeds, req.remain_edge_index)
    opt = torch.optim.Adam(params, lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(req.remain_pairs.size(1), (1024,), generator=gen)
        u, i = req.remain_pairs[0, idx], req.remain_pairs[1, idx]
        j = sample_negatives(req.remain_pairs, ni, u, gen)
        loss, _ = unlearning_loss(
            model, req, u, i, j, args.forget_weight, args.align_weight, args.align_temp,
            align_target=target,
        )  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            report(str(step))
    print(f"fine-tuning wall time (with the evaluations): {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
