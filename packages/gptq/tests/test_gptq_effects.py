"""Measured direction: error compensation beats RTN where inputs are correlated, and only
there; it raises the weight error while lowering the output error."""

from __future__ import annotations

import pytest
import torch

from trainforge_gptq import GPTQConfig, gptq_quantize, rtn_quantize


def _data(correlated: bool, seed: int, d_in=512, d_out=256, n=4096):
    g = torch.Generator().manual_seed(seed)
    if correlated:  # low-rank(64) + 0.1 noise
        X = torch.randn(2 * n, 64, generator=g) @ torch.randn(64, d_in, generator=g) / 8
        X = X + 0.1 * torch.randn(2 * n, d_in, generator=g)
    else:
        X = torch.randn(2 * n, d_in, generator=g)
    W = torch.randn(d_out, d_in, generator=g) / d_in**0.5
    calib, held = X[:n], X[n:]
    return W, 2 / n * calib.t() @ calib, held


def _out_err(W, Q, X):
    return ((X @ (W - Q).t()) ** 2).sum().item()


@pytest.mark.parametrize("seed", [0, 1])
def test_gptq_beats_rtn_on_correlated_inputs(seed):
    W, H, held = _data(True, seed)
    cfg = GPTQConfig(bits=4, group_size=-1, sym=False)
    gq, rtn = gptq_quantize(W, H, cfg), rtn_quantize(W, cfg)
    ratio = _out_err(W, rtn.Q, held) / _out_err(W, gq.Q, held)
    assert ratio >= 3.0, ratio
    # compensation, not better rounding: the weights move further from W
    mse = lambda Q: (W - Q).square().mean().item()  # noqa: E731
    assert mse(gq.Q) > mse(rtn.Q)
    act = gptq_quantize(W, H, cfg.replace(desc_act=True))
    assert _out_err(W, act.Q, held) < _out_err(W, gq.Q, held)


def test_no_gain_on_isotropic_inputs():
    W, H, held = _data(False, 0)
    cfg = GPTQConfig(bits=4, group_size=-1, sym=False)
    ratio = _out_err(W, rtn_quantize(W, cfg).Q, held) / _out_err(
        W, gptq_quantize(W, H, cfg).Q, held
    )
    assert 0.8 <= ratio <= 1.2, ratio
