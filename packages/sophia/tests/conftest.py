"""Test-session settings for the sophia suite."""

from __future__ import annotations

import pytest

import trainforge_kernels.sophia_update as _kernel


@pytest.fixture(autouse=True, scope="session")
def _small_fused_graph():
    """``fused=True`` compiles one graph per process for ``_GROUP`` tensors per call; its
    compile time grows with ``_GROUP`` (16: ~16 s with a cold Inductor cache on 2 cores).
    The suite compiles it for 4 tensors per call instead: the per-tensor arithmetic (what
    the tests check, bit for bit) does not depend on how many tensors share a call, and
    lists longer than 4 still run through several calls with padding."""
    saved = _kernel._GROUP
    _kernel._GROUP = 4
    try:
        yield
    finally:
        _kernel._GROUP = saved
