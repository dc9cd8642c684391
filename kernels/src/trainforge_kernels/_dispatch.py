"""Which implementation an op runs: Triton on CUDA tensors when Triton is importable,
the plain-torch reference otherwise.

``TRAINFORGE_KERNELS`` overrides the choice: ``auto`` (default), ``torch`` (always the
reference) or ``triton`` (always Triton; with ``TRITON_INTERPRET=1`` this runs the Triton
kernels on CPU tensors through Triton's interpreter, which is how CI tests them).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch

_MODES = ("auto", "torch", "triton")


@cache
def triton_version() -> str | None:
    """The installed Triton version, or None (checked without initialising CUDA)."""
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        import triton
    except Exception:  # a broken install is the same as none for dispatch
        return None
    return str(triton.__version__)


def triton_available() -> bool:
    """True when Triton imports here (the condition for the Triton backend on CUDA)."""
    return triton_version() is not None


def interpret_mode() -> bool:
    """True when Triton's CPU interpreter is on (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernel_mode() -> str:
    """The backend choice from ``TRAINFORGE_KERNELS``: ``auto`` (default), ``torch`` or
    ``triton``."""
    mode = os.environ.get("TRAINFORGE_KERNELS", "auto").lower()
    if mode not in _MODES:
        raise ValueError(f"TRAINFORGE_KERNELS must be one of {_MODES}, got {mode!r}")
    return mode


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether an op called on ``tensors`` should run its Triton kernel."""
    mode = kernel_mode()
    if mode == "torch":
        return False
    if mode == "triton":
        if not triton_available():
            raise RuntimeError("TRAINFORGE_KERNELS=triton but Triton is not installed")
        if not interpret_mode() and not all(t.is_cuda for t in tensors):
            raise RuntimeError("TRAINFORGE_KERNELS=triton needs CUDA tensors or TRITON_INTERPRET=1")
        return True
    return triton_available() and all(t.is_cuda for t in tensors)


@dataclass(frozen=True)
class BenchCase:
    """One timed configuration of an op for ``kernels/benchmarks/run.py``.

    ``make(device)`` builds the inputs; ``triton_fn`` / ``torch_fn`` take them; the two
    outputs are compared with ``atol`` / ``rtol``. ``bytes_moved`` and ``flops`` give the
    roofline (the least time the op could take on the device).
    """

    op: str
    shape: str
    make: Callable[[torch.device], tuple]
    triton_fn: Callable[..., object]
    torch_fn: Callable[..., object]
    bytes_moved: int
    flops: int = 0
    atol: float = 1e-5
    rtol: float = 1e-5


@dataclass(frozen=True)
class KernelInfo:
    """A registered op: its name, what it computes, and its GPU benchmark cases."""

    name: str
    description: str
    bench_cases: Callable[[], list[BenchCase]] | None = None


_KERNELS: dict[str, KernelInfo] = {}


def register_kernel(
    name: str, description: str, bench_cases: Callable[[], list[BenchCase]] | None = None
) -> None:
    """Record an op so that :func:`backend` and the benchmark script know it."""
    if name in _KERNELS:
        raise ValueError(f"kernel {name!r} is registered twice")
    _KERNELS[name] = KernelInfo(name, description, bench_cases)


def kernels() -> dict[str, KernelInfo]:
    """Every registered op, by name."""
    return dict(sorted(_KERNELS.items()))


def backend() -> dict[str, tuple[str, str]]:
    """For each registered op: the backend a CUDA tensor would get here, and why."""
    mode = kernel_mode()
    has_triton = triton_available()
    has_cuda = torch.cuda.is_available()
    if mode == "torch":
        choice = ("torch", "TRAINFORGE_KERNELS=torch")
    elif not has_triton:
        choice = ("torch", "Triton is not installed")
    elif not has_cuda and not interpret_mode():
        choice = ("torch", "no CUDA device (CPU tensors use the torch reference)")
    elif not has_cuda:
        choice = ("triton", "TRITON_INTERPRET=1 (CPU interpreter)")
    else:
        choice = ("triton", f"Triton {triton_version()} on {torch.cuda.get_device_name(0)}")
    return {name: choice for name in kernels()}
