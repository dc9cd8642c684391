"""build_optimizer: grouping, every optimiser's state_dict round trip, zero gradients."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from conftest import lm_step
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_optim_bench import (
    BASELINES,
    GRIDS,
    OPTIMIZERS,
    build_optimizer,
    param_groups_for_matrix_opt,
    resolve_hparams,
)


def test_grouping_covers_every_parameter_once(tiny_model):
    g = param_groups_for_matrix_opt(tiny_model)
    names = g.matrix + g.adam_decay + g.adam_no_decay
    assert len(names) == len(set(names))
    unique = {id(p) for p in tiny_model.parameters()}
    grouped = [id(p) for p in g.matrix_params + g.adam_decay_params + g.adam_no_decay_params]
    assert sorted(grouped) == sorted(unique)
    assert "model.embed_tokens.weight" in g.adam_decay  # tied with lm_head: counted once
    assert all("norm" in n for n in g.adam_no_decay)
    assert all(n.endswith(("proj.weight",)) for n in g.matrix)
    assert len(g.matrix) == 7  # q, k, v, o, gate, up, down


def test_untied_head_goes_to_adamw():
    from trainforge_core.models import tiny_llama

    m = tiny_llama(
        vocab_size=64, hidden_size=32, num_layers=1, num_heads=4, tie_word_embeddings=False
    )
    g = param_groups_for_matrix_opt(m)
    assert "lm_head.weight" in g.adam_decay and "model.embed_tokens.weight" in g.adam_decay


def test_no_matrix_weights_warns_and_matrix_optimizer_refuses():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4))
    with pytest.warns(NoEffectWarning):
        param_groups_for_matrix_opt(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoEffectWarning)
        with pytest.raises(ValueError, match="2-D hidden weights"):
            build_optimizer("muon", model)
    build_optimizer("adamw", model)  # element-wise optimisers are fine


def test_presets_fill_missing_hparams_and_aliases():
    hp = resolve_hparams("muon", lr=0.01, wd=0.2)
    assert hp["lr"] == 0.01 and hp["weight_decay"] == 0.2
    assert hp["momentum"] == BASELINES["muon"]["momentum"]
    assert resolve_hparams("soap", betas=(0.9, 0.99))["beta2"] == 0.99
    # a whole tuner config (with trainer knobs) is accepted
    assert resolve_hparams("adamw", **BASELINES["adamw"])["lr"] == BASELINES["adamw"]["lr"]


def test_every_grid_axis_is_a_known_knob():
    from trainforge_optim_bench.build import KNOBS
    from trainforge_optim_bench.presets import TRAINER_KEYS

    for name, grid in GRIDS.items():
        for knob in grid:
            assert knob in KNOBS[name] or knob in TRAINER_KEYS, (name, knob)
            assert knob in BASELINES[name], (name, knob)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip(name, tiny_model):
    opt = build_optimizer(name, tiny_model, lr=1e-3)
    for s in range(2):
        lm_step(tiny_model, opt, seed=s)
    twin_model = copy.deepcopy(tiny_model)
    twin = build_optimizer(name, twin_model, lr=1e-3)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    for s in range(2, 4):
        # optimisers with random preconditioner updates (Kron) draw from the global RNG
        torch.manual_seed(s)
        lm_step(tiny_model, opt, seed=s)
        torch.manual_seed(s)
        lm_step(twin_model, twin, seed=s)
    for (n, a), b in zip(tiny_model.named_parameters(), twin_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=f"{name}: {n}")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_zero_gradients_give_no_nan(name, tiny_model):
    opt = build_optimizer(name, tiny_model)
    before = [p.detach().clone() for p in tiny_model.parameters()]
    for _ in range(2):
        for p in tiny_model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
    for p, b in zip(tiny_model.parameters(), before, strict=True):
        assert torch.isfinite(p).all(), name
        # only weight decay may move a parameter when gradients vanish
        assert (p.detach() - b).abs().max() <= 0.05 * b.abs().max() + 1e-6, name


def test_lr_scheduler_scales_muon_and_adamw_groups_together(tiny_model):
    from trainforge_optim_bench import WarmupStableDecay

    opt = build_optimizer("muon", tiny_model, lr=0.02, adam_lr_ratio=0.25)
    sched = WarmupStableDecay(opt, total_steps=10, warmup=0, decay=0.5)
    for s in range(8):
        lm_step(tiny_model, opt, seed=s)
        sched.step()
    muon_lr = opt.optimizers["muon"].param_groups[0]["lr"]
    adam_lr = opt.optimizers["adamw"].param_groups[0]["lr"]
    assert muon_lr == pytest.approx(0.02 * (1 - 3 / 5))
    assert adam_lr == pytest.approx(0.25 * muon_lr)
