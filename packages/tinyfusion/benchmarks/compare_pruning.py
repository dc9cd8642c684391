"""Learned (TinyFusion) against importance pruning on the demo task, over seeds.

Per seed: a TinyDiT (sklearn digits, depth 8, hidden 32) is pre-trained for ``--pretrain``
steps (AdamW 1e-3, batch 32; checkpoints and the held-out curve cached under
``$TINYFUSION_CACHE``, default /tmp/tinyfusion-originals, so reruns reuse them), then pruned to
depth 4 by:

* learned 1:2, 2:4 and 4:8 (LoRA, the reference defaults, straight-through gradient) at every
  search length of ``--search`` (n steps x batch 32);
* learned 1:2 and 4:8 with ``estimator="rloo"`` at the same forward/backward work: n steps x
  batch 16 x 2 masks (the first half of the same search batches);
* learned 1:2 with frozen weights (no Delta W, shortest length only; ``--no-frozen`` skips it);
* loss importance (drop the 4 layers whose single removal raises the calibration loss least:
  any 4 of 8, the freedom of 4:8) and the BK-SDM oracle pattern.

Each choice gets the same recovery batches (AdamW 1e-3) and the held-out epsilon-MSE is printed
at 0, 10, 25, 50, 100 and 200 recovery steps, with the kept layers of every method.
``--recover-repeats R`` recovers every choice R times (other batches and seeds) to give the
spread of the final loss; ``--only`` restricts the arms. One JSON line per seed.

Well-trained originals (the README table; about 45 min for 4 seeds on a loaded 2-core machine,
30 of them the 8000-step pre-training, which the cache then saves):

    OMP_NUM_THREADS=1 uv run python packages/tinyfusion/benchmarks/compare_pruning.py \
        --seeds 0,1,2,3 --pretrain 8000 --curve-every 500 --search 1000 --no-frozen \
        --recover-repeats 2 --only "learned 1:2,learned 1:2 rloo,importance,BK-SDM"

The 4:8 arms (the same cached originals and recovery batches; about 15 min):

    OMP_NUM_THREADS=1 uv run python packages/tinyfusion/benchmarks/compare_pruning.py \
        --seeds 0,1,2,3 --pretrain 8000 --search 1000 --no-frozen --recover-repeats 2 \
        --only "learned 4:8,learned 4:8 rloo"

Where the choices rank among all 16 1:2 keep-patterns (``--enumerate``, about 4 min per seed):

    OMP_NUM_THREADS=1 uv run python packages/tinyfusion/benchmarks/compare_pruning.py \
        --seeds 0,1,2,3 --pretrain 8000 --search 1000 --recover-repeats 1 --only none --enumerate

The earlier 400-step runs: ``--pretrain 400 --search 100,1000`` (and ``--recover-repeats 3
--only "learned 1:2,importance"`` for the spread check).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import time
from pathlib import Path

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
from trainforge_tinyfusion.demo import _batches, _digits, _eval_loss

CHECKPOINTS = (10, 25, 50, 100, 200)  # the final step is always evaluated too
CACHE = Path(os.environ.get("TINYFUSION_CACHE", "/tmp/tinyfusion-originals"))


def pretrained(seed, depth, hidden, steps, batch, every, xtr, ytr, xte, yte, diff):
    """The seed's original DiT after ``steps`` pre-training steps (AdamW 1e-3, clip 1.0, as
    ``demo._train``), with its held-out curve every ``every`` steps.

    Checkpoints (model, optimiser and RNG state at every ``every`` steps) are cached under
    ``$TINYFUSION_CACHE`` (default /tmp/tinyfusion-originals), so a longer run resumes from the
    longest cached prefix and reruns reuse them. The batches of a shorter run are a prefix of a
    longer one's, so the model after k steps does not depend on the target length.
    """
    tag = f"s{seed}_d{depth}_h{hidden}_b{batch}"
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = TinyDiT(8, 2, 1, hidden, depth, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    curve: dict[int, float] = {}
    start = 0
    cached = sorted(int(f.stem.rsplit("_", 1)[1]) for f in CACHE.glob(f"orig_{tag}_*.pt"))
    usable = [k for k in cached if k <= steps]
    torch.manual_seed(seed)  # as demo._train
    if usable:
        start = usable[-1]
        state = torch.load(CACHE / f"orig_{tag}_{start}.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        curve = {int(k): v for k, v in state["curve"].items()}
    batches = _batches(xtr, ytr, steps, batch, seed)
    if start == 0:
        curve[0] = _eval_loss(model, diff, xte, yte, 2)
    for step in range(start, steps):
        x, y = batches[step]
        model.train()
        loss = diff.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            curve[step + 1] = _eval_loss(model, diff, xte, yte, 2)
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "rng": torch.get_rng_state(),
                "curve": curve,
            }
            torch.save(state, CACHE / f"orig_{tag}_{step + 1}.pt")
            print(
                f"# seed {seed} pre-train step {step + 1}: held-out {curve[step + 1]:.4f}",
                flush=True,
            )
    model.eval()
    return model, {k: round(v, 4) for k, v in sorted(curve.items()) if k <= steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--pretrain", type=int, default=400)
    p.add_argument(
        "--search",
        default="100",
        help="comma-separated search lengths in steps; learned 1:2 and 2:4 run at each",
    )
    p.add_argument("--no-frozen", action="store_true", help="skip the frozen 1:2 arm (no Delta W)")
    p.add_argument("--recover", type=int, default=200)
    p.add_argument(
        "--recover-repeats",
        type=int,
        default=1,
        help="recover every choice this many times (other batches and seeds) for the spread",
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated arm names to run (e.g. 'learned 1:2,importance'); default all",
    )
    p.add_argument(
        "--enumerate",
        action="store_true",
        help="also recover every 1:2 keep-pattern (2^(depth/2) arms 'all 1:2 [...]'): where the "
        "learned 1:2 choices rank among all 1:2 choices",
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument(
        "--curve-every", type=int, default=250, help="held-out eval / checkpoint interval"
    )
    p.add_argument(
        "--pretrain-only", action="store_true", help="pre-train (and cache) the originals only"
    )
    p.add_argument("--seeds", default="0,1,2,3")
    args = p.parse_args()
    torch.set_num_threads(1)
    xtr, ytr, xte, yte = _digits()
    diff = GaussianDiffusion()

    def loss_fn(m, b):
        return diff.loss(m, b[0], b[1])

    def per_sample_loss(m, b):
        return diff.loss(m, b[0], b[1], per_sample=True)

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
            if step in CHECKPOINTS or step == len(batches):
                curve[step] = _eval_loss(m, diff, xte, yte, 2)
        return curve

    for seed in (int(s) for s in args.seeds.split(",")):
        t0 = time.perf_counter()
        orig, pre_curve = pretrained(
            seed,
            args.depth,
            args.hidden,
            args.pretrain,
            args.batch,
            args.curve_every,
            xtr,
            ytr,
            xte,
            yte,
            diff,
        )
        pretrain_s = time.perf_counter() - t0
        if args.pretrain_only:
            print(json.dumps({"seed": seed, "pretrain_curve": pre_curve}), flush=True)
            continue
        imp = importance_pruning(
            orig, _batches(xtr, ytr, 8, args.batch, seed + 2), loss_fn, args.depth // 2, seed=seed
        )
        kept: dict[str, list[int]] = {}
        gates_ema: dict[str, list[float]] = {}
        search_s: dict[str, float] = {}
        lengths = [int(n) for n in args.search.split(",")]
        only = {a.strip() for a in args.only.split(",") if a.strip()}
        for n in lengths:
            # the same search batches (and their prefix for a shorter search) for every arm
            search = _batches(xtr, ytr, n, args.batch, seed + 1)
            # rloo runs every sample under two masks: at half the batch it does the same
            # forward/backward work per step (n steps x 16 samples x 2 masks = n x 32)
            half = [(x[: args.batch // 2], y[: args.batch // 2]) for x, y in search]
            rloo = TinyFusionConfig(estimator="rloo")
            arms = [
                ("learned 1:2", 1, 2, None, search, loss_fn),
                ("learned 1:2 rloo", 1, 2, rloo, half, per_sample_loss),
                ("learned 2:4", 2, 4, None, search, loss_fn),
            ]
            if args.depth == 8:  # one group of 8: the same freedom as importance (any 4 of 8)
                arms += [
                    ("learned 4:8", 4, 8, None, search, loss_fn),
                    ("learned 4:8 rloo", 4, 8, rloo, half, per_sample_loss),
                ]
            if n == lengths[0] and not args.no_frozen:
                frozen = TinyFusionConfig(delta_w="frozen")
                arms.append(("learned 1:2 frozen", 1, 2, frozen, search, loss_fn))
            for name, k, b, cfg, data, fn in arms:
                if only and name not in only:
                    continue
                label = name if len(lengths) == 1 else f"{name} @{n}"
                torch.manual_seed(seed + 5)
                t1 = time.perf_counter()
                res = learn_depth_pruning(orig, data, fn, keep=k, block=b, config=cfg)
                kept[label] = res.kept
                gates_ema[label] = [round(v, 4) for v in res.history["gates_ema"]]
                search_s[label] = round(time.perf_counter() - t1, 1)
        if not only or "importance" in only:
            kept["importance"] = imp.kept
        if not only or "BK-SDM" in only:
            kept["BK-SDM"] = bksdm_indices(args.depth, args.depth // 2)
        if args.enumerate:
            for pick in itertools.product((0, 1), repeat=args.depth // 2):
                layers = [2 * g + k for g, k in enumerate(pick)]
                kept[f"all 1:2 {layers}"] = layers
        done: dict[tuple[int, ...], dict[int, float]] = {}
        finals: dict[tuple[int, ...], list[float]] = {}
        for r in range(args.recover_repeats):
            # repeat 0 is the single run's recovery; the others draw other batches and seeds
            rb = _batches(xtr, ytr, args.recover, args.batch, seed + 3 + 100 * r)
            for layers in kept.values():
                key = tuple(layers)
                if len(finals.get(key, [])) > r:
                    continue
                curve = recover(prune_layers(orig, layers), rb, seed + 4 + 100 * r)
                done.setdefault(key, curve)
                finals.setdefault(key, []).append(curve[args.recover])
        row = {
            "seed": seed,
            "original": _eval_loss(orig, diff, xte, yte, 2),
            "kept": kept,
            "importance_scores": [round(s, 4) for s in imp.scores or []],
            "curves": {k: done[tuple(v)] for k, v in kept.items()},
            "final_by_repeat": {k: finals[tuple(v)] for k, v in kept.items()},
            "pretrain_steps": args.pretrain,
            "pretrain_curve": pre_curve,
            "pretrain_seconds": round(pretrain_s, 1),
            "search_seconds": search_s,
            "gates_ema": gates_ema,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
