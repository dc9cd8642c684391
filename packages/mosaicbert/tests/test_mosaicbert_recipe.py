"""The recipe's schedule and decoupled weight decay against hand-written references."""

from __future__ import annotations

import itertools

import pytest
import torch

from trainforge_mosaicbert import MosaicRecipe, linear_warmup_decay, mosaic_recipe


def test_schedule_warmup_6_percent_then_linear_to_0_02():
    f = linear_warmup_decay(1000)
    assert f(0) == 0.0
    assert f(30) == pytest.approx(0.5)
    assert f(60) == pytest.approx(1.0)
    assert f(530) == pytest.approx(1.0 + (0.02 - 1.0) * 0.5)
    assert f(1000) == pytest.approx(0.02)
    assert f(5000) == pytest.approx(0.02)
    values = [f(s) for s in range(60, 1001)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_recipe_defaults_are_the_reference_yaml():
    r = MosaicRecipe()
    assert (r.lr, r.betas, r.eps, r.weight_decay) == (5e-4, (0.9, 0.98), 1e-6, 1e-5)
    assert (r.warmup_fraction, r.final_lr_ratio) == (0.06, 0.02)
    assert (r.mlm_probability, r.eval_mlm_probability, r.max_seq_len) == (0.3, 0.15, 128)


def test_decoupled_weight_decay_matches_composer_formula():
    """Composer DecoupledAdamW: p <- p * (1 - wd * lr_t / lr_0), then the Adam step at lr_t."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3).double()
    p0 = lin.weight.detach().clone()
    recipe = MosaicRecipe(lr=1e-2, weight_decay=0.1, warmup_fraction=0.5)
    opt, sched = mosaic_recipe(lin, 4, recipe)
    for _ in range(2):  # step 0 has lr 0; step 1 has lr_t = 0.5 * lr_0
        opt.zero_grad()
        lin(torch.ones(2, 4, dtype=torch.float64)).sum().backward()
        opt.step()
        sched.step()
    g = lin.weight.grad
    # Adam's first real move at step 2 with the same gradient both times.
    b1, b2 = recipe.betas
    m = (1 - b1**2) * g
    v = (1 - b2**2) * g * g
    lr_t = 0.5 * recipe.lr
    step = lr_t * (m / (1 - b1**2)) / ((v / (1 - b2**2)).sqrt() + recipe.eps)
    expected = p0 * (1 - recipe.weight_decay * lr_t / recipe.lr) - step
    torch.testing.assert_close(lin.weight.detach(), expected, rtol=1e-9, atol=1e-12)


def test_recipe_bad_input():
    with pytest.raises(ValueError, match="total_steps"):
        linear_warmup_decay(0)
    with pytest.raises(ValueError, match="warmup_fraction"):
        linear_warmup_decay(10, warmup_fraction=1.5)
    with pytest.raises(ValueError, match="final_lr_ratio"):
        linear_warmup_decay(10, final_lr_ratio=-0.1)
    with pytest.raises(TypeError, match="model"):
        mosaic_recipe("model", 10)
    with pytest.raises(TypeError, match="recipe"):
        mosaic_recipe(torch.nn.Linear(2, 2), 10, recipe={"lr": 1})
    with pytest.raises(ValueError, match="total_steps"):
        mosaic_recipe(torch.nn.Linear(2, 2), -5)
    with pytest.raises(ValueError, match="lr"):
        MosaicRecipe(lr=0)
    with pytest.raises(ValueError, match="mlm_probability"):
        MosaicRecipe(mlm_probability=1.0)
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        mosaic_recipe(frozen, 10)
