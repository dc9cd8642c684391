"""Helpers for kernel tests: poisoned outputs and interpreter-only markers."""

from __future__ import annotations

import os

import torch

from trainforge_kernels._dispatch import interpret_mode, triton_available


def needs_interpreter_reason() -> str | None:
    """Why a Triton-on-CPU test cannot run here, or None when it can.

    With ``TRAINFORGE_REQUIRE_INTERPRETER=1`` (the kernels_interpret nox session) a reason
    is an error instead, so that session cannot pass by skipping every kernel test.
    """
    reason = None
    if not triton_available():
        reason = "Triton is not installed"
    elif not interpret_mode() and not torch.cuda.is_available():
        reason = "needs TRITON_INTERPRET=1 (the kernels_interpret nox session) or a CUDA device"
    if reason and os.environ.get("TRAINFORGE_REQUIRE_INTERPRETER") == "1":
        raise RuntimeError(f"Triton kernel tests cannot run: {reason}")
    return reason


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor shaped like ``t`` full of NaN (or the max value for integers), so a kernel
    that skips an element fails the comparison instead of passing on stale memory."""
    if t.is_floating_point():
        return torch.full_like(t, float("nan"))
    return torch.full_like(t, torch.iinfo(t.dtype).max)


def test_device() -> torch.device:
    """CUDA when present, else CPU (which needs TRITON_INTERPRET=1 for Triton kernels)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
