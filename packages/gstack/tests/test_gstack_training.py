"""Toy-training effects of G_stack on the KJV corpus (slow).

- At equal compute by the paper's accounting (C = 6 N D, the small model's training
  included), over 3 seeds: the FLOPs match and the stacked model keeps most of what the small
  one learned. Whether it then beats scratch is *reported* (printed), not asserted: at this
  size it does not (gaps +0.04, -0.03, -0.01 nats on seeds 0-2; -0.08, -0.15, -0.23 at a
  200-step budget; see the README).
- The head start (not a compute claim): after the same number of deep-model steps, the
  stacked model is ahead of a scratch one. (This used to be presented as the evidence; it
  ignores the small model's compute.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainforge_core.data import kjv_lm_data
from trainforge_core.models import tiny_llama
from trainforge_core.train import TrainConfig, evaluate_lm, train_lm
from trainforge_gstack import grow_depth
from trainforge_gstack.demo import _QUICK, compare

SEQ, BATCH, EVAL_BATCHES = 32, 8, 4


def _model(layers: int, seed: int, vocab: int) -> torch.nn.Module:
    return tiny_llama(
        seed=seed,
        num_layers=layers,
        hidden_size=32,
        num_heads=4,
        vocab_size=vocab,
        max_position_embeddings=64,
    )


def _train(model: torch.nn.Module, data, steps: int, seed: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    cfg = TrainConfig(
        steps=steps,
        batch_size=BATCH,
        seq_len=SEQ,
        eval_every=steps,
        eval_batches=EVAL_BATCHES,
        warmup_steps=steps // 10,
        seed=seed,
        progress=False,
    )
    return train_lm(model, opt, data, cfg).final_eval_loss


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stacked_model_has_a_head_start_over_the_same_deep_steps(seed):
    data = kjv_lm_data(2048)
    small = _model(1, seed, data.vocab_size)
    small_loss = _train(small, data, 80, seed)
    fresh = _model(4, seed + 100, data.vocab_size)
    fresh_loss = evaluate_lm(fresh, data, SEQ, BATCH, EVAL_BATCHES)
    grown = grow_depth(small, 4, "stack")
    grown_loss = evaluate_lm(grown, data, SEQ, BATCH, EVAL_BATCHES)
    # Right after growth the stacked model keeps most of what the small one learned
    # (not function-preserving, so it loses some of it).
    assert fresh_loss - grown_loss > 0.5 * (fresh_loss - small_loss), (
        fresh_loss,
        grown_loss,
        small_loss,
    )
    # After the same number of steps of the deep model, stacked < scratch.
    stacked_after = _train(grown, data, 40, seed + 1)
    scratch_after = _train(fresh, data, 40, seed + 1)
    assert stacked_after < scratch_after - 0.05, (stacked_after, scratch_after)


# The quick demo's setting (1L -> 4L, hidden 32, an 80-step budget of 256 tokens), kept
# small so the suite stays cheap; the gaps at a 200-step budget are in the README.
SETUP = dataclasses.replace(_QUICK, eval_every=40)


@pytest.mark.slow
def test_equal_compute_over_seeds():
    data = kjv_lm_data(2048)
    gaps = []
    for seed in (0, 1, 2):
        r = compare(SETUP, seed, data)
        assert r["flops_gstack"] == pytest.approx(r["flops_scratch"], rel=0.02)
        fresh, small = r["scratch_init"], r["small_loss"]
        assert fresh - r["at_growth"] > 0.5 * (fresh - small), r
        gaps.append(r["scratch_loss"] - r["gstack_loss"])
    print(f"equal-compute loss gaps scratch - G_stack: {gaps}")  # reported, not asserted
