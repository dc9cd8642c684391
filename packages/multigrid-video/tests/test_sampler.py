"""ShortCycleBatchSampler, MultigridDataset and update_long_cycle."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from trainforge_multigrid_video import (
    GridIndex,
    MultigridDataset,
    MultigridLR,
    MultigridSchedule,
    ShortCycleBatchSampler,
    convert_to_sub_bn,
    tiny_video_cnn,
    update_long_cycle,
)


def test_batch_sizes_cycle_at_full_and_reduced_crop():
    B = 4
    s = ShortCycleBatchSampler(SequentialSampler(range(1000)), B, 224, 224, num_frames=32)
    assert s.batch_sizes == [4 * B, 2 * B, B] and s.crops == [112, 158, 224]
    sizes = [len(b) for b in s][:6]
    assert sizes == [16, 8, 4, 16, 8, 4]
    s.set_long_cycle(B, 16, 158)
    assert s.batch_sizes == [2 * B, B, B] and s.crops == [112, 158, 158]


@pytest.mark.parametrize("crop", [224, 158])
def test_constant_work_per_batch(crop):
    B, T = 8, 16
    s = ShortCycleBatchSampler(SequentialSampler(range(500)), B, crop, 224, num_frames=T)
    work = [len(b) * b[0].num_frames * b[0].crop ** 2 for b in list(s)[:3]]
    assert max(work) / min(work) - 1 <= 0.03, work


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("n", [100, 97, 28])
def test_every_index_once_per_epoch_and_len(n, drop_last):
    s = ShortCycleBatchSampler(RandomSampler(range(n)), 4, 224, 224, drop_last=drop_last)
    batches = list(s)
    seen = Counter(g.index for b in batches for g in b)
    assert all(v == 1 for v in seen.values())
    avg = sum(s.batch_sizes) / 3
    if drop_last:
        assert len(s) == math.floor(n / avg)
        assert all(len(b) in s.batch_sizes for b in batches)
    else:
        assert set(seen) == set(range(n))
        assert len(s) == math.ceil(n / avg)
    # crop and cycle id travel with every index
    for i, b in enumerate(batches):
        if len(b) in s.batch_sizes and (drop_last or i < len(batches) - 1):
            assert {g.crop for g in b} == {s.crops[i % 3]} and {g.cycle for g in b} == {i % 3}


def test_set_epoch_forwarded_to_distributed_sampler():
    ds = list(range(64))
    parts = []
    for rank in range(2):
        ds_sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        s = ShortCycleBatchSampler(ds_sampler, 2, 224, 224, drop_last=False)
        s.set_epoch(3)
        assert ds_sampler.epoch == 3
        parts.append([g.index for b in s for g in b])
    assert sorted(parts[0] + parts[1]) == ds  # the replicas cover the data once
    ds_sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=0)
    s = ShortCycleBatchSampler(ds_sampler, 2, 224, 224, drop_last=False)
    s.set_epoch(4)
    assert [g.index for b in s for g in b] != parts[0]


def test_no_short_cycle_gives_plain_batches():
    s = ShortCycleBatchSampler(SequentialSampler(range(20)), 4, 160, 224, short_cycle=False)
    assert [len(b) for b in s] == [4] * 5 and {g.crop for b in s for g in b} == {160}


class _Clips:
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return i


def _make(sample, g):
    return torch.full((3, g.num_frames, g.crop, g.crop), float(sample)), sample % 3


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_loop_with_update_long_cycle_and_dataloader(one_thread):
    sched = MultigridSchedule(2, 8, 16, [0, 4, 6], 8)
    ds = MultigridDataset(_Clips(), _make, default_crop=16, default_frames=8)
    sampler = ShortCycleBatchSampler.from_schedule(RandomSampler(range(len(ds))), sched, 0)
    loader = DataLoader(ds, batch_sampler=sampler)
    model = tiny_video_cnn(3, width=4)
    convert_to_sub_bn(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lr = MultigridLR(opt, sched)
    seen_shapes = set()
    for epoch in range(sched.max_epoch):
        phase = update_long_cycle(sched, epoch, sampler=sampler, model=model, scheduler=lr)
        assert lr.epoch == epoch and opt.param_groups[0]["lr"] == pytest.approx(
            0.1 * sched.lr_factor_at(epoch)
        )
        assert lr._increment == pytest.approx(1 / max(len(sampler), 1))
        bn = model[1]
        assert bn.num_splits == sched.bn_splits_at(epoch)
        for x, _y in loader:
            assert x.shape[2] == phase.num_frames
            assert x.shape[0] in sampler.batch_sizes
            seen_shapes.add(tuple(x.shape[1:]))
            if x.shape[0] % bn.num_splits == 0 and epoch % 3 == 0:
                with torch.no_grad():
                    model(x[:, :, :, :8, :8])
    assert {(3, 2, 8, 8), (3, 4, 11, 11), (3, 8, 16, 16)} <= seen_shapes
    # plain int access uses the default shape
    assert ds[3][0].shape == (3, 8, 16, 16)
    assert ds[GridIndex(3, 0, 8, 2)][0].shape == (3, 2, 8, 8)
