"""Augmentation, frequency tokens, windows, baselines."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from trainforge_ttm_timeseries import FREQUENCY_MAPPING, frequency_token
from trainforge_ttm_timeseries.pretraining import (
    ForecastWindows,
    LinearForecaster,
    downsampled_freq,
    freq_minutes,
    resolution_augment,
    seasonal_naive,
    stack_windows,
)


def test_resolution_augment_lengths_values_and_tokens():
    n = 100
    series = np.arange(1, n + 1, dtype=np.float64)
    views = resolution_augment(series, "10min", factors=(1, 3, 6, 7))
    assert [len(v.values) for v in views] == [n // f for f in (1, 3, 6, 7)]
    # mean of consecutive blocks of 1..n, by hand: block k of size f has mean f*k + (f+1)/2.
    for v, f in zip(views, (1, 3, 6, 7), strict=True):
        expected = [f * k + (f + 1) / 2 for k in range(n // f)]
        np.testing.assert_allclose(v.values, expected)
    # 10min -> 10min (4), 30min (6), h (7), 70min (not in the mapping: oov 0)
    assert [v.freq_token for v in views] == [4, 6, 7, 0]


def test_resolution_augment_multichannel_and_other_aggregations():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    (last,) = resolution_augment(x, "h", factors=(2,), agg="last")
    np.testing.assert_array_equal(last.values, x[1::2])
    assert last.freq_token == 0  # "2h" is not in the mapping
    (total,) = resolution_augment(x, "12h", factors=(2,), agg="sum")
    np.testing.assert_array_equal(total.values, x[0::2] + x[1::2])
    assert total.freq_token == FREQUENCY_MAPPING["d"]


def test_resolution_augment_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        resolution_augment(np.zeros((2, 2, 2)), "h")
    with pytest.raises(ValueError, match="agg"):
        resolution_augment(np.zeros(10), "h", agg="median")
    with pytest.raises(ValueError, match="freq"):
        resolution_augment(np.zeros(10), "fortnightly")
    with pytest.raises(ValueError, match="factor"):
        resolution_augment(np.zeros(10), "h", factors=(0,))
    with pytest.raises(ValueError, match="longer than the series"):
        resolution_augment(np.zeros(3), "h", factors=(4,))
    with pytest.raises(TypeError):
        resolution_augment(np.array(["a", "b"]), "h")


def test_frequency_tokens_follow_the_reference_mapping(caplog):
    expected = {
        "oov": 0,
        "min": 1,
        "2min": 2,
        "5min": 3,
        "10min": 4,
        "15min": 5,
        "30min": 6,
        "h": 7,
        "H": 7,
        "d": 8,
        "D": 8,
        "W": 9,
    }
    assert {k: frequency_token(k) for k in expected} == expected
    assert frequency_token("15T") == 5 and frequency_token("1h") == 7
    with caplog.at_level(logging.WARNING):
        assert frequency_token("3h") == 0
    assert "not in the frequency-token mapping" in caplog.text
    with pytest.raises(TypeError):
        frequency_token(7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="oov"):
        frequency_token("h", {"h": 1})


def test_freq_helpers():
    assert freq_minutes("15min") == 15 and freq_minutes("2h") == 120 and freq_minutes("W") == 10080
    assert downsampled_freq("10min", 6) == "h" and downsampled_freq("h", 24) == "d"
    assert downsampled_freq("5min", 3) == "15min"
    with pytest.raises(ValueError):
        freq_minutes("0h")
    with pytest.raises(ValueError):
        downsampled_freq("h", 0)


def test_forecast_windows_content_and_count():
    a = np.arange(40, dtype=np.float32).reshape(20, 2)
    ds = ForecastWindows([a], 8, 4, stride=3, freq_tokens=[7])
    assert len(ds) == len(range(0, 20 - 12 + 1, 3))
    item = ds[1]
    np.testing.assert_array_equal(item["past_values"].numpy(), a[3:11])
    np.testing.assert_array_equal(item["future_values"].numpy(), a[11:15])
    assert int(item["freq_token"]) == 7
    ci = ForecastWindows(a, 8, 4, stride=3, channel_independent=True)
    assert len(ci) == 2 * len(ds) and ci[0]["past_values"].shape == (8, 1)
    past, fut = stack_windows(ds)
    assert past.shape == (len(ds), 8, 2) and fut.shape == (len(ds), 4, 2)


def test_forecast_windows_bad_input():
    with pytest.raises(ValueError, match="long enough"):
        ForecastWindows(np.zeros((10, 1)), 8, 4)
    with pytest.raises(ValueError, match="NaN"):
        ForecastWindows(np.full((20, 1), np.nan), 8, 4)
    with pytest.raises(ValueError, match="context_length"):
        ForecastWindows(np.zeros((20, 1)), 0, 4)
    with pytest.raises(ValueError, match="freq_tokens"):
        ForecastWindows([np.zeros((20, 1))], 8, 4, freq_tokens=[1, 2])
    with pytest.raises(ValueError, match="same number of channels"):
        ForecastWindows([np.zeros((20, 1)), np.zeros((20, 2))], 8, 4)
    with pytest.raises(TypeError):
        stack_windows([1, 2])  # type: ignore[arg-type]


def test_seasonal_naive_repeats_the_last_period():
    x = torch.arange(10.0).reshape(1, 10, 1)
    out = seasonal_naive(x, 7, 3)
    assert out.flatten().tolist() == [7, 8, 9, 7, 8, 9, 7]
    with pytest.raises(ValueError, match="period"):
        seasonal_naive(x, 7, 11)
    with pytest.raises(ValueError, match="prediction_length"):
        seasonal_naive(x, 0, 3)


def test_linear_forecaster_recovers_a_linear_rule():
    torch.manual_seed(0)
    past = torch.randn(400, 16, 2) * 3 + 1
    # future = 2 * last value - mean (affine-equivariant rule, so exactly representable)
    fut = (2 * past[:, -1:] - past.mean(1, keepdim=True)).repeat(1, 4, 1)
    model = LinearForecaster(ridge=1e-6).fit(past, fut)
    torch.testing.assert_close(model.predict(past), fut, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="before fit"):
        LinearForecaster().predict(past)
    with pytest.raises(ValueError, match="disagree"):
        LinearForecaster().fit(past, fut[:10])
    with pytest.raises(ValueError, match="ridge"):
        LinearForecaster(ridge=-1)
    with pytest.raises(ValueError):
        model.predict(torch.randn(3, 15, 2))
