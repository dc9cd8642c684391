"""Slow: on a tiny Llama, SLTrain beats pure low-rank at a matched parameter budget."""

from __future__ import annotations

import statistics

import pytest

from trainforge_core.data import kjv_lm_data
from trainforge_sltrain.demo import ToySetup, compare, matched_lowrank_rank

# hidden 128, 2 layers: SLTrain r=8, delta=0.1 against pure low-rank r=16 (closest budget).
# Measured 2026-11-28 (OMP_NUM_THREADS=1, seeds 0-2, held-out nats): full-rank 5.29/5.34/5.14,
# low-rank r=16 5.59/5.61/5.60, SLTrain 5.81/5.47/5.68 -> mean SLTrain 5.65 > low-rank 5.60:
# the paper's direction does NOT hold at 100 steps here (it did in the 40-step demo draft,
# seed 0 only). Kept as a strict xfail so that a recalibration (longer runs, other r/delta)
# that makes it pass is noticed.
SETUP = ToySetup(
    hidden=128,
    layers=2,
    heads=4,
    rank=8,
    sparsity=0.1,
    steps=100,
    batch_size=16,
    seq_len=64,
    eval_batches=4,
    evals=1,
)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: SLTrain 5.65 vs low-rank 5.60 nats (3 seeds)")
def test_sltrain_beats_matched_lowrank_over_seeds():
    assert matched_lowrank_rank(SETUP) == 16
    data = kjv_lm_data(SETUP.vocab)
    losses: dict[str, list[float]] = {"full-rank": [], "low-rank": [], "sltrain": []}
    for seed in range(3):
        runs = compare(SETUP, seed=seed, data=data)
        for name, run in runs.items():
            losses[name].append(run.result.final_eval_loss)
        low, sl = runs["low-rank"], runs["sltrain"]
        assert abs(sl.linear_params - low.linear_params) <= 0.05 * low.linear_params
    full, low, sl = (statistics.mean(losses[k]) for k in ("full-rank", "low-rank", "sltrain"))
    # direction, with a tolerance: SLTrain's held-out loss is lower than low-rank's ...
    assert sl < low - TOLERANCE, losses
    # ... so its gap to full-rank training is the smaller one
    assert abs(sl - full) < abs(low - full), losses


TOLERANCE = 0.0
