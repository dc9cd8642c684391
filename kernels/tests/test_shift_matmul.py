"""trainforge::shift_matmul: power-of-two weight GEMM vs float64 maths and the reference."""

from __future__ import annotations

import pytest
import torch

from trainforge_kernels import kernels
from trainforge_kernels import shift_matmul as mod
from trainforge_kernels.shift_matmul import (
    decode_shift_weight,
    shift_matmul,
    shift_matmul_reference,
)
from trainforge_kernels.testing import needs_interpreter_reason, poisoned_like
from trainforge_kernels.testing import test_device as _device


def _inputs(m, k, n, dtype=torch.float32, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    sign = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8)
    expo = torch.randint(-14, 1, (n, k), generator=g, dtype=torch.int8)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    return x, sign, expo, b


def _float64_truth(x, sign, expo, b):
    w = sign.double() * torch.pow(2.0, expo.double())
    out = x.double() @ w.t()
    return out if b is None else out + b.double()


def test_decoded_weight_is_exact_power_of_two():
    sign = torch.tensor([[1, -1, 0], [1, 1, -1]], dtype=torch.int8)
    expo = torch.tensor([[0, -3, -14], [-126, 5, -1]], dtype=torch.int8)
    w = decode_shift_weight(sign, expo)
    want = torch.tensor([[1.0, -0.125, 0.0], [2.0**-126, 32.0, -0.5]])
    assert torch.equal(w, want)


@pytest.mark.parametrize("bias", [True, False])
def test_reference_matches_float64_definition(bias):
    x, s, e, b = _inputs(13, 7, 5, bias=bias)
    got = shift_matmul(x, s, e, b)
    torch.testing.assert_close(got.double(), _float64_truth(x, s, e, b), atol=1e-5, rtol=1e-5)


def test_leading_dims_and_gradients():
    x, s, e, b = _inputs(6, 5, 4, dtype=torch.float64)
    x = x.reshape(2, 3, 5).requires_grad_(True)
    b.requires_grad_(True)
    assert shift_matmul(x, s, e, b).shape == (2, 3, 4)
    assert torch.autograd.gradcheck(lambda xx, bb: shift_matmul(xx, s, e, bb), (x, b))


def test_opcheck_and_registration():
    x, s, e, b = _inputs(8, 6, 3)
    torch.library.opcheck(torch.ops.trainforge.shift_matmul.default, (x, s, e, b))
    assert "shift_matmul" in kernels()
    assert all(c.op == "shift_matmul" for c in kernels()["shift_matmul"].bench_cases())


@pytest.mark.parametrize(
    "bad, error",
    [
        (dict(x=torch.zeros(2, 5, dtype=torch.int32)), TypeError),
        (dict(x=[[1.0]]), TypeError),
        (dict(sign=torch.zeros(3, 4)), TypeError),  # float sign
        (dict(sign=torch.zeros(3, 4, 1, dtype=torch.int8)), ValueError),
        (dict(exponent=torch.zeros(3, 5, dtype=torch.int8)), ValueError),  # shape mismatch
        (dict(x=torch.zeros(2, 5)), ValueError),  # in_features mismatch
        (dict(sign=torch.full((3, 4), 2, dtype=torch.int8)), ValueError),
        (dict(exponent=torch.full((3, 4), -127, dtype=torch.int8)), ValueError),
        (dict(bias=torch.zeros(4)), ValueError),
    ],
)
def test_bad_input(bad, error):
    args = dict(
        x=torch.zeros(2, 4),
        sign=torch.ones(3, 4, dtype=torch.int8),
        exponent=torch.zeros(3, 4, dtype=torch.int8),
        bias=torch.zeros(3),
    )
    args.update(bad)
    with pytest.raises(error):
        shift_matmul(**args)


_SHAPES = [(64, 64, 64), (70, 45, 33), (1, 129, 7), (130, 17, 65), (5, 3, 2)]


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_triton_matches_reference(shape, bias, monkeypatch):
    m, k, n = shape
    x, s, e, b = (
        None if t is None else t.to(_device()) for t in _inputs(m, k, n, seed=sum(shape), bias=bias)
    )
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poisoned_like(real_empty(*a, **kw)))
    got = mod._shift_triton(x, s, e, b)
    monkeypatch.undo()
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, shift_matmul_reference(x, s, e, b), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision(dtype):
    x, s, e, b = (t.to(_device()) for t in _inputs(40, 72, 24, dtype=dtype))
    got = mod._shift_triton(x, s, e, b)
    assert got.dtype == dtype
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    truth = _float64_truth(x.cpu(), s.cpu(), e.cpu(), b.cpu())
    torch.testing.assert_close(got.double().cpu(), truth, atol=tol * 4, rtol=tol)


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
def test_public_op_dispatches_to_triton(monkeypatch):
    monkeypatch.setenv("TRAINFORGE_KERNELS", "triton")
    called = []
    real = mod._shift_triton
    monkeypatch.setattr(mod, "_shift_triton", lambda *a: called.append(1) or real(*a))
    x, s, e, b = (t.to(_device()) for t in _inputs(20, 30, 9))
    got = shift_matmul(x, s, e, b)
    assert called
    torch.testing.assert_close(got, shift_matmul_reference(x, s, e, b), atol=1e-4, rtol=1e-4)
