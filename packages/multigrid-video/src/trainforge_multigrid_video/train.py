"""A plain training loop that runs a :class:`MultigridSchedule` end to end (used by the demo,
the benchmark and the slow test). A baseline is the same loop with
``MultigridSchedule(..., long_cycle=False, short_cycle=False)``.

Per epoch: :func:`update_long_cycle` sets the sampler's shape and the SubBatchNorm split
count (no rebuild, no checkpoint reload); the loader yields short-cycle batches; the LR is
stepped in fractional epochs. Wall time counts training only (evaluation excluded) and is
split into data time (building the batch) and step time (forward, backward, update).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from trainforge_multigrid_video.lr import MultigridLR
from trainforge_multigrid_video.sampler import (
    ShortCycleBatchSampler,
    _per_process_shape,
    update_long_cycle,
)
from trainforge_multigrid_video.schedule import MultigridSchedule
from trainforge_multigrid_video.subbn import convert_to_sub_bn, precise_bn

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What one training run measured."""

    accuracy: float
    iterations: int
    examples: int
    wall_s: float
    data_s: float
    step_s: float
    epochs: int
    precise_bn_s: float = 0.0
    curve_wall: list[float] = field(default_factory=list)
    curve_acc: list[float] = field(default_factory=list)
    curve_iters: list[int] = field(default_factory=list)
    phase_stats: list[dict[str, float]] = field(default_factory=list)

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.wall_s if self.wall_s > 0 else float("nan")


@torch.no_grad()
def evaluate(model: nn.Module, dataset: torch.utils.data.Dataset, batch_size: int = 64) -> float:
    """Top-1 accuracy on ``dataset`` (at its default shape), in eval mode."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        correct += int((model(x).argmax(-1) == y).sum())
        total += int(y.numel())
    model.train(was)
    return correct / max(total, 1)


def train_schedule(
    model: nn.Module,
    train_set: torch.utils.data.Dataset,
    test_set: torch.utils.data.Dataset,
    schedule: MultigridSchedule,
    *,
    base_lr: float = 0.05,
    weight_decay: float = 1e-4,
    warmup_epochs: float = 0.0,
    base_rate: int = 1,
    seed: int = 0,
    eval_points: int = 8,
    precise_bn_batches: int = 200,
) -> RunResult:
    """Train ``model`` (its BatchNorms become SubBatchNorms) on ``train_set`` (indexed by
    :class:`GridIndex`) with ``schedule``; evaluate about ``eval_points`` times.

    Before each evaluation the BN statistics are recomputed (precise BN, as SlowFast's
    Kinetics configs: ``BN.USE_PRECISE_STATS``, ``NUM_BATCHES_PRECISE: 200``) over at most
    ``precise_bn_batches`` training batches at the current long-cycle shape without short
    cycles (0 turns it off); this time is reported in ``precise_bn_s`` and, like the
    evaluation, not counted in the training wall time."""
    if not isinstance(schedule, MultigridSchedule):
        raise TypeError(f"schedule must be a MultigridSchedule, got {type(schedule).__name__}")
    if not isinstance(eval_points, int) or eval_points < 1:
        raise ValueError(f"eval_points must be a positive int, got {eval_points!r}")
    if (
        isinstance(precise_bn_batches, bool)
        or not isinstance(precise_bn_batches, int)
        or precise_bn_batches < 0
    ):
        raise ValueError(f"precise_bn_batches must be an int >= 0, got {precise_bn_batches!r}")
    torch.manual_seed(seed)
    if any(type(m) in (nn.BatchNorm2d, nn.BatchNorm3d) for m in model.modules()):
        convert_to_sub_bn(model)
    # SGD with momentum 0.9 and weight decay 1e-4, as SlowFast's Kinetics configs.
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9, weight_decay=weight_decay)
    sched = MultigridLR(
        opt, schedule, base_lr=base_lr, warmup_epochs=warmup_epochs, warmup_start_lr=base_lr / 10
    )
    gen = torch.Generator().manual_seed(seed)
    sampler = ShortCycleBatchSampler.from_schedule(
        RandomSampler(range(len(train_set)), generator=gen), schedule, 0, base_rate
    )
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=0)
    every = max(1, schedule.max_epoch // eval_points)
    res = RunResult(0.0, 0, 0, 0.0, 0.0, 0.0, schedule.max_epoch)
    model.train()
    for epoch in range(schedule.max_epoch):
        phase = update_long_cycle(
            schedule, epoch, sampler=sampler, model=model, scheduler=sched, base_rate=base_rate
        )
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {epoch} (phase {phase}); lower base_lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            t2 = time.perf_counter()
            res.data_s += t1 - t0
            res.step_s += t2 - t1
            res.iterations += 1
            res.examples += int(y.numel())
        if (epoch + 1) % every == 0 or epoch + 1 == schedule.max_epoch:
            if precise_bn_batches:
                t0 = time.perf_counter()
                b, t, s = _per_process_shape(schedule, epoch)
                pbn = ShortCycleBatchSampler(
                    RandomSampler(range(len(train_set)), generator=gen),
                    b,
                    s,
                    schedule.crop_size,
                    t,
                    short_cycle=False,
                    sampling_rate=schedule.sampling_rate_range(epoch, base_rate),
                )
                precise_bn(model, DataLoader(train_set, batch_sampler=pbn), precise_bn_batches)
                res.precise_bn_s += time.perf_counter() - t0
            res.curve_wall.append(res.data_s + res.step_s)
            res.curve_acc.append(evaluate(model, test_set))
            res.curve_iters.append(res.iterations)
            log.info("epoch %d/%d acc %.3f", epoch + 1, schedule.max_epoch, res.curve_acc[-1])
    res.wall_s = res.data_s + res.step_s
    res.accuracy = res.curve_acc[-1]
    return res
