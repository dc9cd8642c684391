"""Every public function rejects bad input with a clear error."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainforge_pela import (
    LowRankLinear,
    PELAConfig,
    PELALoss,
    apply_pela,
    compress_linear_layers,
    find_blocks,
    low_rank_factors,
    low_rank_layers,
    merge_low_rank,
    pela_pretrain,
    rank_for_ratio,
    weight_pairs,
    weight_perturbation,
)
from trainforge_pela.data import digits, tiny_vit


@pytest.mark.parametrize("ratio", [1.0, 0.5, -2.0])
def test_ratios_at_or_below_one_are_refused(ratio):
    with pytest.raises(ValueError, match="ratio"):
        rank_for_ratio(8, 8, ratio)
    with pytest.raises(ValueError, match="grow"):
        apply_pela(nn.Sequential(nn.Linear(16, 16)), ratio)
    with pytest.raises(ValueError, match="ratio"):
        PELAConfig(ratio=ratio)


@pytest.mark.parametrize("ratio", ["2", float("nan"), True, None])
def test_ratio_type(ratio):
    with pytest.raises(TypeError, match="ratio"):
        compress_linear_layers(nn.Sequential(nn.Linear(16, 16)), ratio)


@pytest.mark.parametrize("multiple", [0, -8])
def test_rank_multiple_below_one_is_refused(multiple):
    with pytest.raises(ValueError, match="rank_multiple must be >= 1"):
        rank_for_ratio(768, 3072, 3.0, multiple=multiple)
    with pytest.raises(ValueError, match="rank_multiple must be >= 1"):
        apply_pela(nn.Sequential(nn.Linear(16, 16)), 2.0, rank_multiple=multiple)


@pytest.mark.parametrize("multiple", [2.5, 8.0, True, "8", None])
def test_rank_multiple_type(multiple):
    model = nn.Sequential(nn.Linear(16, 16))
    with pytest.raises(TypeError, match="rank_multiple must be an int"):
        rank_for_ratio(768, 3072, 3.0, multiple=multiple)
    with pytest.raises(TypeError, match="rank_multiple must be an int"):
        compress_linear_layers(model, 2.0, rank_multiple=multiple)
    assert isinstance(model[0], nn.Linear)  # refused before any change


def test_rank_for_ratio_dimensions():
    with pytest.raises(ValueError, match="m must"):
        rank_for_ratio(0, 8, 2.0)
    with pytest.raises(ValueError, match="n must"):
        rank_for_ratio(8, 2.5, 2.0)


def test_skip_pattern_matching_nothing(vit):
    with pytest.raises(ValueError, match=r"\['atn'\]"):
        apply_pela(vit, 2.0, skip=("norm", "atn"))
    with pytest.raises(TypeError, match="skip"):
        apply_pela(vit, 2.0, skip=(1,))
    with pytest.raises(TypeError, match="skip"):
        apply_pela(vit, 2.0, skip=5)


def test_apply_pela_other_arguments(vit):
    with pytest.raises(TypeError, match="model"):
        apply_pela("model", 2.0)
    with pytest.raises(ValueError, match="init"):
        apply_pela(vit, 2.0, init="random")
    with pytest.raises(ValueError, match="min_out_features"):
        apply_pela(vit, 2.0, min_out_features=0)
    with pytest.raises(TypeError, match="min_out_features"):
        apply_pela(vit, 2.0, min_out_features=2.5)


def test_low_rank_factors_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        low_rank_factors(torch.ones(3), 1)
    with pytest.raises(ValueError, match="rank"):
        low_rank_factors(torch.ones(3, 4), 4)
    with pytest.raises(ValueError, match="rank"):
        low_rank_factors(torch.ones(3, 4), 0)
    with pytest.raises(TypeError, match="floating"):
        low_rank_factors(torch.ones(3, 4, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match="non-finite"):
        low_rank_factors(torch.full((3, 4), float("nan")), 1)


def test_low_rank_linear_bad_input():
    with pytest.raises(ValueError, match="rank"):
        LowRankLinear(4, 4, 0)
    with pytest.raises(ValueError, match="in_features"):
        LowRankLinear(0, 4, 1)


def test_module_helpers_reject_non_modules():
    with pytest.raises(TypeError, match="model"):
        low_rank_layers([1])
    with pytest.raises(TypeError, match="model"):
        merge_low_rank(None)
    with pytest.raises(TypeError, match="model"):
        find_blocks("vit")


def test_block_pattern_matching_nothing(vit):
    with pytest.raises(ValueError, match="matches no module"):
        find_blocks(vit, "layers.*")
    with pytest.raises(ValueError, match="matches no module"):
        find_blocks(nn.Sequential(nn.Linear(2, 2)))
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    with pytest.raises(ValueError, match="matches no module"):
        PELALoss(vit, student, block_pattern="encoder.layer.*")


def test_teacher_and_student_with_different_block_counts(vit):
    shallow = tiny_vit(img_size=16, patch_size=4, depth=3)
    with pytest.raises(ValueError, match="4 blocks.*3"):
        PELALoss(vit, shallow, lam=0.0)


def test_pela_loss_other_arguments(vit):
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    with pytest.raises(TypeError, match="teacher"):
        PELALoss(None, student)
    with pytest.raises(ValueError, match="same module"):
        PELALoss(vit, vit)
    with pytest.raises(ValueError, match="alpha"):
        PELALoss(vit, student, alpha=-1.0)
    with pytest.raises(TypeError, match="eps"):
        PELALoss(vit, student, eps=float("inf"))
    with pytest.raises(TypeError, match="task_loss"):
        PELALoss(vit, student, task_loss=3)
    with pytest.raises(ValueError, match="lam=1.0 but the student has no compressed"):
        PELALoss(vit, copy.deepcopy(vit), lam=1.0)
    with pytest.raises(ValueError, match="preset"):
        PELALoss.from_preset(vit, student, "vit")


def test_weight_helpers_bad_input(vit):
    with pytest.raises(ValueError, match="at least one"):
        weight_perturbation([], 1e-3)
    assert weight_pairs(vit, copy.deepcopy(vit)) == []


def test_pela_pretrain_bad_input(vit):
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    loss_fn = PELALoss(vit, student)
    batch = [(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))]
    with pytest.raises(TypeError, match="loss_fn"):
        pela_pretrain(lambda x, y: x, batch, 1)
    with pytest.raises(ValueError, match="steps"):
        pela_pretrain(loss_fn, batch, 0)
    with pytest.raises(ValueError, match="lr"):
        pela_pretrain(loss_fn, batch, 1, lr=-1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        pela_pretrain(loss_fn, batch, 1, warmup_steps=-1)
    with pytest.raises(ValueError, match="grad_clip"):
        pela_pretrain(loss_fn, batch, 1, grad_clip=0.0)
    with pytest.raises(TypeError, match="batches"):
        pela_pretrain(loss_fn, 5, 1)
    with pytest.raises(ValueError, match="ran out"):
        pela_pretrain(loss_fn, [], 1)


def test_digits_bad_split():
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=1.0)


def test_trainer_bad_input(vit):
    pytest.importorskip("transformers")
    from trainforge_pela.hf import PELATrainer

    with pytest.raises(TypeError, match="teacher"):
        PELATrainer(model=vit, teacher="vit")
