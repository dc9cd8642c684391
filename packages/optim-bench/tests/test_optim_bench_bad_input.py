"""Every public function rejects bad input with a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge_optim_bench import (
    SOAP,
    CautiousAdamW,
    CoordinateDescentTuner,
    DataLaw,
    GroupedOptimizer,
    NAdamW,
    ScalingLawHparams,
    Signum,
    WarmupStableDecay,
    baseline,
    build_optimizer,
    effective_data,
    fit_data_law,
    newton_schulz5,
    newton_schulz_flops,
    param_groups_for_matrix_opt,
    resolve_hparams,
    speedup,
    split_config,
    wsd_factor,
)


def test_build_optimizer_bad_input(tiny_model):
    with pytest.raises(ValueError, match=r"unknown optimizer 'sgdx'; known: \['adam_mini'"):
        build_optimizer("sgdx", tiny_model)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        build_optimizer("adamw", "model")
    with pytest.raises(TypeError, match="name must be a string"):
        build_optimizer(3, tiny_model)
    with pytest.raises(ValueError, match="lr must be > 0"):
        build_optimizer("muon", tiny_model, lr=-1.0)
    with pytest.raises(ValueError, match="finite"):
        build_optimizer("adamw", tiny_model, lr=float("nan"))
    with pytest.raises(ValueError, match=r"beta1 must be in \[0, 1\)"):
        build_optimizer("soap", tiny_model, beta1=1.0)
    with pytest.raises(ValueError, match="momentum"):
        build_optimizer("muon", tiny_model, momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        build_optimizer("lion", tiny_model, weight_decay=-0.1)
    with pytest.raises(TypeError, match=r"takes no hyper-parameter \['gamma'\]"):
        build_optimizer("adamw", tiny_model, gamma=0.1)
    with pytest.raises(ValueError, match="precondition_frequency must be a positive integer"):
        build_optimizer("soap", tiny_model, precondition_frequency=0)
    with pytest.raises(TypeError, match="not both"):
        build_optimizer("adamw", tiny_model, wd=0.1, weight_decay=0.1)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer("adamw", frozen)
    with pytest.raises(ValueError, match="unknown optimizer"):
        resolve_hparams("adam")
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        resolve_hparams("muon", adjust_lr_fn="bogus")


def test_presets_bad_input():
    with pytest.raises(ValueError, match="known"):
        baseline("sgd")
    with pytest.raises(TypeError, match="config must be a dict"):
        split_config([("lr", 1)])


def test_grouping_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        param_groups_for_matrix_opt(object())
    with pytest.raises(TypeError, match="extra_adam_names"):
        param_groups_for_matrix_opt(nn.Linear(2, 2), extra_adam_names=["head"])


def test_optimizer_classes_bad_input():
    p = [nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="lr"):
        SOAP(p, lr=0)
    with pytest.raises(ValueError, match="betas"):
        SOAP(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="shampoo_beta"):
        SOAP(p, shampoo_beta=2.0)
    with pytest.raises(ValueError, match="max_precond_dim"):
        SOAP(p, max_precond_dim=-1)
    with pytest.raises(ValueError, match="eps"):
        NAdamW(p, eps=-1)
    with pytest.raises(ValueError, match="weight_decay"):
        CautiousAdamW(p, weight_decay=-1)
    with pytest.raises(ValueError, match="betas"):
        Signum(p, momentum=1.0)
    with pytest.raises(ValueError, match="non-empty dict"):
        GroupedOptimizer({})
    with pytest.raises(TypeError, match="not an Optimizer"):
        GroupedOptimizer({"a": "sgd"})
    opt = GroupedOptimizer({"a": torch.optim.SGD(p, lr=0.1)})
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict({"state": {}})
    with pytest.raises(NotImplementedError):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))]})


def test_newton_schulz_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz5(torch.zeros(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        newton_schulz5([[1.0]])
    with pytest.raises(ValueError, match="steps"):
        newton_schulz5(torch.ones(2, 2), steps=0)
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz5(torch.ones(2, 2), coefficients=(1.0, 2.0))
    with pytest.raises(ValueError, match="eps"):
        newton_schulz5(torch.ones(2, 2), eps=0.0)
    with pytest.raises(ValueError, match="positive"):
        newton_schulz_flops(0, 3)


def test_schedule_bad_input():
    with pytest.raises(ValueError, match="total_steps"):
        wsd_factor(0, 0)
    with pytest.raises(ValueError, match="warmup"):
        wsd_factor(0, 10, warmup=11)
    with pytest.raises(ValueError, match="decay"):
        wsd_factor(0, 10, decay=1.5)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        wsd_factor(0, 10, min_lr_ratio=-0.1)
    with pytest.raises(ValueError, match="shape"):
        wsd_factor(0, 10, shape="step")
    with pytest.raises(TypeError, match="optimizer"):
        WarmupStableDecay("opt", total_steps=10)


def test_tuner_bad_input():
    base = {"lr": 1.0}
    with pytest.raises(TypeError, match="train_fn"):
        CoordinateDescentTuner(None, {"lr": [1.0]}, base)
    with pytest.raises(ValueError, match="non-empty mapping"):
        CoordinateDescentTuner(lambda c: 0.0, {}, base)
    with pytest.raises(ValueError, match=r"grid\['lr'\] is empty"):
        CoordinateDescentTuner(lambda c: 0.0, {"lr": []}, base)
    with pytest.raises(TypeError, match="sequence"):
        CoordinateDescentTuner(lambda c: 0.0, {"lr": "abc"}, base)
    with pytest.raises(ValueError, match="tol"):
        CoordinateDescentTuner(lambda c: 0.0, {"lr": [1.0]}, base, tol=-1)
    with pytest.raises(ValueError, match="max_runs"):
        CoordinateDescentTuner(lambda c: 0.0, {"lr": [1.0]}, base, max_runs=0)
    with pytest.raises(TypeError, match="baseline"):
        CoordinateDescentTuner(lambda c: 0.0, {"lr": [1.0]}, [1.0])


def test_scaling_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        fit_data_law([1, 2], [3.0, 2.9])
    with pytest.raises(ValueError, match="positive finite"):
        fit_data_law([1, 2, -4], [3.0, 2.9, 2.8])
    with pytest.raises(ValueError, match="differ|points"):
        fit_data_law([1, 2, 4], [3.0, 2.9])
    with pytest.raises(ValueError, match="distinct"):
        fit_data_law([1, 1, 2], [3.0, 2.9, 2.8])
    law = DataLaw(1.0, 0.5, 2.0)
    with pytest.raises(TypeError, match="DataLaw"):
        speedup((1.0, 0.5, 2.0), 1.0, 3.0)
    with pytest.raises(ValueError, match="data"):
        speedup(law, 0.0, 3.0)
    with pytest.raises(ValueError, match="loss"):
        effective_data(law, float("nan"))
    with pytest.raises(TypeError, match="DataLaw"):
        effective_data("law", 3.0)
    with pytest.raises(ValueError, match="data"):
        law(-1.0)
    with pytest.raises(ValueError, match="at least 3 points"):
        ScalingLawHparams.fit([1, 2, 3], [1, 1, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="positive"):
        ScalingLawHparams(1.0, 0.1, 0.1)(0.0, 1.0)
