"""The one-pass fixed-point floor (fixed_point_floor_cpu) against its torch reference."""

from __future__ import annotations

import pytest
import torch

from trainforge_kernels import fixed_point as mod
from trainforge_kernels.fixed_point import (
    fixed_point_floor_cpu,
    fixed_point_floor_reference,
    native_fixed_point,
)

S, LO, HI = 2.0**16, -(2.0**31), (2.0**15 - 1) * 2.0**16  # 16.16, as ShiftLinear uses it


def _layouts(dtype):
    g = torch.Generator().manual_seed(0)
    big = torch.randn(3, 257, 33, generator=g, dtype=dtype) * 3e4  # some past the clamp
    big.view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    return {
        "contiguous": big,
        "transposed": big.transpose(1, 2),  # timm's PVTv2 MLP hands fc2 such a view
        "permuted": big.permute(2, 0, 1),
        "sliced": big[:, ::2],  # not dense: the reference
        "1-d": big.reshape(-1)[:1001],
        "scalar": torch.tensor(1.5e-5, dtype=dtype),
    }


def test_the_reference_is_the_definition():
    x = torch.tensor(
        [-1.0, -(2.0**-17), 0.0, 2.0**-16, 1.25e-5, 40000.0, -40000.0], dtype=torch.float64
    )
    want = torch.tensor([-65536.0, -1.0, 0.0, 1.0, 0.0, HI, LO], dtype=torch.float64)
    assert torch.equal(fixed_point_floor_reference(x, S, LO, HI), want)


@pytest.mark.skipif(native_fixed_point() is None, reason="no C compiler built the loop")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_native_equals_reference_bit_for_bit(dtype, threads, monkeypatch):
    monkeypatch.setattr(mod, "_PARALLEL_MIN", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, x in _layouts(dtype).items():
            got, want = (
                fixed_point_floor_cpu(x, S, LO, HI),
                fixed_point_floor_reference(x, S, LO, HI),
            )
            assert got.shape == want.shape and got.dtype == want.dtype, name
            # bit for bit, NaN included; -0.0 keeps its sign
            assert torch.equal(got.isnan(), want.isnan()), name
            assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want)), name
            assert torch.equal(torch.signbit(got), torch.signbit(want)), name
            if name in ("transposed", "permuted"):
                assert got.stride() == x.stride(), name  # the layout is kept
    finally:
        torch.set_num_threads(before)


def test_off_switch_gradients_and_other_dtypes_take_the_reference(monkeypatch):
    x = torch.randn(5, 7)
    monkeypatch.setenv("TRAINFORGE_FIXED_POINT_NATIVE", "0")
    assert native_fixed_point() is None
    assert torch.equal(
        fixed_point_floor_cpu(x, S, LO, HI), fixed_point_floor_reference(x, S, LO, HI)
    )
    monkeypatch.delenv("TRAINFORGE_FIXED_POINT_NATIVE")
    xg = x.clone().requires_grad_(True)
    assert fixed_point_floor_cpu(xg, S, LO, HI).requires_grad  # the differentiable torch ops
    xh = x.to(torch.bfloat16)
    assert torch.equal(
        fixed_point_floor_cpu(xh, 4.0, -8.0, 8.0), fixed_point_floor_reference(xh, 4.0, -8.0, 8.0)
    )


def test_falls_back_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setattr(mod, "_native_lib", None)
    monkeypatch.setenv("TRAINFORGE_KERNELS_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="TRAINFORGE_FIXED_POINT_NATIVE=0"):
        assert native_fixed_point() is None
    x = torch.randn(64, 9)
    assert torch.equal(
        fixed_point_floor_cpu(x, S, LO, HI), fixed_point_floor_reference(x, S, LO, HI)
    )
    monkeypatch.setattr(mod, "_native_lib", None)  # rebuilt when needed


def test_bad_input():
    x = torch.randn(4)
    for fn in (fixed_point_floor_cpu, fixed_point_floor_reference):
        with pytest.raises(TypeError, match="x must be a torch.Tensor"):
            fn([1.0], S, LO, HI)
        with pytest.raises(TypeError, match="floating point"):
            fn(torch.arange(4), S, LO, HI)
        with pytest.raises(TypeError, match="scale must be a real number"):
            fn(x, "2", LO, HI)
        with pytest.raises(TypeError, match="lo must be a real number"):
            fn(x, S, float("nan"), HI)
        with pytest.raises(ValueError, match="scale must be finite and > 0"):
            fn(x, 0.0, LO, HI)
        with pytest.raises(ValueError, match="lo <= hi"):
            fn(x, S, HI, LO)
