"""Toy-training effect: on a trained tiny Llama, 4-bit GPTQ's logits stay closer to the fp32
model than RTN's (KL).

Measured (4-bit per-channel asymmetric, the paper's setting; KL GPTQ / KL RTN): 0.26,
0.26, 0.31 for seeds 0, 1, 2 (g32: 0.28, 0.26, 0.29), against a bound of 0.5; one seed
runs here. A quantizer that zeroed the block weights gives KL 3.9, the bound below is 0.01
of that."""

from __future__ import annotations

import copy

import pytest
import torch

from trainforge_core.data import LMData
from trainforge_core.models import tiny_llama
from trainforge_core.train import TrainConfig, train_lm
from trainforge_gptq import GPTQConfig, quantize_model


def _markov(seed: int, vocab: int = 64, n: int = 60_000) -> LMData:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, vocab, generator=g) * 3
    P = torch.softmax(logits, dim=1)
    ids = torch.empty(n, dtype=torch.long)
    ids[0] = 0
    u = torch.rand(n, generator=g)
    cdf = P.cumsum(1)
    for i in range(1, n):
        ids[i] = min(int(torch.searchsorted(cdf[ids[i - 1]], u[i])), vocab - 1)
    return LMData(train=ids[: n * 9 // 10], eval=ids[n * 9 // 10 :], vocab_size=vocab)


def _kl(ref: torch.Tensor, out: torch.Tensor) -> float:
    p = torch.log_softmax(ref, -1)
    q = torch.log_softmax(out, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_gptq_kl_below_rtn_on_trained_model(seed):
    data = _markov(seed)
    model = tiny_llama(
        seed=seed,
        vocab_size=64,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        max_position_embeddings=128,
    )
    train_lm(
        model,
        torch.optim.AdamW(model.parameters(), lr=3e-3),
        data,
        TrainConfig(
            steps=150, batch_size=16, seq_len=64, eval_every=150, seed=seed, progress=False
        ),
    )
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    calib = data.sample_batch(32, 64, gen)
    held = next(data.eval_batches(16, 64))
    cfg = GPTQConfig.reference(4, checkpoint_format="gptq_v2", true_sequential=True)
    with torch.no_grad():
        ref = model(held).logits
        rtn, _ = quantize_model(copy.deepcopy(model), None, cfg, method="rtn", progress=False)
        gq, _ = quantize_model(copy.deepcopy(model), calib, cfg, progress=False)
        nts, _ = quantize_model(
            copy.deepcopy(model), calib, cfg.replace(true_sequential=False), progress=False
        )
        kl_rtn, kl_gptq = _kl(ref, rtn(held).logits), _kl(ref, gq(held).logits)
        kl_nts = _kl(ref, nts(held).logits)
        zeroed = copy.deepcopy(model)
        for n, p in zeroed.named_parameters():
            if n.startswith("model.layers") and p.dim() == 2:
                p.zero_()
        kl_zero = _kl(ref, zeroed(held).logits)
    assert kl_gptq <= 0.01 * kl_zero, (kl_gptq, kl_zero)
    assert kl_gptq <= 0.5 * kl_rtn, (kl_gptq, kl_rtn)
    assert kl_gptq <= kl_nts * 1.25 + 1e-4, (kl_gptq, kl_nts)
