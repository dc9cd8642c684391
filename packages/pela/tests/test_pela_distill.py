"""PELALoss: each part against a plain re-implementation, invariants of the hooks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from trainforge_pela import (
    PRESETS,
    PELALoss,
    apply_pela,
    compress_linear_layers,
    find_blocks,
    merge_low_rank,
    weight_pairs,
    weight_perturbation,
)


def _manual_blocks(vit, x):
    """Every block's token output, by running timm's ViT forward step by step."""
    h = vit.patch_embed(x)
    h = vit._pos_embed(h)
    h = vit.norm_pre(h)
    feats = []
    for blk in vit.blocks:
        h = blk(h)
        feats.append(h)
    return feats


def test_parts_match_a_plain_reimplementation_and_sum_to_total(vit, images):
    student = compress_linear_layers(copy.deepcopy(vit), 3.0)
    y = torch.tensor([0, 1, 2, 3])
    loss_fn = PELALoss(vit, student, alpha=0.7, beta=0.3, lam=2.0, eps=1e-3)
    out = loss_fn(images, y)

    with torch.no_grad():
        t_feats, s_feats = _manual_blocks(vit, images), _manual_blocks(student, images)
        z_t, z_s = vit(images), student(images)
    fd = sum(F.mse_loss(s, t) for s, t in zip(s_feats, t_feats, strict=True)) / 4
    wpr = 0.0
    n = 0
    for name, layer in student.named_modules():
        if name.endswith(("qkv", "proj", "fc1", "fc2")) and name.startswith("blocks"):
            w_t = vit.get_submodule(name).weight.double()
            rebuilt = layer[1].weight.double() @ layer[0].weight.double()
            wpr += ((rebuilt - w_t).abs().max().item() - 1e-3) ** 2
            n += 1
    assert n == 16
    torch.testing.assert_close(out.fd, fd, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.logit, F.mse_loss(z_s, z_t), rtol=1e-5, atol=1e-7)
    assert out.wpr.item() == pytest.approx(wpr / n, rel=1e-4)
    torch.testing.assert_close(out.task, F.cross_entropy(z_s, y), rtol=1e-5, atol=1e-7)
    total = out.task + 0.7 * out.fd + 0.3 * out.logit + 2.0 * out.wpr
    torch.testing.assert_close(out.total, total)
    assert set(out.parts()) == {"total", "task", "fd", "logit", "wpr"}


def test_gradients_are_finite_and_reach_every_student_parameter(vit, images):
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    loss_fn = PELALoss(vit, student, lam=1.0)
    out = loss_fn(images, torch.tensor([1, 2, 3, 4]))
    out.total.backward()
    for name, p in student.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(p.grad is None for p in vit.parameters())  # the teacher stays frozen


def test_wpr_is_eps_squared_at_the_reconstruction(vit):
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    teacher = merge_low_rank(copy.deepcopy(student)) and None  # names only
    teacher = copy.deepcopy(student)
    merge_low_rank(teacher)  # W_teacher = BA exactly
    for eps in (1e-3, 0.05):
        pairs = weight_pairs(teacher, student)
        assert len(pairs) == 16
        assert weight_perturbation(pairs, eps).item() == pytest.approx(eps**2, rel=1e-3)


def test_wpr_gradient_matches_autograd_of_the_formula():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(12, 16))
    student = compress_linear_layers(copy.deepcopy(teacher), 2.0)
    pairs = weight_pairs(teacher, student)
    loss = weight_perturbation(pairs, 1e-3)
    loss.backward()
    a = student[0][0].weight.detach().double().requires_grad_()
    b = student[0][1].weight.detach().double().requires_grad_()
    ref = ((b @ a - teacher[0].weight.double()).abs().max() - 1e-3) ** 2
    ref.backward()
    torch.testing.assert_close(student[0][0].weight.grad.double(), a.grad, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(student[0][1].weight.grad.double(), b.grad, rtol=1e-4, atol=1e-8)


def test_identical_student_gives_zero_distillation(vit, images):
    twin = copy.deepcopy(vit)
    loss_fn = PELALoss(vit, twin, lam=0.0)
    out = loss_fn(images)
    assert out.fd.item() == 0.0 and out.logit.item() == 0.0 and out.task.item() == 0.0


def test_hooks_capture_one_tensor_per_block_and_leave_outputs_alone(vit, images):
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    before_t, before_s = vit(images), student(images)
    loss_fn = PELALoss(vit, student)
    captured = []
    for rec in (loss_fn._t_rec, loss_fn._s_rec):
        orig = rec.reset

        def spy(rec=rec, orig=orig):
            captured.append(list(rec.features))
            orig()

        rec.reset = spy
    loss_fn(images)
    t_feats, s_feats = captured
    assert len(t_feats) == len(s_feats) == 4
    for got, ref in zip(t_feats, _manual_blocks(vit, images), strict=True):
        torch.testing.assert_close(got, ref)
    # Hooks stay registered but do not change outputs, and record nothing outside the loss.
    torch.testing.assert_close(vit(images), before_t, atol=0, rtol=0)
    torch.testing.assert_close(student(images), before_s, atol=0, rtol=0)
    assert loss_fn._s_rec.features == [None] * 4
    loss_fn.remove()
    assert not vit.blocks[0]._forward_hooks and not student.blocks[0]._forward_hooks
    with pytest.raises(RuntimeError, match="removed"):
        loss_fn(images)


def test_context_manager_removes_hooks(vit, images):
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    with PELALoss(vit, student) as loss_fn:
        assert vit.blocks[0]._forward_hooks
        loss_fn(images)
    assert not vit.blocks[0]._forward_hooks


def test_find_blocks_patterns(vit):
    assert [n for n, _ in find_blocks(vit)] == [f"blocks.{i}" for i in range(4)]
    assert [n for n, _ in find_blocks(vit, "blocks.*.mlp")] == [f"blocks.{i}.mlp" for i in range(4)]
    assert len(find_blocks(vit, "**.fc1")) == 4


def test_presets_follow_the_reference_scripts(vit):
    assert (PRESETS["deit"].ratio, PRESETS["deit"].lam, PRESETS["deit"].alpha) == (2.0, 0.0, 1.0)
    assert (PRESETS["swin"].ratio, PRESETS["swin"].lam, PRESETS["swin"].eps) == (1.5, 1.0, 0.0)
    assert "attn.proj" in PRESETS["swin"].skip
    assert (PRESETS["albef"].alpha, PRESETS["albef"].lam) == (0.1, 1.0)
    student = copy.deepcopy(vit)
    apply_pela(student, PRESETS["deit"].ratio)
    loss_fn = PELALoss.from_preset(vit, student, "swin")
    assert (loss_fn.alpha, loss_fn.lam, loss_fn.eps) == (1.0, 1.0, 0.0)


def test_transformers_encoder_blocks_are_found_and_distilled():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(cfg).eval()
    student = compress_linear_layers(copy.deepcopy(teacher), 2.0, skip=("classifier", "pooler"))
    loss_fn = PELALoss(teacher, student)
    assert loss_fn.block_names == [f"bert.encoder.layer.{i}" for i in range(3)]
    ids = torch.randint(0, 64, (2, 8))
    out = loss_fn({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.tensor([0, 1]))
    assert math.isfinite(out.total.item()) and out.fd.item() > 0
