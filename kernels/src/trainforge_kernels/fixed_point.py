"""Fixed-point flooring of activations in one pass on CPU.

ShiftAddViT's shift layers (GATECH-EIC/ShiftAddViT:pvt/deepshift/modules.py ``LinearShift``,
``round_to_fixed``) floor every input to 16.16 fixed point before the power-of-two GEMM.
Without autograd, ``trainforge_shiftaddvit.ShiftLinear`` feeds the integers of that fixed
point, ``floor(clamp(x * 2^16, lo, hi))``, to the GEMM. Eager torch takes three passes and a
new tensor for it (``mul``, ``clamp_``, ``floor_``), which cost more than the GEMM itself at
PVTv2 stage-1 MLP sizes (3,136 x 256). :func:`fixed_point_floor_cpu` does it in one pass: a C
loop built with the system compiler on first use (see :mod:`trainforge_kernels._native`),
split over torch's threads for large inputs. Every step is exact in IEEE arithmetic (a
power-of-two scale, a clamp, a floor), so the result equals
:func:`fixed_point_floor_reference` bit for bit, NaN and infinities included.
``TRAINFORGE_FIXED_POINT_NATIVE=0`` turns the loop off.
"""

from __future__ import annotations

import ctypes
import math
import os

import torch

from trainforge_kernels._native import VECTOR_FLAGS, load_c_functions

__all__ = ["fixed_point_floor_cpu", "fixed_point_floor_reference", "native_fixed_point"]

_C_SOURCE = r"""
#include <stdint.h>
#include <math.h>

#define BLOCK 16384 /* elements per work item when split over threads */

#define FIXED_FLOOR(T, NAME, FLOOR)                                                       \
static void NAME##_run(int64_t n, const T *restrict x, T *restrict out, T s, T l, T h) {   \
    for (int64_t i = 0; i < n; i++) {                                                      \
        T t = x[i] * s;                                                                    \
        t = t < l ? l : t;                                                                 \
        t = t > h ? h : t;                                                                 \
        out[i] = FLOOR(t);                                                                 \
    }                                                                                      \
}                                                                                          \
void NAME(int64_t n, const T *x, T *out, double scale, double lo, double hi, int threads) {\
    const T s = (T)scale, l = (T)lo, h = (T)hi;                                            \
    if (threads <= 1) { NAME##_run(n, x, out, s, l, h); return; }                          \
    const int64_t items = (n + BLOCK - 1) / BLOCK;                                         \
    _Pragma("omp parallel for schedule(static) num_threads(threads)")                      \
    for (int64_t it = 0; it < items; it++) {                                               \
        const int64_t lo_i = it * BLOCK, len = n - lo_i < BLOCK ? n - lo_i : BLOCK;        \
        NAME##_run(len, x + lo_i, out + lo_i, s, l, h);                                    \
    }                                                                                      \
}

FIXED_FLOOR(float, fixed_floor_f32, floorf)
FIXED_FLOOR(double, fixed_floor_f64, floor)
"""
_SYMBOLS = {torch.float32: "fixed_floor_f32", torch.float64: "fixed_floor_f64"}
_ARGTYPES = [
    ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
    ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int,
]  # fmt: skip
_ENV = "TRAINFORGE_FIXED_POINT_NATIVE"
_PARALLEL_MIN = 1 << 16  # below this many elements: one thread
_native_lib: object = None  # None: not built yet; False: no compiler could build it


def _get_native():
    global _native_lib
    if os.environ.get(_ENV, "1") == "0":
        return None
    if _native_lib is None:
        symbols = {name: (None, _ARGTYPES) for name in _SYMBOLS.values()}
        lib = load_c_functions(
            "fixed_point", _C_SOURCE, symbols,
            flags=VECTOR_FLAGS, libs=("-lm",), what="fixed_point_floor_cpu", switch=_ENV,
        )  # fmt: skip
        _native_lib = lib or False
    return _native_lib or None


def native_fixed_point() -> str | None:
    """The path of the built C loop behind :func:`fixed_point_floor_cpu` (building it on
    first use), or None when it is off (``TRAINFORGE_FIXED_POINT_NATIVE=0``) or no C
    compiler could build it."""
    lib = _get_native()
    return None if lib is None else lib._name


def _check(x, scale, lo, hi) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fixed_point_floor: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"fixed_point_floor: x must be floating point, got {x.dtype}")
    for name, val in (("scale", scale), ("lo", lo), ("hi", hi)):
        if isinstance(val, bool) or not isinstance(val, int | float) or math.isnan(val):
            raise TypeError(f"fixed_point_floor: {name} must be a real number, got {val!r}")
    if not scale > 0 or math.isinf(scale):
        raise ValueError(f"fixed_point_floor: scale must be finite and > 0, got {scale!r}")
    if not lo <= hi:
        raise ValueError(f"fixed_point_floor: needs lo <= hi, got lo={lo!r}, hi={hi!r}")


def fixed_point_floor_reference(x: torch.Tensor, scale: float, lo: float, hi: float):
    """``floor(clamp(x * scale, lo, hi))`` in three torch ops (a new tensor)."""
    _check(x, scale, lo, hi)
    return (x * scale).clamp_(lo, hi).floor_()


def _dense(x: torch.Tensor) -> bool:
    """Whether ``x`` covers its memory exactly once in some dimension order (contiguous, or
    a permutation of a contiguous tensor such as a transposed view)."""
    expected = 1
    for stride, size in sorted(zip(x.stride(), x.shape, strict=True)):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def fixed_point_floor_cpu(x: torch.Tensor, scale: float, lo: float, hi: float):
    """``floor(clamp(x * scale, lo, hi))`` in one C pass for float32/float64 CPU tensors
    without autograd (bit for bit the reference); the reference otherwise.

    Inputs that cover their memory once (contiguous, or permuted such as a transposed view)
    run the C loop over that memory, and the result keeps their strides, as the reference's
    ``x * scale`` does. Other layouts take the reference.

    Args:
        x: the activations. scale: the fixed-point scale (``2^fraction_bits``).
        lo, hi: the clamp bounds, in scaled units.
    """
    _check(x, scale, lo, hi)
    lib = None
    if (
        x.dtype in _SYMBOLS
        and x.device.type == "cpu"
        and x.numel() > 0
        and not (torch.is_grad_enabled() and x.requires_grad)
        and (x.is_contiguous() or _dense(x))
    ):
        lib = _get_native()
    if lib is None:
        return fixed_point_floor_reference(x, scale, lo, hi)
    out = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype)
    n = x.numel()
    threads = torch.get_num_threads() if n >= _PARALLEL_MIN else 1
    getattr(lib, _SYMBOLS[x.dtype])(
        n, x.data_ptr(), out.data_ptr(), float(scale), float(lo), float(hi), threads
    )
    return out
