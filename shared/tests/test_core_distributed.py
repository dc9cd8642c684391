"""run_on_ranks: results in rank order, a failing rank's traceback, a time-out instead of a
hang, clear errors for bad arguments."""

from __future__ import annotations

import time

import pytest

from trainforge_core.distributed import RankError, free_port, run_on_ranks

pytestmark = pytest.mark.distributed


def _all_reduce(rank, world_size, base):
    import torch
    import torch.distributed as dist

    t = torch.tensor([base + rank], dtype=torch.float64)
    dist.all_reduce(t)
    return rank, world_size, t.item()


def _fails_on_rank_one(rank, world_size):
    if rank == 1:
        raise KeyError("rank one broke")
    return rank


def _dies(rank, world_size):
    import os

    os._exit(3)  # no traceback, no result: as a crash or an unimportable function would


def _sleeps(rank, world_size):
    time.sleep(120)


def test_ranks_run_a_collective_and_return_in_order():
    assert run_on_ranks(_all_reduce, 2, 1.0) == [(0, 2, 3.0), (1, 2, 3.0)]


def test_a_failing_rank_surfaces_its_traceback():
    with pytest.raises(RankError, match=r"(?s)rank 1 of 2 raised.*KeyError: 'rank one broke'"):
        run_on_ranks(_fails_on_rank_one, 2)


def test_a_rank_that_dies_is_reported_at_once():
    with pytest.raises(RankError, match=r"died without a result \(exit codes \[3, 3\]\)"):
        run_on_ranks(_dies, 2, timeout=600)  # well before the time-out


def test_a_hanging_run_times_out():
    with pytest.raises(RankError, match="timed out"):
        run_on_ranks(_sleeps, 2, timeout=3)


def test_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        run_on_ranks(3, 2)
    with pytest.raises(ValueError, match="world_size"):
        run_on_ranks(_all_reduce, 0)
    with pytest.raises(ValueError, match="timeout"):
        run_on_ranks(_all_reduce, 2, timeout=0)
    assert 0 < free_port() < 65536
