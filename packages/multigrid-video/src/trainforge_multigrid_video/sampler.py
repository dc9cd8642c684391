"""Short-cycle batching: a batch sampler whose batch size and crop cycle every iteration, the
dataset wrapper that applies each batch's shape, and the per-epoch long-cycle update.

Written from reading ``facebookresearch/SlowFast:slowfast/datasets/multigrid_helper.py``
(``ShortCycleBatchSampler``), ``facebookresearch/SlowFast:slowfast/datasets/kinetics.py``
(the crop per short-cycle id) and ``facebookresearch/SlowFast:tools/train_net.py`` (the
long-cycle update before each epoch). The reference yields ``(index, cycle_id)`` and lets
the dataset read the crop from the global cfg; here each index carries its crop, frame
count and stride range, so DataLoader workers need no shared state.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from torch import nn
from torch.utils.data import Dataset, Sampler

from trainforge_multigrid_video.schedule import (
    DEFAULT_SHORT_FACTORS,
    MultigridSchedule,
    Phase,
    short_cycle_pairs,
)
from trainforge_multigrid_video.subbn import set_num_splits


class GridIndex(NamedTuple):
    """One sample request: dataset ``index`` at spatial ``crop`` with ``num_frames``
    frames, temporal stride drawn from ``[min_rate, max_rate]``; ``cycle`` is the
    short-cycle position (0, 1: short crops; 2: the long-cycle crop)."""

    index: int
    cycle: int
    crop: int
    num_frames: int
    min_rate: int = 1
    max_rate: int = 1

    def draw_rate(self, rng: random.Random | None = None) -> int:
        """A stride drawn uniformly from ``[min_rate, max_rate]`` (SlowFast
        get_random_sampling_rate)."""
        return (rng or random).randint(self.min_rate, self.max_rate)


def _check_pos_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class ShortCycleBatchSampler(Sampler[list[GridIndex]]):
    """Batches of :class:`GridIndex` whose (batch size, crop) cycle through the short cycle.

    Args:
        sampler: a ``torch.utils.data.Sampler`` over dataset indices (``RandomSampler``,
            ``DistributedSampler``, ...); ``set_epoch`` is forwarded to it.
        batch_size: the long-cycle batch per process (``m * B / world_size``).
        crop_size: the long-cycle crop.
        default_crop_size: the baseline crop ``S`` (short-cycle crops are fractions of it).
        num_frames: the long-cycle frame count.
        factors: the two short-cycle spatial factors (SlowFast SHORT_CYCLE_FACTORS).
        short_cycle: ``False`` gives plain batches of ``batch_size`` at ``crop_size``.
        drop_last: drop the last incomplete batch (keep ``True`` with SubBatchNorm).
        sampling_rate: ``(min, max)`` temporal stride range given to every index.

    Batch sizes cycle ``[B*f0, B*f1, B]`` with ``f_i = round((crop / (c_i * S))**2)``
    (``[4B, 2B, B]`` at the full crop, ``[2B, B, B]`` at ``S/sqrt 2``), so ``B * T *
    crop**2`` stays nearly constant. ``len()`` is ``ceil`` (``floor`` with ``drop_last``) of
    ``N / mean(batch sizes)``, as the reference (the exact count can differ by one batch).
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        crop_size: int,
        default_crop_size: int,
        num_frames: int = 1,
        factors: Sequence[float] = DEFAULT_SHORT_FACTORS,
        short_cycle: bool = True,
        drop_last: bool = True,
        sampling_rate: tuple[int, int] = (1, 1),
    ) -> None:
        if not isinstance(sampler, Sampler):
            raise TypeError(
                f"sampler must be a torch.utils.data.Sampler, got {type(sampler).__name__}"
            )
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
        if not isinstance(short_cycle, bool):
            raise TypeError(f"short_cycle must be a bool, got {short_cycle!r}")
        self.sampler = sampler
        self.drop_last = drop_last
        self.short_cycle = short_cycle
        self.default_crop_size = _check_pos_int("default_crop_size", default_crop_size)
        self.factors = tuple(factors)
        if len(self.factors) != 2:
            raise ValueError(f"factors must hold 2 short-cycle factors, got {factors!r}")
        self.set_long_cycle(batch_size, num_frames, crop_size, sampling_rate)

    def set_long_cycle(
        self,
        batch_size: int,
        num_frames: int,
        crop_size: int,
        sampling_rate: tuple[int, int] = (1, 1),
    ) -> None:
        """Switch to a new long-cycle shape (no new sampler or loader needed)."""
        _check_pos_int("batch_size", batch_size)
        _check_pos_int("num_frames", num_frames)
        _check_pos_int("crop_size", crop_size)
        if crop_size > self.default_crop_size:
            raise ValueError(
                f"crop_size must be <= default_crop_size={self.default_crop_size}, got {crop_size}"
            )
        if (
            not isinstance(sampling_rate, tuple | list)
            or len(sampling_rate) != 2
            or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in sampling_rate)
            or sampling_rate[0] > sampling_rate[1]
        ):
            raise ValueError(
                "sampling_rate must be (min, max) positive ints with min <= max, "
                f"got {sampling_rate!r}"
            )
        self.batch_size = batch_size
        self.num_frames = num_frames
        self.crop_size = crop_size
        self.sampling_rate = (int(sampling_rate[0]), int(sampling_rate[1]))
        if self.short_cycle:
            self.pairs = short_cycle_pairs(
                batch_size, crop_size, self.default_crop_size, self.factors
            )
        else:
            self.pairs = [(batch_size, crop_size)]

    @property
    def batch_sizes(self) -> list[int]:
        return [b for b, _ in self.pairs]

    @property
    def crops(self) -> list[int]:
        return [c for _, c in self.pairs]

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the wrapped sampler (``DistributedSampler`` reshuffles with it)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[GridIndex]]:
        n_cycle = len(self.pairs)
        counter = 0
        size, crop = self.pairs[0]
        lo, hi = self.sampling_rate
        batch: list[GridIndex] = []
        for idx in self.sampler:
            cyc = counter % n_cycle if n_cycle > 1 else 2
            batch.append(GridIndex(int(idx), cyc, crop, self.num_frames, lo, hi))
            if len(batch) == size:
                yield batch
                counter += 1
                size, crop = self.pairs[counter % n_cycle]
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        avg = sum(self.batch_sizes) / len(self.pairs)
        n = len(self.sampler)  # type: ignore[arg-type]
        return math.floor(n / avg) if self.drop_last else math.ceil(n / avg)

    @classmethod
    def from_schedule(
        cls,
        sampler: Sampler[int],
        schedule: MultigridSchedule,
        epoch: int = 0,
        base_rate: int = 1,
        drop_last: bool = True,
    ) -> ShortCycleBatchSampler:
        """The sampler for ``schedule`` at ``epoch`` (per-process batch, short cycles as the
        schedule says, stride range from :meth:`MultigridSchedule.sampling_rate_range`)."""
        if not isinstance(schedule, MultigridSchedule):
            raise TypeError(f"schedule must be a MultigridSchedule, got {type(schedule).__name__}")
        b, t, s = _per_process_shape(schedule, epoch)
        return cls(
            sampler,
            b,
            s,
            schedule.crop_size,
            t,
            schedule.short_factors,
            schedule.short_cycle,
            drop_last,
            schedule.sampling_rate_range(epoch, base_rate),
        )


def _per_process_shape(schedule: MultigridSchedule, epoch: float) -> tuple[int, int, int]:
    b, t, s = schedule.shape_at(epoch)
    if b % schedule.world_size:
        raise ValueError(
            f"global batch {b} at epoch {epoch} does not divide by world_size={schedule.world_size}"
        )
    return b // schedule.world_size, t, s


def update_long_cycle(
    schedule: MultigridSchedule,
    epoch: int,
    *,
    sampler: ShortCycleBatchSampler | None = None,
    model: nn.Module | None = None,
    scheduler: Any = None,
    base_rate: int = 1,
) -> Phase:
    """Before epoch ``epoch``: set the sampler's long-cycle shape and the model's
    SubBatchNorm split count for the phase (no model rebuild, no checkpoint reload, unlike
    SlowFast's train_net). Forwards ``set_epoch`` to the sampler. With a
    :class:`MultigridLR` ``scheduler``, moves it to ``epoch`` and sets its iterations per
    epoch to ``len(sampler)``, so ``scheduler.step()`` after each ``optimizer.step()``
    advances in fractional epochs. Returns the phase."""
    if not isinstance(schedule, MultigridSchedule):
        raise TypeError(f"schedule must be a MultigridSchedule, got {type(schedule).__name__}")
    phase = schedule.phase_at(epoch)
    if sampler is not None:
        if not isinstance(sampler, ShortCycleBatchSampler):
            raise TypeError(
                f"sampler must be a ShortCycleBatchSampler, got {type(sampler).__name__}"
            )
        b, t, s = _per_process_shape(schedule, epoch)
        sampler.set_long_cycle(b, t, s, schedule.sampling_rate_range(epoch, base_rate))
        sampler.set_epoch(int(epoch))
    if model is not None:
        set_num_splits(model, schedule.bn_splits_at(epoch))
    if scheduler is not None:
        from trainforge_multigrid_video.lr import MultigridLR

        if not isinstance(scheduler, MultigridLR):
            raise TypeError(f"scheduler must be a MultigridLR, got {type(scheduler).__name__}")
        if sampler is not None:
            scheduler.set_iters_per_epoch(max(len(sampler), 1))
        scheduler.step(float(epoch))
    return phase


class MultigridDataset(Dataset):
    """Applies each request's shape: ``dataset[GridIndex(...)]`` returns
    ``transform(base[g.index], g)``; a plain int ``i`` uses ``default`` (crop, frames).

    ``transform(sample, grid_index)`` builds the clip at ``grid_index.crop`` with
    ``grid_index.num_frames`` frames (and a stride from ``grid_index.draw_rate()``).
    """

    def __init__(
        self,
        base: Any,
        transform: Callable[[Any, GridIndex], Any],
        default_crop: int,
        default_frames: int = 1,
    ) -> None:
        if not hasattr(base, "__getitem__") or not hasattr(base, "__len__"):
            raise TypeError(f"base must be a map-style dataset, got {type(base).__name__}")
        if not callable(transform):
            raise TypeError(f"transform must be callable(sample, grid_index), got {transform!r}")
        self.base = base
        self.transform = transform
        self.default = GridIndex(
            0,
            2,
            _check_pos_int("default_crop", default_crop),
            _check_pos_int("default_frames", default_frames),
        )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | GridIndex) -> Any:
        if isinstance(key, GridIndex):
            g = key
        elif isinstance(key, int) and not isinstance(key, bool):
            g = self.default._replace(index=key)
        else:
            raise TypeError(f"key must be an int or a GridIndex, got {key!r}")
        return self.transform(self.base[g.index], g)
