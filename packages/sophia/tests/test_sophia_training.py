"""Slow: SophiaG is no worse than AdamW on a toy language model (no speed-up asserted).

Six 150-step trainings per seed (two optimizers, three learning rates). Seed 0 runs in CI;
seed 1 (which also passes) runs with ``TRAINFORGE_SOPHIA_ALL_SEEDS=1``, keeping the
package suite under a minute. A broken update is caught faster by the step-for-step
comparisons with the reference in test_sophia_optimizer.py."""

from __future__ import annotations

import os

import pytest
import torch

from trainforge_core.data import LMData
from trainforge_core.models import tiny_llama
from trainforge_core.train import TrainConfig, train_lm
from trainforge_sophia import SophiaG, decay_groups, maybe_update_hessian

VOCAB = 32


def _markov_data(seed: int) -> LMData:
    """Text from a sparse random Markov chain: each token has 3 likely successors."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.full((VOCAB, VOCAB), -4.0)
    for t in range(VOCAB):
        logits[t, torch.randperm(VOCAB, generator=gen)[:3]] = 2.0
    probs = torch.softmax(logits, -1)
    n = 30_000
    tokens = torch.empty(n, dtype=torch.long)
    tokens[0] = 0
    draws = torch.rand(n, generator=gen)
    cdf = probs.cumsum(-1)
    for i in range(1, n):
        tokens[i] = min(int(torch.searchsorted(cdf[tokens[i - 1]], draws[i])), VOCAB - 1)
    return LMData(train=tokens[:27_000], eval=tokens[27_000:], vocab_size=VOCAB)


def _final_loss(name: str, lr: float, data: LMData, seed: int) -> float:
    model = tiny_llama(seed=seed, vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4,
                       max_position_embeddings=32)  # fmt: skip
    config = TrainConfig(steps=150, batch_size=16, seq_len=32, eval_every=150, eval_batches=4,
                         warmup_steps=10, seed=seed, progress=False)  # fmt: skip
    if name == "adamw":
        opt = torch.optim.AdamW(decay_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))
        return train_lm(model, opt, data, config).final_eval_loss
    opt = SophiaG(decay_groups(model, 0.2), lr=lr, rho=0.05)
    gen = torch.Generator().manual_seed(seed + 100)

    def hessian(step, model, optimizer, batch):
        maybe_update_hessian(optimizer, model, data.sample_batch(16, 32, gen), generator=gen)

    return train_lm(model, opt, data, config, after_step=hessian).final_eval_loss


_ALL_SEEDS = os.environ.get("TRAINFORGE_SOPHIA_ALL_SEEDS") == "1"


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed",
    [
        0,
        pytest.param(
            1,
            marks=pytest.mark.skipif(
                not _ALL_SEEDS, reason="TRAINFORGE_SOPHIA_ALL_SEEDS=1 runs it"
            ),
        ),
    ],
)
def test_sophiag_no_worse_than_adamw_on_markov_text(seed):
    data = _markov_data(seed)
    grid = (1e-3, 3e-3, 1e-2)
    best = {}
    for name in ("adamw", "sophiag"):
        losses = []
        for lr in grid:
            try:
                losses.append(_final_loss(name, lr, data, seed))
            except FloatingPointError:
                losses.append(float("inf"))
        best[name] = min(losses)
    assert best["sophiag"] <= best["adamw"] * 1.05, best
