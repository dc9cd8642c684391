"""Slow: on a tiny Llama, SLTrain beats pure low-rank at a matched parameter budget."""

from __future__ import annotations

import pytest

from trainforge_core.data import kjv_lm_data
from trainforge_sltrain.demo import ToySetup, compare, matched_lowrank_rank

# hidden 64, 2 layers: SLTrain r=4, delta=0.1 against pure low-rank r=8 (closest budget),
# 300 steps of 16 x 32 tokens. The low-rank baseline starts both factors Kaiming-uniform (a
# factorised layer's init); until 2026-12-05 it started B = 0 (the SLTrain reference's init),
# which starts a pure low-rank layer as the zero map. Recalibrated 2026-12-05 (held-out nats,
# low-rank Kaiming B / low-rank B = 0 / SLTrain): seed 0 5.273 / 5.455 / 5.192, seed 1
# 5.439 / 5.465 / 5.071, seed 2 5.517 / 5.468 / 5.590. Against the fair baseline the gap is
# 0.081, 0.368 and -0.073 nats (mean 0.125): SLTrain is ahead on average but not on every
# seed at this size, so the test asserts the mean over three seeds. (With B = 0 the seed-0
# gap was 0.263 and the old 0.1 margin per seed held; with Kaiming B it would fail on
# seeds 0 and 2.) The sparse part pays off once the low-rank bottleneck binds, which these
# tiny runs reach after a few hundred steps.
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
MARGIN = 0.05  # nats, on the mean over SEEDS; measured mean 0.125 (per seed 0.081 .. -0.073)
SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_sltrain_beats_matched_lowrank_on_average():
    assert matched_lowrank_rank(SETUP) == 8
    data = kjv_lm_data(SETUP.vocab)
    gaps = []
    for seed in SEEDS:
        runs = compare(SETUP, seed=seed, data=data, variants=("low-rank", "sltrain"))
        low, sl = runs["low-rank"], runs["sltrain"]
        assert abs(sl.linear_params - low.linear_params) <= 0.05 * low.linear_params
        gaps.append(low.result.final_eval_loss - sl.result.final_eval_loss)
    assert sum(gaps) / len(gaps) > MARGIN, gaps


def test_compare_rejects_unknown_variants():
    with pytest.raises(ValueError, match="unknown variants"):
        compare(SETUP, variants=("dense",))
