"""Metadata conditioning, then cooldown: one run, one optimizer, one LR schedule.

Reference (``princeton-pli/MeCo:run_configs/dclm_1.6b_160b_meco_stage{1,2}.yaml`` and its
README): stage 1 trains on URL-conditioned data; at 90% of ``max_steps`` (step 36,000 of
40,000) stage 2 resumes *the same checkpoint* with only the data-loader state deleted, so the
optimizer state, the scheduler and the step continue, and trains on plain documents from a
disjoint pool ("DCLM-cooldown"). The LR follows a single cosine with 5% warm-up and a floor
of 0.1 x peak (``trainer.py: min_lr_bound``) across the switch.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch.utils.data import IterableDataset, get_worker_info

log = logging.getLogger(__name__)

Phase = Literal["metadata", "cooldown"]
T = TypeVar("T")
# princeton-pli/MeCo README: cooldown = the last 10% of steps (36k -> 40k of 40k).
COOLDOWN_FRACTION = 0.1
# princeton-pli/MeCo:run_configs/*.yaml: warmup_ratio 0.05, min_lr_ratio 0.1, cosine.
WARMUP_RATIO = 0.05
MIN_LR_RATIO = 0.1


def _check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"cooldown_fraction must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MeCoSchedule:
    """Which phase a (0-based) optimizer step belongs to.

    ``cooldown_start = round((1 - cooldown_fraction) * total_steps)`` (Python's ``round``);
    steps ``>= cooldown_start`` are cooldown. ``cooldown_fraction=0`` is the no-cooldown
    ablation (metadata to the end); 1 is rejected (there would be no metadata phase).
    """

    total_steps: int
    cooldown_fraction: float = COOLDOWN_FRACTION

    def __post_init__(self) -> None:
        if (
            isinstance(self.total_steps, bool)
            or not isinstance(self.total_steps, int)
            or self.total_steps <= 0
        ):
            raise ValueError(f"total_steps must be a positive integer, got {self.total_steps!r}")
        _check_fraction(self.cooldown_fraction)

    @property
    def cooldown_start(self) -> int:
        return round((1.0 - self.cooldown_fraction) * self.total_steps)

    @property
    def cooldown_steps(self) -> int:
        return self.total_steps - self.cooldown_start

    def phase(self, step: int) -> Phase:
        """``"metadata"`` before :attr:`cooldown_start`, ``"cooldown"`` from it on."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        return "cooldown" if step >= self.cooldown_start else "metadata"


def meco_lr_lambda(
    total_steps: int, warmup_ratio: float = WARMUP_RATIO, min_lr_ratio: float = MIN_LR_RATIO
) -> Callable[[int], float]:
    """The reference's LR multiplier: linear warm-up over ``ceil(warmup_ratio * total)``
    steps, then a cosine from 1 down to ``min_lr_ratio`` at ``total_steps``.

    It is transformers' ``get_cosine_schedule_with_warmup`` wrapped by
    ``princeton-pli/MeCo:trainer.py: min_lr_bound`` (equivalently ``lr_scheduler_type=
    "cosine_with_min_lr"`` with ``min_lr_rate=0.1``). Wrap the one optimizer in one
    ``LambdaLR`` for the whole run: the cooldown continues the same curve.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if not isinstance(warmup_ratio, int | float) or not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio!r}")
    if not isinstance(min_lr_ratio, int | float) or not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    warmup = math.ceil(
        total_steps * warmup_ratio
    )  # transformers TrainingArguments.get_warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        cosine = max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return min_lr_ratio + (1.0 - min_lr_ratio) * cosine

    return factor


def split_pools(
    items: Sequence[T], cooldown_fraction: float = COOLDOWN_FRACTION, seed: int = 0
) -> tuple[list[T], list[T]]:
    """Split documents into disjoint metadata and cooldown pools (a seeded shuffle of indices),
    like the reference's separate "DCLM-cooldown" pool. The cooldown pool gets
    ``round(cooldown_fraction * len(items))`` items (at least 1); order is kept in each pool."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a sequence, got {type(items).__name__}")
    fraction = _check_fraction(cooldown_fraction)
    if fraction == 0.0:
        raise ValueError("cooldown_fraction must be > 0 to split off a cooldown pool")
    if len(items) < 2:
        raise ValueError(f"need at least 2 items to split into two pools, got {len(items)}")
    n_cool = min(len(items) - 1, max(1, round(fraction * len(items))))
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cool = set(order[:n_cool])
    return (
        [x for i, x in enumerate(items) if i not in cool],
        [x for i, x in enumerate(items) if i in cool],
    )


def _cycle(source: Iterable[T] | Callable[[], Iterable[T]], name: str) -> Iterator[T]:
    """Endless iteration: re-iterate re-iterable sources; a one-shot iterator that runs out
    is an error (the phase would silently get fewer examples)."""
    for epoch in itertools.count():
        iterable = source() if callable(source) and not hasattr(source, "__iter__") else source
        it = iter(iterable)  # type: ignore[arg-type]
        if epoch > 0 and it is source:
            raise RuntimeError(
                f"{name} is a one-shot iterator and ran out; pass a re-iterable "
                "(list, dataset) or a callable that returns a fresh iterator"
            )
        empty = True
        for item in it:
            empty = False
            yield item
        if empty:
            raise ValueError(f"{name} yielded no examples")
        if epoch == 0:
            log.info("%s exhausted; starting its epoch 2", name)


def _check_index(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _indexable(source: Any) -> bool:
    return hasattr(source, "__len__") and hasattr(source, "__getitem__")


class _IndexStream:
    """Position ``p`` of an endless stream over a sized pool: epoch ``p // n``, the epoch's
    permutation (identity without shuffle) at ``p % n``. Pure arithmetic, so any rank can
    start anywhere (resume) and every rank agrees on what each position holds."""

    def __init__(self, pool: Any, name: str, shuffle: bool, seed: int) -> None:
        self.pool, self.name, self.shuffle, self.seed = pool, name, shuffle, seed
        self.n = len(pool)
        if self.n == 0:
            raise ValueError(f"{name} yielded no examples")
        self._epoch, self._order = -1, list(range(self.n))

    def order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            order = list(range(self.n))
            if self.shuffle:
                # A string seed: the same permutation in every process (no hash randomisation).
                random.Random(f"meco:{self.seed}:{self.name}:{epoch}").shuffle(order)
            self._epoch, self._order = epoch, order
        return self._order

    def __getitem__(self, position: int) -> Any:
        epoch, offset = divmod(position, self.n)
        return self.pool[self.order(epoch)[offset]]


class MeCoDataset(IterableDataset):
    """Yields the examples of each optimizer step: from ``metadata_source`` during the
    metadata phase, then from ``cooldown_source`` (plain documents, a disjoint pool) from
    :attr:`MeCoSchedule.cooldown_start` on; stops after ``schedule.total_steps`` steps.

    ``examples_per_step`` is the **global** number of examples per optimizer step (all ranks,
    all accumulation micro-batches). Each pool is read as an endless stream, epoch after
    epoch (re-iterated when exhausted); optimizer step ``s`` takes the next
    ``examples_per_step`` positions of its phase's stream (the cooldown stream starts afresh
    at the switch, like the reference deleting its data state).

    **Sharded across ranks** (``rank``, ``world_size`` > 1; sized sources such as lists or
    map-style datasets): rank ``r`` takes the positions ``r, r + world_size, ...`` of each
    step's block, ``examples_per_step // world_size`` per step, so the ranks' examples are
    disjoint, their union at every step is exactly what one process would take, every
    document is served exactly once per epoch across ranks, and every rank switches to the
    cooldown pool at the same global step. ``shuffle=True`` permutes each epoch with a
    permutation derived from ``seed`` and the epoch alone (the same on every rank). Positions
    are computed from the step, so ``start_step`` resumes exactly, mid-epoch included.

    The optimizer and LR schedule are the caller's and are never touched here, so they
    continue across the switch. Use ``num_workers`` 0 or 1 in a DataLoader; more workers
    would each replay the stream and are refused. With the HF ``Trainer`` (which dispatches
    one process's batches to every rank), leave ``world_size=1``.
    """

    def __init__(
        self,
        metadata_source: Iterable[Any] | Callable[[], Iterable[Any]],
        cooldown_source: Iterable[Any] | Callable[[], Iterable[Any]],
        schedule: MeCoSchedule,
        examples_per_step: int = 1,
        *,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if not isinstance(schedule, MeCoSchedule):
            raise TypeError(f"schedule must be a MeCoSchedule, got {type(schedule).__name__}")
        for name, src in (
            ("metadata_source", metadata_source),
            ("cooldown_source", cooldown_source),
        ):
            if isinstance(src, str | bytes) or not (hasattr(src, "__iter__") or callable(src)):
                raise TypeError(
                    f"{name} must be an iterable or a callable returning one, "
                    f"got {type(src).__name__}"
                )
        if metadata_source is cooldown_source:
            raise ValueError("metadata_source and cooldown_source must be different pools")
        if (
            isinstance(examples_per_step, bool)
            or not isinstance(examples_per_step, int)
            or examples_per_step <= 0
        ):
            raise ValueError(
                f"examples_per_step must be a positive integer, got {examples_per_step!r}"
            )
        if (
            isinstance(start_step, bool)
            or not isinstance(start_step, int)
            or not 0 <= start_step <= schedule.total_steps
        ):
            raise ValueError(f"start_step must be in [0, total_steps], got {start_step!r}")
        world_size = _check_index(world_size, "world_size")
        rank = _check_index(rank, "rank")
        if world_size < 1:
            raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
        if examples_per_step % world_size:
            raise ValueError(
                f"examples_per_step={examples_per_step} (global, per optimizer step) must be "
                f"divisible by world_size={world_size}"
            )
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
        seed = _check_index(seed, "seed")
        if world_size > 1 or shuffle:
            for name, src in (
                ("metadata_source", metadata_source),
                ("cooldown_source", cooldown_source),
            ):
                if not _indexable(src):
                    raise TypeError(
                        f"{name} must be sized and indexable (a list, PackedSequences, a "
                        f"map-style dataset) to shard across ranks or shuffle, got "
                        f"{type(src).__name__}"
                    )
        self.metadata_source, self.cooldown_source = metadata_source, cooldown_source
        self.schedule, self.examples_per_step, self.start_step = (
            schedule,
            examples_per_step,
            start_step,
        )
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.local_examples_per_step = examples_per_step // world_size
        self.step = start_step  # the step of the next example to be yielded
        self.examples_served = 0  # examples yielded by this object (in this process)

    def __len__(self) -> int:
        return (self.schedule.total_steps - self.start_step) * self.local_examples_per_step

    @property
    def phase(self) -> Phase:
        """The phase of the next example to be yielded."""
        return self.schedule.phase(min(self.step, self.schedule.total_steps - 1))

    def positions(self, step: int) -> tuple[Phase, list[int]]:
        """The phase of global ``step`` and the stream positions this rank serves in it."""
        phase = self.schedule.phase(step)
        first = step if phase == "metadata" else step - self.schedule.cooldown_start
        base = first * self.examples_per_step
        return phase, [
            base + self.rank + self.world_size * j for j in range(self.local_examples_per_step)
        ]

    def _indexed(self) -> bool:
        return (
            self.world_size > 1
            or self.shuffle
            or (_indexable(self.metadata_source) and _indexable(self.cooldown_source))
        )

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            raise RuntimeError(
                f"MeCoDataset in a DataLoader with num_workers={info.num_workers}: every "
                "worker would replay the same stream; use num_workers=0 or 1"
            )
        if self._indexed():
            yield from self._iter_indexed()
            return
        meta = _cycle(self.metadata_source, "metadata_source")
        cool: Iterator[Any] | None = None
        for step in range(self.start_step, self.schedule.total_steps):
            self.step = step
            if self.schedule.phase(step) == "metadata":
                source = meta
            else:
                if cool is None:
                    log.info(
                        "MeCo: switching to the cooldown source at step %d of %d",
                        step,
                        self.schedule.total_steps,
                    )
                    cool = _cycle(self.cooldown_source, "cooldown_source")
                source = cool
            for _ in range(self.examples_per_step):
                item = next(source)
                self.examples_served += 1
                yield item
        self.step = self.schedule.total_steps

    def _iter_indexed(self) -> Iterator[Any]:
        sources = {"metadata": self.metadata_source, "cooldown": self.cooldown_source}
        streams: dict[str, _IndexStream] = {}  # built on first use (a pool may never be read)
        for step in range(self.start_step, self.schedule.total_steps):
            self.step = step
            phase, positions = self.positions(step)
            if step == self.schedule.cooldown_start:
                log.info(
                    "MeCo: switching to the cooldown source at step %d of %d (rank %d)",
                    step,
                    self.schedule.total_steps,
                    self.rank,
                )
            if phase not in streams:
                streams[phase] = _IndexStream(
                    sources[phase], f"{phase}_source", self.shuffle, self.seed
                )
            stream = streams[phase]
            for position in positions:
                item = stream[position]
                self.examples_served += 1
                yield item
        self.step = self.schedule.total_steps
