"""Speed-up law and the WSD schedule."""

from __future__ import annotations

import math

import pytest
import torch

from trainforge_optim_bench import (
    DataLaw,
    ScalingLawHparams,
    WarmupStableDecay,
    effective_data,
    fit_data_law,
    speedup,
    wsd_factor,
)


def test_speedup_is_two_when_loss_equals_law_at_twice_the_data():
    law = DataLaw(alpha=1.2, B=0.4, beta=2.5)
    for d in (1.0, 2.0, 4.0):
        assert speedup(law, d, law(2 * d)) == pytest.approx(2.0, rel=1e-12)
    assert effective_data(law, law(3.0)) == pytest.approx(3.0)
    assert speedup(law, 1.0, 2.4) == math.inf  # below the asymptote


def test_fit_recovers_law_from_exact_points():
    true = DataLaw(alpha=0.8, B=0.35, beta=3.1)
    d = [1, 2, 4, 8, 16]
    law = fit_data_law(d, [true(x) for x in d])
    assert (law.alpha, law.B, law.beta) == pytest.approx((0.8, 0.35, 3.1), rel=1e-5)
    # three points (the demo's 1x, 2x, 4x) determine the law exactly
    law3 = fit_data_law([1, 2, 4], [true(1), true(2), true(4)])
    assert law3(8) == pytest.approx(true(8), rel=1e-5)


def test_paper_numbers_give_paper_scale_speedups():
    # 130M AdamW (Phase I tables, 1x/2x/4x/8x) and Muon at 1x: the paper reports <= ~1.4x
    law = fit_data_law([1, 2, 4, 8], [3.529, 3.409, 3.322, 3.262])
    s = speedup(law, 1.0, 3.464)
    assert 1.2 < s < 1.6


def test_hparam_law_recovers_exponents():
    n = [1e8, 3e8, 5e8, 1e8, 3e8, 1.2e9]
    d = [1, 1, 1, 4, 8, 2]
    law = ScalingLawHparams.fit(n, d, [0.02 * x**-0.3 * y**-0.1 for x, y in zip(n, d, strict=True)])
    assert (law.a, law.b, law.c) == pytest.approx((0.02, -0.3, -0.1), rel=1e-8)
    assert law(1e8, 1) == pytest.approx(0.02 * 1e8**-0.3)


def test_wsd_shape():
    f = [wsd_factor(s, 100, warmup=10, decay=0.4, min_lr_ratio=0.1) for s in range(101)]
    assert f[0] == 0.0 and f[5] == pytest.approx(0.5) and f[10] == 1.0
    assert f[59] == 1.0 and f[60] == 1.0 and f[80] == pytest.approx(0.55)
    assert f[100] == pytest.approx(0.1)
    cos = [wsd_factor(s, 100, warmup=0, decay=None, shape="cosine") for s in range(101)]
    assert cos[0] == 1.0 and cos[50] == pytest.approx(0.5) and cos[100] == pytest.approx(0.0)


def test_wsd_scheduler_matches_factor_and_round_trips():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = WarmupStableDecay(opt, total_steps=20, warmup=4, decay=0.5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5 * wsd_factor(s, 20, 4, 0.5) for s in range(20)])
    state = sched.state_dict()
    opt2 = torch.optim.SGD([p], lr=0.5)
    sched2 = WarmupStableDecay(opt2, total_steps=20, warmup=4, decay=0.5)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch
