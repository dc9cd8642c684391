"""Unlearning on MovieLens-100K: wall time and Recall@20 per method, and LightGCN throughput.

Recipe (needs recbole for the data: `pip install --no-deps recbole`):

    uv run python packages/unlearnrec/benchmarks/bench_unlearning_time.py \
        --dim 64 --epochs 60 --sizes 1 100 1000 --threads 1

1. A LightGCN (dim 64, 3 layers, the demo's full schedule: `--epochs` epochs of batch 2048
   at lr 5e-3) is trained on ML-100K (943 users, 80/20 per-user split, seed 0) and an
   Influence Encoder is pre-trained against it (`--pre-epochs` x `--pre-steps`, random 20%
   requests resampled every 5 epochs; its cost is reported apart: done once, before any
   request).
2. For each request size (random training edges, seeded): edge removal (one propagation
   over the remaining graph), the encoder zero-shot (`zero_shot`), the encoder fine-tuned
   (`unlearn`, 1 epoch x 10 steps) and full retraining from scratch on the remaining graph
   with the same schedule (`retrain_without`, timed in full, not scaled). Each gets its
   wall time, Recall@20 / NDCG@20 on the test split (remaining train items masked) and
   the mean score of the request's edges (lower = more forgotten). Edge removal and
   zero-shot times are medians of `--repeats` runs; fine-tuning and retraining run once.
3. `--throughput`: LightGCN training epochs/s (batch 2048, BPR) of the PyG backbone
   against the independent dense-adjacency `DenseLightGCN`, in the same process.

Sizes can run as separate processes (`--sizes 1`, `--sizes 100`, ...); each retrains the
same base (same seed) first. Rows are printed as markdown and as JSON lines (`--json`).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from trainforge_core.bench import median_time
from trainforge_unlearnrec import (
    DenseLightGCN,
    FinetuneConfig,
    InfluenceEncoder,
    PretrainConfig,
    UnlearnRecModel,
    edge_scores,
    lightgcn,
    load_movielens_100k,
    ndcg_at_k,
    pretrain,
    recall_at_k,
    retrain_without,
    split_request,
    train_lightgcn,
    unlearn,
    zero_shot,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--pre-epochs", type=int, default=40)
    ap.add_argument("--pre-steps", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1, 100, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--json", default=None, help="append one JSON line per row to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = load_movielens_100k(seed=0)
    nu, ni = g.num_users, g.num_items
    print(
        f"ML-100K: {nu} users, {ni} items, {g.train.size(1)} train edges, dim {args.dim}, "
        f"{args.epochs} epochs, torch threads {torch.get_num_threads()}"
    )
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")

    def quality(u: torch.Tensor, i: torch.Tensor, remain: torch.Tensor, req: torch.Tensor):
        return {
            "recall": recall_at_k(u, i, remain, g.test, 20),
            "ndcg": ndcg_at_k(u, i, remain, g.test, 20),
            "request_score": float(edge_scores(u, i, req).mean()),
        }

    if args.sizes:
        base = lightgcn(g.num_nodes, args.dim, 3, seed=0)
        base_log = train_lightgcn(
            base, g.train, nu, ni, epochs=args.epochs, batch_size=2048, lr=args.lr
        )
        model = UnlearnRecModel(
            base, InfluenceEncoder(g.num_nodes, args.dim), nu, ni, g.edge_index()
        )
        pre = pretrain(
            model,
            g.train,
            PretrainConfig(
                epochs=args.pre_epochs,
                steps_per_epoch=args.pre_steps,
                batch_size=1024,
                resample_every=5,
            ),
        )
        print(f"base training {base_log.seconds:.1f}s, encoder pre-training {pre.seconds:.1f}s")
        emit({"kind": "setup", "base_s": base_log.seconds, "pretrain_s": pre.seconds})
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(g.train.size(1), generator=gen)
    for size in args.sizes:
        request = g.train[:, perm[:size]]
        remain, _ = split_request(g.train, request, nu, ni)
        iso_u = int((torch.bincount(remain[0], minlength=nu) == 0).sum())
        iso_i = int((torch.bincount(remain[1], minlength=ni) == 0).sum())
        res: dict[str, dict] = {}
        with torch.no_grad():
            e = base(g.edge_index())
        res["before"] = {"seconds": float("nan"), **quality(e[:nu], e[nu:], remain, request)}

        def removal(remain=remain):
            with torch.no_grad():
                return base.propagate(base.init_embeddings(), g.edge_index(remain))

        t = median_time(removal, repeats=args.repeats, warmup=1).median
        e = removal()
        res["edge removal"] = {"seconds": t, **quality(e[:nu], e[nu:], remain, request)}
        t = median_time(
            lambda r=request: zero_shot(model, g.train, r), repeats=args.repeats, warmup=1
        ).median
        zs = zero_shot(model, g.train, request)
        res["zero-shot"] = {"seconds": t, **quality(zs.user_emb, zs.item_emb, remain, request)}
        state = {k: v.clone() for k, v in model.state_dict().items()}
        ft_cfg = FinetuneConfig(epochs=1, steps_per_epoch=10, batch_size=1024, num_negatives=512)
        start = time.perf_counter()
        ft = unlearn(model, g.train, request, ft_cfg)
        t = time.perf_counter() - start
        model.load_state_dict(state)
        res["fine-tuned"] = {"seconds": t, **quality(ft.user_emb, ft.item_emb, remain, request)}
        rt = lightgcn(g.num_nodes, args.dim, 3, seed=1)
        start = time.perf_counter()
        retrain_without(
            rt, g.train, request, nu, ni, epochs=args.epochs, batch_size=2048, lr=args.lr
        )
        t = time.perf_counter() - start
        with torch.no_grad():
            e = rt(g.edge_index(remain))
        res["retrain"] = {"seconds": t, **quality(e[:nu], e[nu:], remain, request)}
        print(f"\nrequest of {size} edges (leaves {iso_u} users, {iso_i} items isolated)")
        print("| method | wall (s) | retrain / method | Recall@20 | vs retrain | NDCG@20 "
              "| request score |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|")
        gold = res["retrain"]
        for name, r in res.items():
            speed = gold["seconds"] / r["seconds"] if r["seconds"] == r["seconds"] else None
            rel = r["recall"] / gold["recall"] - 1.0
            print(
                f"| {name} | {r['seconds']:.3f} | {'-' if speed is None else f'{speed:.0f}x'} "
                f"| {r['recall']:.4f} | {rel:+.1%} | {r['ndcg']:.4f} | "
                f"{r['request_score']:.3f} |"
            )
            emit({"kind": "request", "size": size, "method": name, "isolated_users": iso_u,
                  "isolated_items": iso_i, **r})  # fmt: skip

    if args.throughput:
        print("\n| backbone | epochs/s (batch 2048) |")
        print("|---|---|")
        for name, bb in (
            ("PyG LightGCN (PyGLightGCNAdapter)", lightgcn(g.num_nodes, args.dim, 3, seed=0)),
            ("dense adjacency (DenseLightGCN)", DenseLightGCN(g.num_nodes, args.dim, 3)),
        ):
            t = median_time(
                lambda bb=bb: train_lightgcn(bb, g.train, nu, ni, epochs=1, batch_size=2048),
                repeats=args.repeats,
                warmup=1,
            ).median
            print(f"| {name} | {1.0 / t:.3f} |")
            emit({"kind": "throughput", "backbone": name, "epochs_per_s": 1.0 / t})


if __name__ == "__main__":
    main()
