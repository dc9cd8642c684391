"""Slow toy: multigrid vs baseline on synthetic moving blobs (spec (d)5), over 3 seeds; and
the evaluation statistics of the training loop (precise BN at the base shape)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainforge_multigrid_video import MultigridDataset, MultigridSchedule, tiny_video_cnn
from trainforge_multigrid_video.sampler import GridIndex
from trainforge_multigrid_video.train import train_schedule

T, S = 8, 16
DIRS = [(0, 1), (0, -1), (1, 0), (-1, 0)]  # right, left, down, up


def _render(index: int, split: int) -> tuple[torch.Tensor, int]:
    """A Gaussian blob moving one pixel per frame in one of 4 directions (the label)."""
    g = torch.Generator().manual_seed(index * 2 + split)
    label = index % 4
    dy, dx = DIRS[label]
    y0, x0 = torch.randint(4, S - 4, (2,), generator=g).tolist()
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    frames = []
    for t in range(T):
        cy, cx = y0 + dy * (t - T // 2) * 0.8, x0 + dx * (t - T // 2) * 0.8
        frames.append(torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0))
    x = torch.stack(frames)[None] + 0.1 * torch.randn(1, T, S, S, generator=g)
    return x, label


def _make(split):
    def transform(i, g):
        x, y = _render(i, split)
        x = x[:, :: T // g.num_frames][:, : g.num_frames]
        if g.crop != S:
            x = F.interpolate(x, size=(g.crop, g.crop), mode="bilinear", antialias=True)
        return x.contiguous(), y

    return transform


def test_eval_uses_precise_bn_statistics_at_the_base_shape():
    """Before evaluation the BN statistics are recomputed at the current long-cycle shape
    without short cycles (the base shape at the end), as the reference's precise BN; the
    momentum statistics of training mixed the short cycle's crops (the 0.1.0 bug that cost
    multigrid several points of accuracy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = MultigridDataset(range(32), _make(0), default_crop=S, default_frames=T)
        sched = MultigridSchedule(8, T, S, [0, 1], 2)
        model = tiny_video_cnn(4, width=4, in_chans=1, seed=0)
        res = train_schedule(model, train, train, sched, eval_points=1)
        assert res.precise_bn_s > 0
        assert sched.shape_at(sched.max_epoch - 1) == (8, T, S)
        x = torch.stack([train[GridIndex(i, 2, S, T)][0] for i in range(32)])
        with torch.no_grad():
            h = model[0](x)
        # 32 clips in 4 equal batches: the mean of the batch means is the dataset mean.
        torch.testing.assert_close(
            model[1].running_mean, h.mean((0, 2, 3, 4)), atol=1e-5, rtol=1e-4
        )
    finally:
        torch.set_num_threads(threads)


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def runs():
    """Baseline and multigrid on the moving-blob task for 3 seeds (512 test clips)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        train = MultigridDataset(range(256), _make(0), default_crop=S, default_frames=T)
        test = MultigridDataset(range(512), _make(1), default_crop=S, default_frames=T)
        steps, E = [0, 4, 6], 8
        scheds = {
            "base": MultigridSchedule(8, T, S, steps, E, long_cycle=False, short_cycle=False),
            "mg": MultigridSchedule(8, T, S, steps, E),
        }
        for seed in SEEDS:
            for arm, sched in scheds.items():
                out[arm, seed] = train_schedule(
                    tiny_video_cnn(4, width=8, in_chans=1, seed=seed),
                    train,
                    test,
                    sched,
                    seed=seed,
                    eval_points=1,
                )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_multigrid_reaches_baseline_with_fewer_iterations(runs):
    """The issue's check: multigrid reaches the baseline's accuracy minus 2 points with at
    most 40% of its iterations, over seeds (the mean over 3 seeds; with precise BN before
    evaluation, as the reference). Calibrated 2026-12-05: baseline 100/100/100%, multigrid
    99.8/96.9/99.6% (seed 1 alone is 3.1 points below; the mean gap is 1.2 points)."""
    base = [runs["base", s].accuracy for s in SEEDS]
    mg = [runs["mg", s].accuracy for s in SEEDS]
    for s in SEEDS:
        assert runs["mg", s].iterations <= 0.40 * runs["base", s].iterations
        assert runs["base", s].accuracy > 0.5  # learnable at this size (chance: 0.25)
        assert runs["mg", s].accuracy > 0.5, (s, mg, base)
    assert sum(mg) / len(mg) >= sum(base) / len(base) - 0.02, (mg, base)
