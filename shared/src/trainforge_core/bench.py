"""Small benchmarking helpers: median wall time and peak memory of a callable."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``repeats`` timed calls after warm-up."""

    median: float
    p25: float
    p75: float
    repeats: int


def _sync(device: str | torch.device | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device | None = None,
) -> Timing:
    """Time ``fn()``; on CUDA (``device``) the device is synchronised around each call."""
    if not callable(fn):
        raise TypeError("fn must be callable")
    if warmup < 0 or repeats <= 0:
        raise ValueError(f"warmup must be >= 0 and repeats > 0, got {warmup}, {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), q[0], q[2], repeats)


def peak_memory(fn: Callable[[], Any], device: str | torch.device = "cpu") -> int:
    """Peak bytes above the starting level while ``fn()`` runs.

    CUDA: the caching allocator's peak statistic. CPU (Linux): the process's resident-set
    high-water mark, reset through ``/proc/self/clear_refs`` before the call, minus the
    resident set before it; pages only count once they are touched.
    """
    if not callable(fn):
        raise TypeError("fn must be callable")
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev) - base)
    if dev.type != "cpu":
        raise ValueError(f"device must be 'cpu' or a CUDA device, got {device!r}")
    if not _PROC_STATUS.exists():
        raise NotImplementedError("CPU peak memory needs Linux's /proc/self/status")
    base = _status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    fn()
    return max(0, _status_bytes("VmHWM") - base)


_PROC_STATUS = Path("/proc/self/status")


def _status_bytes(field: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in {_PROC_STATUS}")
