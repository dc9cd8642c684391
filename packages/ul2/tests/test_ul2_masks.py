"""T5's span mask, prefix mask and length planner, against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainforge_ul2 import (
    UL2_PAPER_MIXTURE,
    Denoiser,
    prefix_lm_lengths,
    random_prefix_noise_mask,
    random_spans_noise_mask,
    span_corruption_lengths,
)


def runs(mask: np.ndarray) -> list[tuple[bool, int]]:
    out: list[tuple[bool, int]] = []
    for v in mask.tolist():
        if out and out[-1][0] == v:
            out[-1] = (v, out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


@pytest.mark.parametrize(
    "length,r,mu",
    [(568, 0.15, 3.0), (766, 0.5, 3.0), (600, 0.15, 64.0), (10, 0.15, 3.0), (2, 0.5, 8.0)],
)
def test_mask_counts_and_alternation(length, r, mu):
    masks = random_spans_noise_mask(length, r, mu, rng=0, batch_size=50)
    n_noise = min(max(round(length * r), 1), length - 1)
    n_spans = max(round(n_noise / mu), 1)
    for m in masks:
        assert m.sum() == n_noise
        rs = runs(m)
        assert rs[0][0] is False and rs[-1][0] is True  # starts non-noise, ends noise
        assert sum(1 for v, _ in rs if v) == n_spans
        assert len(rs) == 2 * n_spans


def test_mask_seeded_determinism():
    a = random_spans_noise_mask(568, 0.15, 3.0, rng=7, batch_size=4)
    b = random_spans_noise_mask(568, 0.15, 3.0, rng=np.random.default_rng(7), batch_size=4)
    c = random_spans_noise_mask(568, 0.15, 3.0, rng=8, batch_size=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({m.tobytes() for m in a}) == 4  # rows differ


@pytest.mark.parametrize("mu,r", [(3, 0.15), (8, 0.15), (3, 0.5), (8, 0.5), (64, 0.5)])
def test_mean_span_length_within_5_percent(mu, r):
    length = span_corruption_lengths(512, r, mu)[0]
    masks = random_spans_noise_mask(length, r, mu, rng=1, batch_size=1000)
    spans = [n for m in masks for v, n in runs(m) if v]
    assert abs(np.mean(spans) / mu - 1) < 0.05


def test_long_spans_at_low_rate_round_to_one_span():
    # X(64, 0.15) at 512 inputs: 90 noise tokens, round(90 / 64) = 1 span of 90 tokens.
    length = span_corruption_lengths(512, 0.15, 64)[0]
    m = random_spans_noise_mask(length, 0.15, 64, rng=0)
    assert [n for v, n in runs(m) if v] == [90]


def test_segmentation_is_uniform():
    # 12 noise tokens in 4 spans: P(first span = a) = C(12 - a - 1, 2) / C(11, 3).
    n, k, draws = 12, 4, 20000
    masks = random_spans_noise_mask(2 * n, 0.5, n / k, rng=3, batch_size=draws)
    first = np.array([next(c for v, c in runs(m) if v) for m in masks])
    for a in range(1, n - k + 2):
        p = math.comb(n - a - 1, k - 2) / math.comb(n - 1, k - 1)
        freq = np.mean(first == a)
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / draws) + 1e-3


PLANNER_TABLE = [
    ((3, 0.15), (568, 114)),
    ((8, 0.15), (588, 100)),
    ((3, 0.5), (766, 512)),
    ((8, 0.5), (908, 512)),
    ((64, 0.15), (600, 92)),
    ((64, 0.5), (1006, 512)),
]


@pytest.mark.parametrize("params,expected", PLANNER_TABLE)
def test_length_planner_table(params, expected):
    mu, r = params
    assert span_corruption_lengths(512, r, mu) == expected


@pytest.mark.parametrize("params,expected", PLANNER_TABLE)
def test_planned_chunk_fills_inputs_exactly(params, expected):
    mu, r = params
    raw, targets_len = expected
    masks = random_spans_noise_mask(raw, r, mu, rng=0, batch_size=20)
    for m in masks:
        n_spans = sum(1 for v, _ in runs(m) if v)
        assert (~m).sum() + n_spans + 1 == 512  # non-noise + sentinels + EOS
        assert m.sum() + n_spans + 1 == targets_len  # nothing truncated


def test_planner_rejects_too_short_inputs():
    with pytest.raises(ValueError, match="too short"):
        span_corruption_lengths(64, 0.15, 64)


def test_prefix_mask_bounds_and_mean():
    length, r = 511, 0.25
    masks = random_prefix_noise_mask(length, r, rng=0, batch_size=4000)
    prefix = masks.sum(axis=1)
    assert np.all(masks == (np.arange(length)[None] < prefix[:, None]))
    lo = max(1, round((1 - 2 * r) * (length - 1)))
    assert prefix.min() >= lo and prefix.max() <= length - 1
    assert abs(np.mean(length - prefix) / length - r) < 0.01
    raw, max_t = prefix_lm_lengths(512, r)
    assert raw == 511 and max_t == raw - lo + 1


def test_paper_mixture():
    d = UL2_PAPER_MIXTURE.denoisers
    assert [(x.paradigm, x.mean_noise_span_length, x.noise_density) for x in d] == [
        ("R", 3, 0.15),
        ("R", 8, 0.15),
        ("X", 3, 0.5),
        ("X", 8, 0.5),
        ("X", 64, 0.15),
        ("X", 64, 0.5),
        ("S", None, 0.25),
    ]
    assert math.isclose(sum(UL2_PAPER_MIXTURE.rates), 1.0)
    assert Denoiser("S", 0.25).is_prefix_lm and not d[0].is_prefix_lm


def test_mixture_frequencies_within_2_percent():
    idx = UL2_PAPER_MIXTURE.sample(20000, rng=0)
    freq = np.bincount(idx, minlength=7) / 20000
    assert np.all(np.abs(freq - np.array(UL2_PAPER_MIXTURE.rates)) < 0.02)
