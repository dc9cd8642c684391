"""energy_estimate: operation counts by layer type priced with the 45 nm unit energies."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from trainforge_shiftaddvit import (
    UNIT_ENERGY_PJ,
    AddLinearAttention,
    BinaryCoder,
    MultShiftMoE,
    ShiftAddConfig,
    ShiftLinear,
    count_multiplications,
    energy_estimate,
    reparameterize_vit,
)


def test_hand_computed_toy_linear_then_shift():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), ShiftLinear(3, 2, bias=False))
    rep = energy_estimate(model, torch.randn(5, 4))
    # Linear 4->3 on 5 rows: 60 mults, 5*3*(3 + bias) = 60 adds
    assert rep.ops["linear"] == {"mult": 60, "add": 60, "shift": 0}
    # ShiftLinear 3->2 without bias: 30 shifts, 5*2*2 = 20 adds
    assert rep.ops["shift"] == {"mult": 0, "add": 20, "shift": 30}
    assert rep.total_pj == pytest.approx(60 * 3.7 + 80 * 0.9 + 30 * 0.13)  # 297.9 pJ
    assert rep.energy_pj("shift") == pytest.approx(20 * 0.9 + 30 * 0.13)
    int8 = energy_estimate(model, torch.randn(5, 4), precision="int8")
    assert int8.total_pj == pytest.approx(60 * 0.2 + 80 * 0.03 + 30 * 0.024)
    custom = energy_estimate(model, torch.randn(5, 4), unit_pj={"mult": 1, "add": 0, "shift": 0})
    assert custom.total_pj == 60 and custom.precision == "custom"
    assert "| **total** | 60 | 80 | 30 |" in rep.table()
    assert UNIT_ENERGY_PJ["fp32"] == {"mult": 3.7, "add": 0.9, "shift": 0.13}  # pvt/hw_utils.py


def test_binary_attention_and_moe_counts_follow_codes_and_routing():
    torch.manual_seed(0)
    att = AddLinearAttention(8, 2, coder=BinaryCoder(2, 4, nbits=6, anchors=5, topk=2, iters=2))
    x = torch.randn(1, 12, 8)
    att.train()
    att(x)
    att.eval()
    rep = energy_estimate(att, x)
    with torch.no_grad():
        codes = att.coder(att.heads(x)[0])
    assert rep.ops["binary attention"] == {"mult": 0, "add": 2 * 4 * int(codes.sum()), "shift": 0}
    rows = 2 * 12  # heads x tokens
    assert rep.ops["hashing"]["mult"] == rows * 5 * (4 + 6)
    assert rep.ops["token conv"]["mult"] == 12 * 8 * 9
    # to_qk, to_v and proj, 8 -> 8 on 12 tokens each (the fused eval GEMM yields to the hooks)
    assert rep.ops["linear"]["mult"] == 3 * 12 * 8 * 8
    moe = MultShiftMoE(nn.Linear(6, 4)).eval()
    xm = torch.randn(30, 6)
    rep = energy_estimate(moe, xm)
    with torch.no_grad():
        idx, _ = moe.route(xm)
    n_shift = int(idx.sum())
    assert 0 < n_shift < 30
    assert rep.ops["linear"]["mult"] == (30 - n_shift) * 6 * 4
    assert rep.ops["shift"]["shift"] == n_shift * 6 * 4
    assert rep.ops["router"]["mult"] == 30 * 6 * 2


def test_counters_see_the_fused_attention_projections():
    # the eval fast path fuses to_qk/to_v into one GEMM; the hook-based counters must still
    # count both (they missed them before the fast path checked for hooks)
    torch.manual_seed(0)
    model = timm.models.VisionTransformer(
        img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depth=1,
        num_heads=2, mlp_ratio=2,
    )  # fmt: skip
    x = torch.randn(1, 1, 8, 8)
    before = count_multiplications(model.eval(), x)
    reparameterize_vit(model, ShiftAddConfig(ksh_iters=2, topk=4, anchors=8, linears="none"))
    model.train()(x)
    after = count_multiplications(model.eval(), x)
    # qkv (3 x 32 x 32) becomes to_qk + to_v (2 x 32 x 32) on 17 tokens; proj, MLP, head stay
    assert before["linear"] - after["linear"] == 17 * 32 * 32
    orig = energy_estimate(timm.models.VisionTransformer(
        img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depth=1,
        num_heads=2, mlp_ratio=2,
    ).eval(), x)  # fmt: skip
    assert orig.ops["attention"]["mult"] == 2 * 2 * 17 * 17 * 16


def test_energy_estimate_bad_input():
    with pytest.raises(TypeError, match="nn.Module"):
        energy_estimate("vit", torch.zeros(1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        energy_estimate(nn.Linear(2, 2), [1.0, 2.0])
    with pytest.raises(ValueError, match="precision"):
        energy_estimate(nn.Linear(2, 2), torch.zeros(1, 2), precision="fp64")
    with pytest.raises(ValueError, match="unit_pj"):
        energy_estimate(nn.Linear(2, 2), torch.zeros(1, 2), unit_pj={"mult": 1.0})
    with pytest.raises(ValueError, match="finite"):
        energy_estimate(
            nn.Linear(2, 2), torch.zeros(1, 2), unit_pj={"mult": -1, "add": 0, "shift": 0}
        )
    rep = energy_estimate(nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="kind"):
        rep.energy_pj("softmax")
