"""trainforge::sltrain_materialize: Triton kernels vs the torch reference vs float64 maths."""

from __future__ import annotations

import pytest
import torch

from trainforge_kernels import kernels
from trainforge_kernels import sltrain_materialize as mod
from trainforge_kernels.sltrain_materialize import (
    sltrain_materialize,
    sltrain_materialize_reference,
)
from trainforge_kernels.testing import needs_interpreter_reason, poisoned_like
from trainforge_kernels.testing import test_device as _device


def _inputs(out_f, in_f, rank, nnz, dtype=torch.float32, index_dtype=torch.int32, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(out_f, rank, generator=g).to(dtype)
    A = torch.randn(rank, in_f, generator=g).to(dtype)
    idx = torch.randperm(out_f * in_f, generator=g)[:nnz].sort().values.to(index_dtype)
    values = torch.randn(nnz, generator=g).to(dtype)
    return B, A, values, idx


def _float64_truth(B, A, values, idx, scale):
    """The definition, written independently: a dense float64 sparse matrix plus the product."""
    out_f, in_f = B.shape[0], A.shape[1]
    S = torch.zeros(out_f * in_f, dtype=torch.float64)
    for k, pos in enumerate(idx.tolist()):
        S[pos] = float(values[k])
    return scale * B.double() @ A.double() + S.view(out_f, in_f)


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_reference_matches_float64_definition(index_dtype):
    B, A, values, idx = _inputs(13, 7, 3, 20, index_dtype=index_dtype)
    got = sltrain_materialize(B, A, values, idx, 0.75)
    torch.testing.assert_close(
        got.double(), _float64_truth(B, A, values, idx, 0.75), atol=1e-5, rtol=1e-5
    )


def test_empty_support_is_pure_low_rank():
    B, A, values, idx = _inputs(9, 11, 2, 0)
    got = sltrain_materialize(B, A, values, idx, 2.0)
    torch.testing.assert_close(got, 2.0 * B @ A)


def test_gradients_match_float64_gradcheck():
    B, A, values, idx = _inputs(6, 5, 2, 9, dtype=torch.float64, index_dtype=torch.int64)
    for t in (B, A, values):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda b, a, v: sltrain_materialize(b, a, v, idx, 0.5), (B, A, values)
    )


def test_opcheck_and_registration():
    B, A, values, idx = _inputs(8, 6, 2, 10)
    torch.library.opcheck(
        torch.ops.trainforge.sltrain_materialize.default, (B, A, values, idx, 0.5)
    )
    assert "sltrain_materialize" in kernels()
    cases = kernels()["sltrain_materialize"].bench_cases()
    assert cases and all(c.op == "sltrain_materialize" for c in cases)


@pytest.mark.parametrize(
    "bad, error",
    [
        (dict(B=torch.zeros(4)), ValueError),
        (dict(A=torch.zeros(3, 5)), ValueError),
        (dict(index=torch.zeros(6, dtype=torch.int16)), TypeError),
        (dict(index=torch.zeros(5, dtype=torch.int64)), ValueError),
        (dict(values=torch.zeros(6, dtype=torch.int64)), TypeError),
        (dict(B=[[1.0]]), TypeError),
        (dict(scale="2"), TypeError),
    ],
)
def test_bad_input(bad, error):
    args = dict(
        B=torch.zeros(4, 2),
        A=torch.zeros(2, 5),
        values=torch.zeros(6),
        index=torch.arange(6),
        scale=1.0,
    )
    args.update(bad)
    with pytest.raises(error):
        sltrain_materialize(**args)


_SHAPES = [
    (64, 64, 16, 200),  # exact tiles
    (70, 45, 3, 100),  # ragged rows, columns and a rank below the K block
    (130, 65, 17, 900),  # ragged everything, rank above 16
    (1, 129, 1, 5),  # a single row
    (50, 33, 5, 0),  # empty support
]


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_triton_matches_reference(shape, index_dtype, monkeypatch):
    out_f, in_f, rank, nnz = shape
    device = _device()
    B, A, values, idx = (
        t.to(device)
        for t in _inputs(out_f, in_f, rank, nnz, index_dtype=index_dtype, seed=sum(shape))
    )
    # Poison the allocation the kernel writes into, so an element it skips shows up as NaN.
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poisoned_like(real_empty(*a, **k)))
    got = mod._materialize_triton(B, A, values, idx, 0.3)
    monkeypatch.undo()
    want = sltrain_materialize_reference(B, A, values, idx, 0.3)
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision(dtype):
    device = _device()
    B, A, values, idx = (t.to(device) for t in _inputs(40, 72, 8, 150, dtype=dtype))
    got = mod._materialize_triton(B, A, values, idx, 0.5)
    truth = _float64_truth(B.cpu(), A.cpu(), values.cpu(), idx.cpu(), 0.5)
    assert got.dtype == dtype
    # one rounding of an fp32 accumulator: within a few ulps of the float64 truth
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    torch.testing.assert_close(got.double().cpu(), truth, atol=tol * 4, rtol=tol)


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
def test_public_op_dispatches_to_triton(monkeypatch):
    monkeypatch.setenv("TRAINFORGE_KERNELS", "triton")
    called = []
    real = mod._materialize_triton
    monkeypatch.setattr(mod, "_materialize_triton", lambda *a: called.append(1) or real(*a))
    B, A, values, idx = (t.to(_device()) for t in _inputs(20, 30, 4, 40))
    got = sltrain_materialize(B, A, values, idx, 1.5)
    assert called
    torch.testing.assert_close(
        got, sltrain_materialize_reference(B, A, values, idx, 1.5), atol=1e-4, rtol=1e-4
    )


def test_reference_under_bf16_autocast_adds_fp32_values():
    # The product comes out bf16 under autocast while B, A and values are fp32: the scatter
    # used to refuse the mix (index_add_ needs one dtype).
    torch.manual_seed(0)
    B, A, values = torch.randn(6, 2), torch.randn(2, 5), torch.randn(4)
    index = torch.tensor([0, 7, 7, 29], dtype=torch.int32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mod.sltrain_materialize_reference(B, A, values, index, 0.5)
    want = (0.5 * B @ A).view(-1).index_add(0, index.long(), values).view(6, 5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, atol=3e-2, rtol=2e-2)
