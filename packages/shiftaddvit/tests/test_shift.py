"""ShiftLinear: exact signed powers of two, straight-through gradients, caching, state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainforge_shiftaddvit import ShiftLinear, round_to_fixed, shift_range


def _allowed(bits: int) -> set[float]:
    lo, hi = shift_range(bits)
    return {0.0} | {s * 2.0**k for k in range(lo, hi + 1) for s in (1, -1)}


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_effective_weights_are_exact_signed_powers_of_two(bits):
    torch.manual_seed(bits)
    layer = ShiftLinear(40, 24, weight_bits=bits)
    w = layer.dequantized_weight()
    assert set(w.unique().tolist()) <= _allowed(bits)
    sign, expo = layer.sign_and_exponent()
    assert sign.dtype == expo.dtype == torch.int8
    assert torch.equal(sign.float() * torch.pow(2.0, expo.float()), w)


def test_from_linear_keeps_signs_and_rounds_in_log_domain():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    nn.init.normal_(lin.weight, 0.0, 0.02)
    layer = ShiftLinear.from_linear(lin)
    w = layer.dequantized_weight()
    assert set(w.unique().tolist()) <= _allowed(5)
    nz = lin.weight.abs() > 2**-14
    assert torch.equal(torch.sign(w[nz]), torch.sign(lin.weight[nz]))
    # each weight is the nearest power of two in log2 (within the clip range)
    ratio = torch.log2(w[nz].abs() / lin.weight[nz].abs())
    assert ratio.abs().max() <= 0.5 + 1e-6
    rel = float(((w - lin.weight).norm() / lin.weight.norm()).detach())
    assert rel < 0.3  # spec (d)1: calibrated 0.206 on N(0, 0.02) weights
    torch.testing.assert_close(layer.bias, lin.bias)


def test_ste_gradient_is_identity_inside_clip_range_and_zero_outside():
    layer = ShiftLinear(3, 2, bias=False, act_fraction_bits=None)
    with torch.no_grad():
        layer.shift.copy_(torch.tensor([[-3.2, -0.4, -20.0], [-14.0, 2.0, -7.6]]))
        layer.sign.copy_(torch.tensor([[0.9, -0.7, 1.0], [-1.0, 0.6, 0.2]]))
    w = layer._ste_weight()
    w.sum().backward()
    # d w / d shift = 2^round(s) ln2 * sign inside [-14, 0]; zero outside (clipped STE)
    expected = torch.exp2(torch.round(layer.shift.detach().clamp(-14, 0))) * math.log(2)
    expected = expected * torch.sign(torch.round(layer.sign.detach()))
    inside = (layer.shift.detach() >= -14) & (layer.shift.detach() <= 0)
    torch.testing.assert_close(layer.shift.grad, expected * inside)
    # d w / d sign = 2^round(s) (round and sign are identity)
    torch.testing.assert_close(
        layer.sign.grad, torch.exp2(torch.round(layer.shift.detach().clamp(-14, 0)))
    )


def test_forward_matches_dense_weight_and_fixed_point_input():
    torch.manual_seed(1)
    layer = ShiftLinear(16, 8)
    x = torch.randn(5, 16)
    xf = torch.floor(x * 2**16) / 2**16
    bf = torch.floor(layer.bias.detach() * 2**16) / 2**16
    want = xf @ layer.dequantized_weight().detach().t() + bf
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want)
    assert torch.equal(
        round_to_fixed(torch.tensor([1.5, -0.3, 4e5]), 4, 1), torch.tensor([1.5, -0.5, 7.0])
    )


def test_cached_weight_refreshes_when_parameters_change():
    layer = ShiftLinear(8, 4)
    with torch.no_grad():
        w0 = layer.dequantized_weight().clone()
        assert layer.dequantized_weight() is layer.dequantized_weight()  # cached
        layer.sign.mul_(-1)
        torch.testing.assert_close(layer.dequantized_weight(), -w0)


def test_state_dict_round_trip_is_exact():
    torch.manual_seed(2)
    a, b = ShiftLinear(12, 6), ShiftLinear(12, 6)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 12)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_regression_onto_power_of_two_teacher_drops_mse_tenfold():
    # spec (d)2: a random ShiftLinear regressed onto a random power-of-two teacher.
    torch.manual_seed(0)
    teacher = ShiftLinear(64, 32, act_fraction_bits=None)
    student = ShiftLinear(64, 32, act_fraction_bits=None)
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    x_eval = torch.randn(256, 64)
    with torch.no_grad():
        y_eval = teacher(x_eval)
        before = float(((student(x_eval) - y_eval) ** 2).mean())
    for _ in range(200):
        x = torch.randn(64, 64)
        with torch.no_grad():
            y = teacher(x)
        loss = ((student(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert student.shift.grad.abs().sum() > 0 and student.sign.grad.abs().sum() > 0
        opt.step()
    with torch.no_grad():
        after = float(((student(x_eval) - y_eval) ** 2).mean())
    assert after * 10 <= before


def test_no_grad_integer_operands_give_the_same_output_and_follow_updates():
    # without autograd x' = floor(x 2^16) and w' = w 2^-16: every product is the same float
    torch.manual_seed(0)
    layer = ShiftLinear.from_linear(nn.Linear(16, 8))
    x = torch.randn(5, 16) * 3
    x[0, 0] = 1e6  # clamped to the 16.16 range
    ref = torch.nn.functional.linear(
        round_to_fixed(x), layer.dequantized_weight(), round_to_fixed(layer.bias)
    )
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-6)
        layer.bias.add_(1.0)  # the cached rounded bias must follow
        layer.shift.sub_(1.0)
        ref2 = torch.nn.functional.linear(
            round_to_fixed(x), layer.dequantized_weight(), round_to_fixed(layer.bias)
        )
        torch.testing.assert_close(layer(x), ref2, atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_one_pass_fixed_point_operands_equal_the_torch_ops(layout, monkeypatch):
    # the no-autograd path floors x through trainforge_kernels.fixed_point_floor_cpu (one C
    # pass; timm's PVTv2 MLP hands fc2 a transposed view): the same integers as the torch
    # ops, so the same output bit for bit
    torch.manual_seed(1)
    layer = ShiftLinear.from_linear(nn.Linear(24, 8))
    x = torch.randn(2, 24, 40) * 5
    x = x.transpose(1, 2) if layout == "transposed" else x.transpose(1, 2).contiguous()
    with torch.no_grad():
        fast = layer(x)
        xi, _, _ = layer.gemm_operands(x)
        monkeypatch.setenv("TRAINFORGE_FIXED_POINT_NATIVE", "0")
        slow = layer(x)
        xi_torch, _, _ = layer.gemm_operands(x)
    assert torch.equal(xi, xi_torch) and torch.equal(fast, slow)
