"""reparameterize_vit on timm ViT and PVTv2 (built from configs, no weights downloaded)."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_shiftaddvit import (
    AddLinearAttention,
    MultShiftMoE,
    ShiftAddConfig,
    ShiftLinear,
    count_multiplications,
    reparameterize_vit,
)


def _vit(**kw):
    torch.manual_seed(0)
    return timm.models.VisionTransformer(
        img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depth=2,
        num_heads=2, mlp_ratio=2, **kw,
    )  # fmt: skip


_SMALL = ShiftAddConfig(ksh_iters=3, topk=4, anchors=8)


def test_vit_attention_is_initialised_from_q_and_v_and_linears_become_moe():
    model = _vit()
    qkv = model.blocks[0].attn.qkv.weight.detach().clone()
    proj = model.blocks[0].attn.proj.weight.detach().clone()
    report = reparameterize_vit(model, _SMALL)
    assert report.attention == ["blocks.0.attn", "blocks.1.attn"]
    assert len(report.moe) == 2 * 2 + 2 * 3 and report.kept == []
    att = model.blocks[0].attn
    assert isinstance(att, AddLinearAttention)
    assert isinstance(att.to_qk, MultShiftMoE) and isinstance(model.blocks[0].mlp.fc1, MultShiftMoE)
    torch.testing.assert_close(att.to_qk.experts[0].weight, qkv[:32])
    torch.testing.assert_close(att.to_v.experts[0].weight, qkv[64:])
    torch.testing.assert_close(att.proj.experts[0].weight, proj)
    model.train()
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert "2 attention" in str(report)


def test_pvt_v2_b0_keeps_last_stage_and_drops_spatial_reduction():
    torch.manual_seed(0)
    model = timm.create_model("pvt_v2_b0", pretrained=False, num_classes=10)
    q = model.stages[0].blocks[0].attn.q.weight.detach().clone()
    kv = model.stages[0].blocks[0].attn.kv.weight.detach().clone()
    report = reparameterize_vit(model, ShiftAddConfig(ksh_iters=3, linears="shift", topk=4))
    assert len(report.attention) == 6 and report.kept == [
        "stages.3.blocks.0.attn",
        "stages.3.blocks.1.attn",
    ]
    assert all(isinstance(model.get_submodule(n), ShiftLinear) for n in report.shift)
    att = model.stages[0].blocks[0].attn
    assert not hasattr(att, "sr")
    assert isinstance(model.stages[0].blocks[0].mlp.fc2, ShiftLinear)
    dim = q.shape[0]
    ref_q, ref_v = nn.Linear(dim, dim), nn.Linear(dim, dim)
    ref_q.weight.data.copy_(q)
    ref_v.weight.data.copy_(kv[dim:])
    with torch.no_grad():  # to_qk from q, to_v from the value half of kv
        torch.testing.assert_close(
            att.to_qk.dequantized_weight(), ShiftLinear.from_linear(ref_q).dequantized_weight()
        )
        torch.testing.assert_close(
            att.to_v.dequantized_weight(), ShiftLinear.from_linear(ref_v).dequantized_weight()
        )
    x = torch.randn(2, 3, 64, 64)
    model.train()
    assert model(x).shape == (2, 10)


def test_multiplications_removed_are_counted():
    model = _vit()
    x = torch.randn(4, 1, 8, 8)
    before = count_multiplications(model, x)
    assert before["attention"] == 2 * (2 * 4 * 2 * 17 * 17 * 16)  # qk^T and attn v, 2 blocks
    reparameterize_vit(model, ShiftAddConfig(ksh_iters=3, linears="shift", topk=4, anchors=8))
    model.train()
    model(x)
    after = count_multiplications(model.eval(), x)
    assert after["attention"] == 0
    # only the patch embedding (conv) and the head remain dense among the linears
    assert after["linear"] == 4 * 32 * 10
    assert after["hashing"] > 0 and after["total"] < before["total"] / 2


def test_no_effect_warning_when_nothing_matches():
    with pytest.warns(NoEffectWarning):
        report = reparameterize_vit(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    assert report.changed == 0
    with pytest.warns(NoEffectWarning):
        reparameterize_vit(_vit(), ShiftAddConfig(ksh_iters=3, attention=False, linears="none"))


def test_unsupported_attention_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="qk_norm"):
        reparameterize_vit(_vit(qk_norm=True))


def test_second_call_converts_what_is_left_stage_two():
    model = _vit()
    r1 = reparameterize_vit(model, ShiftAddConfig(ksh_iters=3, linears="none", topk=4, anchors=8))
    assert len(r1.attention) == 2 and not r1.moe
    r2 = reparameterize_vit(model, ShiftAddConfig(ksh_iters=3, attention=False, topk=4, anchors=8))
    assert not r2.attention and len(r2.moe) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train()(torch.randn(2, 1, 8, 8))


def test_converted_model_state_round_trip_is_exact(tmp_path):
    model = _vit()
    reparameterize_vit(model, _SMALL)
    model.train()
    model(torch.randn(8, 1, 8, 8))  # fits the coders
    model.eval()
    other = _vit()
    reparameterize_vit(other, _SMALL)
    try:
        from safetensors.torch import load_file, save_file
    except ImportError:
        state = model.state_dict()
    else:
        save_file(model.state_dict(), tmp_path / "m.safetensors")
        state = load_file(tmp_path / "m.safetensors")
    other.load_state_dict(state)
    other.eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))
