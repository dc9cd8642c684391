"""Slow: on a tiny Llama, SLTrain beats pure low-rank at a matched parameter budget."""

from __future__ import annotations

import pytest

from trainforge_core.data import kjv_lm_data
from trainforge_sltrain.demo import ToySetup, compare, matched_lowrank_rank

# hidden 64, 2 layers: SLTrain r=4, delta=0.1 against pure low-rank r=8 (closest budget),
# 300 steps of 16 x 32 tokens. Calibrated 2026-11-28 (held-out nats, low-rank / SLTrain):
# seed 0 5.455 / 5.188, seed 1 5.465 / 5.106; at 600 steps 5.315 / 4.788 and 5.286 / 4.672
# (full-rank 4.38 / 4.33). At 100 steps of the hidden-128 model the order was the other way
# (low-rank 5.60, SLTrain 5.65, 3 seeds): the sparse part pays off once the low-rank
# bottleneck binds, which these tiny runs reach after a few hundred steps.
SETUP = ToySetup(
    hidden=64,
    layers=2,
    heads=4,
    rank=4,
    sparsity=0.1,
    steps=300,
    batch_size=16,
    seq_len=32,
    eval_batches=4,
    evals=1,
)
MARGIN = 0.1  # nats; the measured gaps are 0.27 and 0.36


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sltrain_beats_matched_lowrank(seed):
    assert matched_lowrank_rank(SETUP) == 8
    runs = compare(
        SETUP, seed=seed, data=kjv_lm_data(SETUP.vocab), variants=("low-rank", "sltrain")
    )
    low, sl = runs["low-rank"], runs["sltrain"]
    assert abs(sl.linear_params - low.linear_params) <= 0.05 * low.linear_params
    low_loss, sl_loss = low.result.final_eval_loss, sl.result.final_eval_loss
    assert sl_loss < low_loss - MARGIN, (low_loss, sl_loss)


def test_compare_rejects_unknown_variants():
    with pytest.raises(ValueError, match="unknown variants"):
        compare(SETUP, variants=("dense",))
