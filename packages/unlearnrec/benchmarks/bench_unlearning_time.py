"""Unlearning wall time on MovieLens-100K, and LightGCN training throughput.

Recipe (needs recbole for the data: `pip install --no-deps recbole`):

    uv run python packages/unlearnrec/benchmarks/bench_unlearning_time.py \
        --dim 64 --retrain-epochs 60 --repeats 3

1. Requests of 1, 100 and 1,000 random training edges of ML-100K (943 users, 80/20 split).
   For each: edge removal (one propagation over the remaining graph), the Influence Encoder
   zero-shot (`zero_shot`: build the request, one encoder + propagation pass), the encoder
   fine-tuned (`unlearn`, 1 epoch x 10 steps), and full retraining. Retraining is timed for
   2 epochs and scaled to `--retrain-epochs` (the demo's full schedule: 60 epochs of batch
   2048); its time hardly depends on the request size.
2. LightGCN training throughput (epochs/s, batch 2048, BPR) of the PyG backbone against the
   independent dense-adjacency `DenseLightGCN`, in the same process.

Times are medians of `--repeats` runs (`trainforge_core.bench.median_time`). The encoder
is untrained here: its cost does not depend on its weights.
"""

from __future__ import annotations

import argparse

import torch

from trainforge_core.bench import median_time
from trainforge_unlearnrec import (
    DenseLightGCN,
    FinetuneConfig,
    InfluenceEncoder,
    UnlearnRecModel,
    lightgcn,
    load_movielens_100k,
    split_request,
    train_lightgcn,
    unlearn,
    zero_shot,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--retrain-epochs", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = load_movielens_100k(seed=0)
    nu, ni = g.num_users, g.num_items
    base = lightgcn(g.num_nodes, args.dim, 3, seed=0)
    model = UnlearnRecModel(base, InfluenceEncoder(g.num_nodes, args.dim), nu, ni, g.edge_index())
    gen = torch.Generator().manual_seed(0)
    print(f"ML-100K: {nu} users, {ni} items, {g.train.size(1)} train edges, dim {args.dim}")
    print(
        "| request edges | edge removal (s) | encoder zero-shot (s) | encoder fine-tuned (s) "
        "| retrain (s, scaled) | retrain / zero-shot | retrain / fine-tuned |"
    )
    print("|---|---|---|---|---|---|---|")
    for size in (1, 100, 1000):
        request = g.train[:, torch.randperm(g.train.size(1), generator=gen)[:size]]
        remain, _ = split_request(g.train, request, nu, ni)

        def removal(remain=remain):
            with torch.no_grad():
                base.propagate(base.init_embeddings(), g.edge_index(remain))

        t_rm = median_time(removal, repeats=args.repeats, warmup=1).median
        t_zs = median_time(
            lambda r=request: zero_shot(model, g.train, r), repeats=args.repeats, warmup=1
        ).median
        ft_cfg = FinetuneConfig(epochs=1, steps_per_epoch=10, batch_size=1024, num_negatives=512)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        t_ft = median_time(
            lambda r=request, c=ft_cfg: unlearn(model, g.train, r, c), repeats=1, warmup=0
        ).median
        model.load_state_dict(state)

        def retrain2(remain=remain):
            bb = lightgcn(g.num_nodes, args.dim, 3, seed=1)
            train_lightgcn(bb, remain, nu, ni, epochs=2, batch_size=2048, lr=5e-3)

        t_rt = median_time(retrain2, repeats=1, warmup=0).median * args.retrain_epochs / 2
        print(
            f"| {size} | {t_rm:.3f} | {t_zs:.3f} | {t_ft:.2f} | {t_rt:.1f} | "
            f"{t_rt / t_zs:.0f}x | {t_rt / t_ft:.1f}x |"
        )

    print()
    print("| backbone | epochs/s (batch 2048) |")
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


if __name__ == "__main__":
    main()
