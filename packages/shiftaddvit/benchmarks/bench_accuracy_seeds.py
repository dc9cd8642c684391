"""Accuracy of a reparameterised ViT after two-stage fine-tuning, over seeds, with the spread.

Recipe (from the repository root; one CPU thread; about 20-30 s of compute per seed idle):

    OMP_NUM_THREADS=1 uv run python packages/shiftaddvit/benchmarks/bench_accuracy_seeds.py

For each seed it runs the setting of tests/test_accuracy_slow.py (the demo's toy: timm ViT,
sklearn digits, 300 pre-training steps, then 60 + 60 fine-tuning steps for both arms, KSH with
5 SGD steps per bit): the baseline keeps training the ViT on the same batches, ShiftAddViT
runs stage 1 (binary attention) and stage 2 (Mult./Shift MoE). Printed: held-out accuracy of
both arms, the gap, and the mean, standard deviation and worst gap over the seeds, which is
the statement the slow test's margin is checked against. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> None:
    from trainforge_shiftaddvit import demo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setup = demo._Setup(
        pretrain_steps=300, stage1_steps=60, stage2_steps=60, batch=64, ksh_iters=5,
        speed_repeats=1,
    )  # fmt: skip
    print(f"{time.strftime('%Y-%m-%d')} · torch {torch.__version__} · {args.threads} thread(s)\n")
    print("| seed | ViT (same steps) | ShiftAddViT (2-stage) | after stage 1 | gap (points) |")
    print("|---|---|---|---|---|")
    gaps = []
    for seed in args.seeds:
        report = demo._run(setup, quick=True, out_dir=None, seed=seed)
        rows = {r.metric: r for r in report.rows}
        acc = rows["held-out accuracy"]
        st1 = rows["held-out accuracy after stage 1 (binary attention only)"].technique
        gap = acc.baseline - acc.technique
        gaps.append(gap)
        print(
            f"| {seed} | {acc.baseline:.1f}% | {acc.technique:.1f}% | {st1:.1f}% | {gap:.1f} |",
            flush=True,
        )
    spread = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    print(
        f"\ngap over {len(gaps)} seeds: mean {statistics.mean(gaps):.1f} points, "
        f"std {spread:.1f}, worst {max(gaps):.1f}"
    )


if __name__ == "__main__":
    main()
