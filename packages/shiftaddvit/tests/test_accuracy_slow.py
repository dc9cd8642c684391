"""A reparameterised ViT keeps its accuracy within a stated margin after fine-tuning (slow)."""

from __future__ import annotations

import pytest

from trainforge_shiftaddvit import demo

# Margin, from benchmarks/bench_accuracy_seeds.py (this setting, seeds 0, 1, 2, 2026-12-05):
# the converted model lost 14.8, 19.5 and 26.6 points of held-out accuracy against the same
# ViT trained for the same extra steps (mean 20.3, std 5.9; the full demo, with 3x the
# fine-tuning, loses 5.0). The stated margin is 30 points, above the worst seed, and the
# model must stay far above chance (10%). One seed here (about 15 s of compute); the spread
# is the benchmark's.
MARGIN = 30.0


@pytest.mark.slow
def test_shiftaddvit_keeps_accuracy_within_margin_on_digits():
    setup = demo._Setup(
        pretrain_steps=300, stage1_steps=60, stage2_steps=60, batch=64, ksh_iters=5,
        speed_repeats=1,
    )  # fmt: skip
    report = demo._run(setup, quick=True, out_dir=None, seed=0)
    rows = {r.metric: r for r in report.rows}
    acc = rows["held-out accuracy"]
    assert acc.technique >= acc.baseline - MARGIN
    assert acc.technique > 50.0
    mults = rows["multiplications per image"]
    assert mults.technique < 0.7 * mults.baseline
