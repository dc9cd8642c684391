"""Slow: a short pretraining run learns periodic structure that generalises to unseen series."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction
from trainforge_ttm_timeseries.pretraining import (
    ForecastWindows,
    predict,
    resolution_augment,
    seasonal_naive,
    stack_windows,
    train_forecaster,
)

PERIODS = (12, 24)


def _series(rng: np.random.Generator, n: int, period: int) -> np.ndarray:
    t = np.arange(n)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    amp = rng.uniform(0.5, 2.0, size=3)
    x = (
        amp[0] * np.sin(2 * np.pi * t / period + phase[0])
        + amp[1] * np.sin(4 * np.pi * t / period + phase[1])
        + amp[2] * np.sin(2 * np.pi * t / (4 * period) + phase[2])
    )
    return (x + 0.5 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_short_pretraining_beats_seasonal_naive_on_held_out_series(seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    # A reduced TTM (the 512-96 preset's structure: 8 patches, D = 3 pl, 3 levels) keeps CI fast.
    cfg = TTMConfig.r1_512_96(
        context_length=96,
        patch_length=12,
        patch_stride=12,
        d_model=36,
        decoder_d_model=24,
        prediction_length=24,
        dropout=0.1,
        head_dropout=0.1,
    )
    train = [_series(rng, 1200, p) for p in PERIODS for _ in range(4)]
    # Mixed resolutions: each training series also at half resolution.
    views = [v.values for s in train for v in resolution_augment(s, "min", factors=(1, 2))]
    ds = ForecastWindows(views, 96, 24, stride=4)
    model = TTMForPrediction(cfg)
    train_forecaster(model, ds, steps=100, batch_size=32, lr=2e-3, seed=seed)
    held = [_series(rng, 400, p)[:, None] for p in PERIODS for _ in range(2)]
    mse_model, mse_naive = [], []
    for s, p in zip(held, [p for p in PERIODS for _ in range(2)], strict=True):
        x, y = stack_windows(ForecastWindows(s, 96, 24, stride=16))
        mse_model.append(((predict(model, x) - y) ** 2).mean())
        mse_naive.append(((seasonal_naive(x, 24, p) - y) ** 2).mean())
    ratio = float(torch.stack(mse_model).mean() / torch.stack(mse_naive).mean())
    print(f"seed {seed}: model/seasonal-naive MSE ratio {ratio:.3f}")
    assert ratio < 0.8, f"model/seasonal-naive MSE ratio {ratio:.3f}"
