"""Every public function rejects bad input with a clear error naming the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge_shiftaddvit import (
    AddLinearAttention,
    BinaryCoder,
    MultShiftMoE,
    ShiftAddConfig,
    ShiftLinear,
    binary_attention_reference,
    count_multiplications,
    cv_squared,
    latency_balance_loss,
    linear_angular_attention,
    moe_aux_loss,
    reparameterize_vit,
    round_to_fixed,
    shift_range,
    two_stage_finetune,
)


@pytest.mark.parametrize(
    "bits, error", [(1, ValueError), (9, ValueError), (5.0, TypeError), (True, TypeError)]
)
def test_unsupported_bit_widths(bits, error):
    with pytest.raises(error, match="weight_bits"):
        shift_range(bits)
    with pytest.raises(error, match="weight_bits"):
        ShiftLinear(4, 4, weight_bits=bits)
    with pytest.raises(error, match="weight_bits"):
        ShiftAddConfig(weight_bits=bits)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_features=0, out_features=3), "in_features"),
        (dict(in_features=3, out_features=-1), "out_features"),
        (dict(in_features=3, out_features=3, act_fraction_bits=40), "act_fraction_bits"),
    ],
)
def test_shift_linear_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShiftLinear(**kwargs)


def test_shift_linear_from_linear_needs_a_linear():
    with pytest.raises(TypeError, match="nn.Linear"):
        ShiftLinear.from_linear(nn.Conv2d(2, 2, 1))


def test_round_to_fixed_bad_input():
    with pytest.raises(TypeError):
        round_to_fixed([1.0])
    with pytest.raises(ValueError, match="integer_bits"):
        round_to_fixed(torch.zeros(2), integer_bits=1)
    with pytest.raises(ValueError, match="fraction_bits"):
        round_to_fixed(torch.zeros(2), fraction_bits=-1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="lsh"), "mode"),
        (dict(fit="lazy"), "fit"),
        (dict(nbits=0), "nbits"),
        (dict(nbits=65), "nbits"),
        (dict(anchors=0), "anchors"),
        (dict(topk=1.5), "topk"),
    ],
)
def test_binary_coder_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BinaryCoder(2, 8, **kwargs)


def test_binary_coder_bad_shapes_and_token_counts():
    coder = BinaryCoder(2, 8, anchors=10, topk=5, fit="explicit")
    with pytest.raises(ValueError, match=r"\[B, 2, N, 8\]"):
        coder(torch.randn(1, 3, 20, 8))
    with pytest.raises(TypeError):
        coder.fit("x")
    with pytest.raises(ValueError, match="anchors=10"):
        coder.fit(torch.randn(1, 2, 6, 8))  # 6 tokens, 10 anchors
    with pytest.raises(ValueError, match="topk=5"):
        coder.fit(torch.randn(2, 2, 8, 8))  # 8 tokens cannot hold 5 + 5 supervised pairs
    with pytest.raises(RuntimeError, match="not fitted"):
        coder(torch.randn(1, 2, 20, 8))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(dim=10, num_heads=3), ValueError),
        (dict(dim=0, num_heads=1), ValueError),
        (dict(dim=8, num_heads=2, dw_kernel=4), ValueError),
        (dict(dim=8, num_heads=2, coder="ksh"), TypeError),
        (dict(dim=8, num_heads=2, coder=BinaryCoder(1, 8)), ValueError),
    ],
)
def test_attention_bad_config(kwargs, error):
    with pytest.raises(error):
        AddLinearAttention(**kwargs)


def test_attention_bad_input_and_masks():
    att = AddLinearAttention(8, 2)
    with pytest.raises(ValueError, match=r"\[B, N, 8\]"):
        att(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="masks"):
        att(torch.randn(2, 5, 8), attn_mask=torch.ones(5, 5))


@pytest.mark.parametrize("fn", [linear_angular_attention, binary_attention_reference])
def test_attention_functions_bad_input(fn):
    with pytest.raises(ValueError, match="leading dims"):
        fn(torch.zeros(2, 5, 16), torch.zeros(2, 6, 8))
    with pytest.raises(TypeError):
        fn([[0, 1]], torch.zeros(2, 8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(experts=("mult",)), "experts"),  # one expert is no mixture
        (dict(experts=("mult", "add")), "experts"),
        (dict(latency=(6.0, 4.0, 1.0)), "latency"),  # expert count mismatch
        (dict(latency=(6.0, 0.0)), "latency"),
        (dict(gate="switch"), "gate"),
        (dict(top_k=2), "top_k"),
    ],
)
def test_moe_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultShiftMoE(nn.Linear(4, 4), **kwargs)


def test_moe_bad_input():
    with pytest.raises(TypeError, match="nn.Linear"):
        MultShiftMoE(nn.Identity())
    with pytest.raises(ValueError, match=r"\[..., 4\]"):
        MultShiftMoE(nn.Linear(4, 3))(torch.randn(2, 5))
    with pytest.raises(TypeError):
        moe_aux_loss("model")


def test_balance_loss_bad_input():
    with pytest.raises(ValueError, match="importance"):
        latency_balance_loss(torch.ones(3), None, (6.0, 4.0))
    with pytest.raises(ValueError, match="load"):
        latency_balance_loss(torch.ones(2), torch.ones(3), (6.0, 4.0))
    with pytest.raises(ValueError, match="latency"):
        latency_balance_loss(torch.ones(2), None, (6.0, -1.0))
    with pytest.raises(ValueError):
        cv_squared(torch.ones(2, 2))


def test_config_and_reparameterize_bad_input():
    with pytest.raises(ValueError, match="linears"):
        ShiftAddConfig(linears="add")
    with pytest.raises(ValueError, match="latency"):
        ShiftAddConfig(latency=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="nbits"):
        ShiftAddConfig(nbits=100)
    with pytest.raises(TypeError, match="nn.Module"):
        reparameterize_vit("vit")
    with pytest.raises(TypeError, match="ShiftAddConfig"):
        reparameterize_vit(nn.Linear(2, 2), {"linears": "moe"})
    with pytest.raises(TypeError):
        count_multiplications("vit", torch.zeros(1))
    with pytest.raises(TypeError):
        count_multiplications(nn.Linear(2, 2), [1.0, 2.0])


def test_two_stage_finetune_bad_input():
    model = nn.Linear(2, 2)

    def loss(m, b):
        return m(b).sum()

    batches = [torch.zeros(1, 2)]
    with pytest.raises(ValueError, match="batches"):
        two_stage_finetune(model, [], loss, 1, 1)
    with pytest.raises(TypeError, match="loss_fn"):
        two_stage_finetune(model, batches, "ce", 1, 1)
    with pytest.raises(ValueError, match="stage1_steps"):
        two_stage_finetune(model, batches, loss, -1, 1)
    with pytest.raises(ValueError, match="stage2_lr"):
        two_stage_finetune(model, batches, loss, 1, 1, stage2_lr=0.0)
    with pytest.raises(ValueError, match="balance_weight"):
        two_stage_finetune(model, batches, loss, 1, 1, balance_weight=-1)
    with pytest.raises(TypeError, match="nn.Module"):
        two_stage_finetune(None, batches, loss, 1, 1)
