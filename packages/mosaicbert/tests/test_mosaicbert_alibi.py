"""ALiBi slopes and bias against the formulas written out independently."""

from __future__ import annotations

import math

import pytest
import torch

from trainforge_mosaicbert import alibi_bias, alibi_slopes


def test_slopes_8_heads_are_powers_of_two():
    assert alibi_slopes(8) == pytest.approx([2.0 ** -(i + 1) for i in range(8)], rel=1e-12)


def test_slopes_12_heads_interleave_the_16_head_slopes():
    # 2^-1 .. 2^-8, then every other slope of 16 heads: 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
    expected = [2.0 ** -(i + 1) for i in range(8)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    assert alibi_slopes(12) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("h", [1, 2, 4, 16, 32])
def test_slopes_power_of_two_formula(h):
    assert alibi_slopes(h) == pytest.approx([2.0 ** (-8 * (i + 1) / h) for i in range(h)])


@pytest.mark.parametrize("h", [3, 5, 6, 12, 20, 24])
def test_slopes_any_count_are_distinct_and_decreasing_within_blocks(h):
    s = alibi_slopes(h)
    assert len(s) == h and len(set(s)) == h
    k = 2 ** math.floor(math.log2(h))
    assert s[:k] == sorted(s[:k], reverse=True)


def test_bias_matches_float64_loop():
    slopes = alibi_slopes(6)
    b = alibi_bias(slopes, 7, dtype=torch.float64)
    ref = torch.tensor(
        [[[-m * abs(i - j) for j in range(7)] for i in range(7)] for m in slopes],
        dtype=torch.float64,
    )
    assert b.shape == (1, 6, 7, 7)
    torch.testing.assert_close(b[0], ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8"])
def test_slopes_bad_input(bad):
    with pytest.raises(ValueError, match="num_heads"):
        alibi_slopes(bad)


def test_bias_bad_input():
    with pytest.raises(ValueError, match="seq_len"):
        alibi_bias([0.5], 0)
    with pytest.raises(ValueError, match="slopes"):
        alibi_bias([], 4)
