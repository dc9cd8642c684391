"""Run a function on N ``torch.distributed`` ranks on this machine (gloo, CPU), for tests.

    from trainforge_core.distributed import run_on_ranks

    def step(rank, world_size, x):            # importable (module level): ranks are spawned
        import torch.distributed as dist
        t = torch.tensor([x + rank])
        dist.all_reduce(t)
        return t.item()

    assert run_on_ranks(step, 2, 1.0) == [3.0, 3.0]

Each rank is a fresh spawned process with the process group already initialised (gloo,
loopback address, a free port); the function's return values come back in rank order. A rank
that raises ends the run with that rank's traceback in the parent's error; a run past
``timeout`` seconds is killed and reported, never left hanging.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

LOOPBACK = "127.0.0.1"


class RankError(RuntimeError):
    """A rank raised (the message carries its traceback) or the run timed out."""


def free_port() -> int:
    """A TCP port on the loopback address that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _rank_main(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    port: int,
    args: tuple[Any, ...],
    results: Any,
) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR=LOOPBACK,
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)  # N ranks share the machine's cores
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        try:
            value = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        results.put((rank, "ok", pickle.dumps(value)))
    except BaseException:  # every failure goes back to the parent, with its traceback
        results.put((rank, "error", traceback.format_exc()))


def run_on_ranks(
    fn: Callable[..., Any], world_size: int = 2, *args: Any, timeout: float = 120.0
) -> list[Any]:
    """``[fn(rank, world_size, *args) for each rank]``, each rank in its own process.

    ``fn`` and ``args`` must be picklable (``fn`` defined at module level). Raises
    :class:`RankError` with the first failing rank's traceback, or when ``timeout`` seconds
    pass before every rank has answered (the ranks are then killed).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(fn, rank, world_size, port, args, results))
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    values: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(values) < world_size:
            try:
                # Short waits, so a rank that died without a word is noticed at once.
                wait = min(1.0, max(0.05, deadline - time.monotonic()))
                rank, status, payload = results.get(timeout=wait)
            except queue.Empty:
                if time.monotonic() >= deadline:
                    missing = sorted(set(range(world_size)) - set(values))
                    raise RankError(
                        f"timed out after {timeout:.0f}s waiting for rank(s) {missing}"
                    ) from None
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead and not any(r in values for r in dead):
                    raise RankError(
                        f"rank(s) {dead} died without a result (exit codes "
                        f"{[procs[r].exitcode for r in dead]})"
                    ) from None
                continue
            if status == "error":
                raise RankError(f"rank {rank} of {world_size} raised:\n{payload}")
            values[rank] = pickle.loads(payload)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return [values[r] for r in range(world_size)]
