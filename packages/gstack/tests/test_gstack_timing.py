"""The growth-timing rule reproduces the reference README's table; the plan mirrors the
reference scripts and warns where the rule does not extrapolate."""

from __future__ import annotations

import math
import warnings

import pytest

from trainforge_gstack import GrowthWarning, GStackPlan, growth_timing_tokens, plan_gstack

# tongxuluo/prts:README.md, "For Llama Families" (N, D, d).
README_TABLE = [
    (8e9, 15e12, 6.58e9),  # Llama3-8B
    (7e9, 2e12, 11.11e9),  # Llama2-7B
    (13e9, 2e12, 15.84e9),  # Llama2-13B
    (70e9, 2e12, 42.48e9),  # Llama2-70B
]


@pytest.mark.parametrize(("n", "d_total", "expected"), README_TABLE)
def test_timing_rule_reproduces_the_readme_table(n, d_total, expected):
    assert growth_timing_tokens(n, tokens=d_total) == pytest.approx(expected, rel=0.01)
    # Same answer from the FLOP budget C = 6 N D.
    assert growth_timing_tokens(n, 6 * n * d_total) == pytest.approx(expected, rel=0.01)


def test_timing_rule_matches_the_formula_written_out():
    n, c = 3e9, 1e22
    log_d = 0.88 * math.log10(n) + 163.27 / math.log10(c) - 5.74
    assert growth_timing_tokens(n, c) == pytest.approx(10**log_d, rel=1e-12)
    # More compute -> grow earlier relative to the budget (d grows slower than C).
    assert growth_timing_tokens(n, 1e23) < growth_timing_tokens(n, 1e22) * 10


def test_timing_rule_warns_far_outside_its_fitted_flops():
    # A 2M-parameter model on 50M tokens (C = 6e14) used to get a budget silently.
    with pytest.warns(GrowthWarning, match="far outside the range the rule was fitted on"):
        growth_timing_tokens(2e6, tokens=5e7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        growth_timing_tokens(7e9, tokens=2e12)  # inside: no warning
    # Inside the fitted FLOPs but a budget below the rule's d: said too (as plan_gstack does).
    with pytest.warns(GrowthWarning, match="not below the budget"):
        growth_timing_tokens(1e11, tokens=2e8)


def test_plan_uses_the_rule_and_the_reference_recipe():
    plan = plan_gstack(7e9, 2e12)
    assert isinstance(plan, GStackPlan)
    assert plan.growth_tokens == pytest.approx(11.11e9, rel=0.01)
    assert plan.factor == 4 and plan.reset_optimizer and plan.restart_schedule
    assert (plan.small_lr, plan.large_lr, plan.warmup_steps) == (1e-3, 3e-4, 3000)
    assert plan.small_flops == pytest.approx(6 * 7e9 / 4 * plan.growth_tokens)
    assert plan.large_flops == pytest.approx(6 * 7e9 * 2e12)
    small_steps, large_steps = plan.steps(1024 * 2048)  # the reference's global batch
    assert small_steps == round(plan.growth_tokens / (1024 * 2048))
    assert large_steps == round(2e12 / (1024 * 2048))


def test_plan_warns_where_the_rule_does_not_extrapolate():
    with pytest.warns(GrowthWarning, match="does not extrapolate"):
        plan = plan_gstack(2e6, 5e7)
    assert plan.growth_tokens > plan.tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plan_gstack(2e6, 5e7, growth_tokens=1e7).growth_tokens == 1e7
    with pytest.warns(GrowthWarning, match="outside"):
        plan_gstack(7e9, 2e12, factor=8)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((0,), {"tokens": 1e9}, ValueError),
        ((-1e9,), {"tokens": 1e9}, ValueError),
        ((float("inf"),), {"tokens": 1e9}, ValueError),
        (("7e9",), {"tokens": 1e9}, TypeError),
        ((7e9,), {}, ValueError),
        ((7e9, 1e22), {"tokens": 1e9}, ValueError),
        ((7e9, 5.0), {}, ValueError),
        ((7e9,), {"tokens": -1}, ValueError),
    ],
)
def test_bad_timing_arguments(args, kwargs, error):
    with pytest.raises(error):
        growth_timing_tokens(*args, **kwargs)


def test_bad_plan_arguments():
    with pytest.raises(ValueError, match="factor"):
        plan_gstack(7e9, 2e12, factor=0)
    with pytest.raises(ValueError, match="factor"):
        plan_gstack(7e9, 2e12, factor=2.5)
    with pytest.raises(ValueError, match="tokens"):
        plan_gstack(7e9, 0)
    with pytest.raises(ValueError, match="growth_tokens"):
        plan_gstack(7e9, 2e12, growth_tokens=-5)
    with pytest.raises(ValueError, match="tokens_per_step"):
        plan_gstack(7e9, 2e12).steps(0)
