"""Learned (TinyFusion) against importance pruning on the demo task, over seeds.

Recipe (from the repository root; about 25 min for 4 seeds on a loaded 2-core machine):

    OMP_NUM_THREADS=1 uv run python packages/tinyfusion/benchmarks/compare_pruning.py \
        --seeds 0,1,2,3

Per seed: a TinyDiT (sklearn digits, depth 8, hidden 32) is pre-trained, then pruned to depth 4
by learned 1:2 (LoRA, the reference defaults), learned 2:4, learned 1:2 with frozen weights
(no Delta W), loss importance (drop the 4 layers whose single removal raises the calibration
loss least) and the BK-SDM oracle pattern. Each choice gets the same recovery batches (AdamW 1e-3)
and the held-out epsilon-MSE is printed at 0, 10, 25, 50, 100 and 200 recovery steps, with the
kept layers of every method. One JSON line per seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from trainforge_tinyfusion import (
    GaussianDiffusion,
    TinyDiT,
    TinyFusionConfig,
    bksdm_indices,
    importance_pruning,
    learn_depth_pruning,
    prune_layers,
)
from trainforge_tinyfusion.demo import _batches, _digits, _eval_loss, _train

CHECKPOINTS = (10, 25, 50, 100, 200)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--pretrain", type=int, default=400)
    p.add_argument("--search", type=int, default=100)
    p.add_argument("--recover", type=int, default=200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seeds", default="0,1,2,3")
    args = p.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = _digits()
    diff = GaussianDiffusion()

    def loss_fn(m, b):
        return diff.loss(m, b[0], b[1])

    def recover(model, batches, seed):
        m = copy.deepcopy(model)
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
        curve = {0: _eval_loss(m, diff, xte, yte, 2)}
        for step, (x, y) in enumerate(batches, 1):
            m.train()
            loss = diff.loss(m, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            if step in CHECKPOINTS:
                curve[step] = _eval_loss(m, diff, xte, yte, 2)
        return curve

    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        orig = TinyDiT(8, 2, 1, args.hidden, args.depth, 4)
        _train(orig, diff, _batches(xtr, ytr, args.pretrain, args.batch, seed), 1e-3, seed)
        search = _batches(xtr, ytr, args.search, args.batch, seed + 1)
        frozen = TinyFusionConfig(delta_w="frozen")
        imp = importance_pruning(
            orig, _batches(xtr, ytr, 8, args.batch, seed + 2), loss_fn, args.depth // 2, seed=seed
        )
        kept = {
            "learned 1:2": learn_depth_pruning(orig, search, loss_fn, keep=1, block=2).kept,
            "learned 2:4": learn_depth_pruning(orig, search, loss_fn, keep=2, block=4).kept,
            "learned 1:2 frozen": learn_depth_pruning(
                orig, search, loss_fn, keep=1, block=2, config=frozen
            ).kept,
            "importance": imp.kept,
            "BK-SDM": bksdm_indices(args.depth, args.depth // 2),
        }
        rb = _batches(xtr, ytr, args.recover, args.batch, seed + 3)
        done: dict[tuple[int, ...], dict[int, float]] = {}
        for layers in kept.values():
            if tuple(layers) not in done:
                done[tuple(layers)] = recover(prune_layers(orig, layers), rb, seed + 4)
        row = {
            "seed": seed,
            "original": _eval_loss(orig, diff, xte, yte, 2),
            "kept": kept,
            "importance_scores": [round(s, 4) for s in imp.scores or []],
            "curves": {k: done[tuple(v)] for k, v in kept.items()},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
