"""The multigrid schedule: long cycles (batch, frames, crop per phase), short cycles (crop per
iteration), the rescaled epoch split, the relative learning rates, the BN split counts, the
sampling-rate ranges and the evaluation epochs.

Written from reading ``facebookresearch/SlowFast:slowfast/utils/multigrid.py``
(``MultigridSchedule.init_multigrid`` / ``get_long_cycle_schedule`` /
``update_long_cycle`` / ``get_current_long_cycle_shape``),
``facebookresearch/SlowFast:slowfast/utils/lr_policy.py`` (``steps_with_relative_lrs`` and
the linear warm-up) and ``facebookresearch/SlowFast:slowfast/utils/misc.py``
(``is_eval_epoch``). No cfg object: plain arguments with the reference's defaults
(``facebookresearch/SlowFast:slowfast/config/defaults.py``, ``_C.MULTIGRID``).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# facebookresearch/SlowFast:slowfast/config/defaults.py (_C.MULTIGRID.*, _C.SOLVER.GAMMA)
DEFAULT_LONG_FACTORS: tuple[tuple[float, float], ...] = (
    (0.25, 0.5**0.5),
    (0.5, 0.5**0.5),
    (0.5, 1.0),
    (1.0, 1.0),
)
"""Long-cycle (frames, spatial) factors of the reference's Kinetics schedule, coarsest first."""
# Spatial-only mode (image models, ``temporal=False``): our choice, not in the reference,
# which only has video; the spatial factors of the video default without the repeats.
DEFAULT_SPATIAL_LONG_FACTORS: tuple[tuple[float, float], ...] = (
    (1.0, 0.5),
    (1.0, 0.5**0.5),
    (1.0, 1.0),
)
"""Long-cycle factors for image models (spatial-only mode): the video default's spatial factors."""
DEFAULT_SHORT_FACTORS: tuple[float, float] = (0.5, 0.5**0.5)
"""Short-cycle spatial factors of the reference (0.5 and 1/sqrt(2) of the current crop)."""
EPOCH_FACTOR = 1.5
BN_BASE_SIZE = 8
EVAL_FREQ = 3
GAMMA = 0.1


@dataclass(frozen=True)
class Phase:
    """One long-cycle phase: epochs ``[start, end)`` train with batch ``batch_mult * B``,
    ``num_frames`` frames and crop ``crop``. ``stage`` is the index of the baseline LR stage
    it belongs to; ``lr_factor`` the LR relative to the base LR (``gamma**stage *
    batch_mult``, the linear-scaling rule on the long-cycle batch only)."""

    stage: int
    batch_mult: int
    num_frames: int
    crop: int
    start: int
    end: int
    lr_factor: float

    @property
    def epochs(self) -> int:
        return self.end - self.start


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_float(name: str, value: object, low: float, high: float, *, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    ok = (v > low if low_open else v >= low) and v <= high and math.isfinite(v)
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")
    return v


class MultigridSchedule:
    """The multigrid schedule of Wu et al. for a baseline stepwise schedule.

    Args:
        batch_size: the baseline global mini-batch ``B`` (clips).
        num_frames: the baseline clip length ``T`` (1 for images).
        crop_size: the baseline spatial crop ``S``.
        lr_steps: the baseline LR step epochs ``[0, s_1, ..., s_K]``, starting at 0 and
            strictly increasing (the reference's ``SOLVER.STEPS``).
        max_epoch: the baseline's last epoch ``E`` (> ``s_K``).
        long_cycle / short_cycle: enable each cycle (the reference's default method uses
            both). With neither, the schedule is the baseline's (one phase per LR stage).
        long_factors: ``(t, s)`` factors of the long-cycle shapes, coarse to fine.
        short_factors: the two short-cycle spatial factors relative to ``crop_size``.
        epoch_factor: the whole schedule is rescaled to ``epoch_factor * max_epoch`` epochs.
        gamma: the baseline's LR decay per step.
        bn_base_size: the per-device batch that BN statistics are computed on.
        world_size: number of data-parallel devices (for the BN choice only).
        eval_freq: evaluations per long-cycle phase.
        temporal: ``False`` for image models: frames stay 1 and only the spatial factors
            are used (``long_factors`` then defaults to ``DEFAULT_SPATIAL_LONG_FACTORS``).
    """

    def __init__(
        self,
        batch_size: int,
        num_frames: int,
        crop_size: int,
        lr_steps: Sequence[int],
        max_epoch: int,
        *,
        long_cycle: bool = True,
        short_cycle: bool = True,
        long_factors: Sequence[tuple[float, float]] | None = None,
        short_factors: Sequence[float] = DEFAULT_SHORT_FACTORS,
        epoch_factor: float = EPOCH_FACTOR,
        gamma: float = GAMMA,
        bn_base_size: int = BN_BASE_SIZE,
        world_size: int = 1,
        eval_freq: int = EVAL_FREQ,
        temporal: bool = True,
    ) -> None:
        self.batch_size = _check_int("batch_size", batch_size)
        self.num_frames = _check_int("num_frames", num_frames)
        self.crop_size = _check_int("crop_size", crop_size)
        self.max_epoch_base = _check_int("max_epoch", max_epoch)
        self.bn_base_size = _check_int("bn_base_size", bn_base_size)
        self.world_size = _check_int("world_size", world_size)
        self.eval_freq = _check_int("eval_freq", eval_freq)
        for name, flag in (("long_cycle", long_cycle), ("short_cycle", short_cycle)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if not isinstance(temporal, bool):
            raise TypeError(f"temporal must be a bool, got {temporal!r}")
        self.long_cycle, self.short_cycle, self.temporal = long_cycle, short_cycle, temporal
        if not temporal and num_frames != 1:
            raise ValueError(f"num_frames must be 1 when temporal=False, got {num_frames}")
        self.epoch_factor = _check_float("epoch_factor", epoch_factor, 0.0, 100.0, low_open=True)
        self.gamma = _check_float("gamma", gamma, 0.0, 1.0, low_open=True)

        steps = list(lr_steps) if isinstance(lr_steps, Sequence) else None
        if not steps or any(isinstance(s, bool) or not isinstance(s, int) for s in steps):
            raise TypeError(f"lr_steps must be a non-empty sequence of ints, got {lr_steps!r}")
        if steps[0] != 0:
            raise ValueError(
                f"lr_steps must start at 0 (the reference's SOLVER.STEPS), got {steps}"
            )
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError(f"lr_steps must be strictly increasing, got {steps}")
        if max_epoch <= steps[-1]:
            raise ValueError(
                f"max_epoch must be larger than the last LR step {steps[-1]}, got {max_epoch}"
            )
        self.lr_steps = steps

        if long_factors is None:
            long_factors = DEFAULT_LONG_FACTORS if temporal else DEFAULT_SPATIAL_LONG_FACTORS
        pairs = [tuple(p) for p in long_factors]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(
                f"long_factors must be a non-empty list of (t, s) pairs, got {long_factors!r}"
            )
        for i, (t, s) in enumerate(pairs):
            _check_float(f"long_factors[{i}][0]", t, 0.0, 1.0, low_open=True)
            _check_float(f"long_factors[{i}][1]", s, 0.0, 1.0, low_open=True)
        if not temporal:
            pairs = [(1.0, s) for _, s in pairs]
        self.long_factors = [(float(t), float(s)) for t, s in pairs]
        sf = list(short_factors)
        if len(sf) != 2:
            raise ValueError(f"short_factors must hold 2 factors, got {short_factors!r}")
        for i, f in enumerate(sf):
            _check_float(f"short_factors[{i}]", f, 0.0, 1.0, low_open=True)
        self.short_factors = (float(sf[0]), float(sf[1]))
        for t, s in self.long_factors:
            if round(num_frames * t) < 1 or round(crop_size * s) < 1:
                raise ValueError(
                    f"long_factors ({t}, {s}) give an empty shape for num_frames={num_frames}, "
                    f"crop_size={crop_size}"
                )

        self.phases, self.lr_boundaries, self.lr_factors, self.max_epoch = self._build()
        for p in self.phases:
            b = p.batch_mult * self.batch_size
            if b % self.world_size:
                raise ValueError(
                    f"batch_size={batch_size}: the phase batch {b} (x{p.batch_mult}) does not "
                    f"divide by world_size={world_size}"
                )
            k = self.bn_splits_at(p.start) if p.epochs else 1
            if (b // self.world_size) % k:
                raise ValueError(
                    f"batch_size={batch_size}: the per-device batch {b // self.world_size} of "
                    f"phase {p} does not divide by its BN split count {k} (per-device batch / "
                    f"bn_base_size={bn_base_size}); use a batch size that is a multiple of "
                    "bn_base_size"
                )
        log.info("multigrid schedule: %s", self.describe())

    # -- construction ----------------------------------------------------------------------
    def _build(self) -> tuple[list[Phase], list[int], list[float], int]:
        T, S, steps, E = self.num_frames, self.crop_size, self.lr_steps, self.max_epoch_base
        if not self.long_cycle:
            # Short cycle only (init_multigrid's elif branch): steps and max epoch are
            # scaled by EPOCH_FACTOR and truncated; the shape never changes. With neither
            # cycle the baseline schedule is returned as is.
            ef = self.epoch_factor if self.short_cycle else 1.0
            bounds = [int(s * ef) for s in steps]
            max_epoch = int(E * ef)
            ends = [*bounds[1:], max_epoch]
            factors = [self.gamma**k for k in range(len(bounds))]
            phases = [Phase(k, 1, T, S, bounds[k], ends[k], factors[k]) for k in range(len(bounds))]
            return phases, bounds, factors, max_epoch

        default_size = float(T * S * S)
        avg_mult: list[float] = []
        long_shapes: list[tuple[int, int, int]] = []
        for t_f, s_f in self.long_factors:
            base_t, base_s = round(T * t_f), round(S * s_f)
            if self.short_cycle:
                # The short-cycle crops use the *unrounded* default-crop factors
                # (SlowFast: DEFAULT_S * SHORT_CYCLE_FACTORS[i]).
                shapes = [
                    (base_t, S * self.short_factors[0]),
                    (base_t, S * self.short_factors[1]),
                    (base_t, float(base_s)),
                ]
            else:
                shapes = [(base_t, float(base_s))]
            mults = [round(default_size / (t * s * s)) for t, s in shapes]
            avg_mult.append(sum(mults) / len(mults))
            long_shapes.append((mults[-1], base_t, base_s))

        # Every LR stage but the last is split over the long-cycle shapes, shape j getting
        # epochs proportional to its average batch multiplier, so every shape gets the same
        # number of iterations (SlowFast get_long_cycle_schedule).
        raw: list[tuple[int, tuple[int, int, int], float]] = []
        total_iters = 0.0
        for k in range(len(steps) - 1):
            span = steps[k + 1] - steps[k]
            for j, shape in enumerate(long_shapes):
                ep = span * avg_mult[j] / sum(avg_mult)
                total_iters += ep / avg_mult[j]
                raw.append((k, shape, ep))
        k_last = len(steps) - 1
        # A single LR stage (lr_steps == [0]) has nothing to split: no saving measured.
        saving = steps[-1] / total_iters if total_iters > 0 else 1.0
        # The fine-tune stage runs the finest long shape with the same iteration saving.
        # SlowFast indexes all_shapes[-1][2], which exists only with short cycles (an
        # IndexError with LONG_CYCLE=True, SHORT_CYCLE=False); we take the last long-cycle
        # shape, which is the same shape whenever the reference runs.
        ft_epochs = (E - steps[-1]) / saving * avg_mult[-1]
        raw.append((k_last, long_shapes[-1], ft_epochs))

        x = E * self.epoch_factor / sum(r[2] for r in raw)
        phases: list[Phase] = []
        cum, prev_end = 0.0, 0
        for k, (m, t, s), ep in raw:
            cum += ep * x
            end = round(cum)
            phases.append(Phase(k, m, t, s, prev_end, end, self.gamma**k * m))
            prev_end = end
        max_epoch = phases[-1].end

        # LR steps: one per phase, the fine-tune phase split at its midpoint, the first
        # half keeping the previous phase's LR (SlowFast init_multigrid).
        bounds = [0] + [p.end for p in phases]
        bounds[-1] = (bounds[-2] + bounds[-1]) // 2
        factors = [p.lr_factor for p in phases]
        factors = [*factors[:-1], factors[-2] if len(factors) > 1 else factors[-1], factors[-1]]
        return phases, bounds, factors, max_epoch

    # -- queries ---------------------------------------------------------------------------
    def _check_epoch(self, epoch: float) -> float:
        if isinstance(epoch, bool) or not isinstance(epoch, int | float):
            raise TypeError(f"epoch must be a number, got {epoch!r}")
        if not math.isfinite(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a finite number >= 0, got {epoch!r}")
        return float(epoch)

    def phase_at(self, epoch: float) -> Phase:
        """The long-cycle phase that epoch ``epoch`` (fractional allowed) belongs to; past
        the end, the last phase (as SlowFast ``get_current_long_cycle_shape``)."""
        e = self._check_epoch(epoch)
        for p in self.phases:
            if e < p.end:
                return p
        return self.phases[-1]

    def shape_at(self, epoch: float) -> tuple[int, int, int]:
        """``(batch_size, num_frames, crop)`` of the long cycle at ``epoch`` (absolute batch)."""
        p = self.phase_at(epoch)
        return p.batch_mult * self.batch_size, p.num_frames, p.crop

    def lr_factor_at(self, epoch: float) -> float:
        """LR relative to the base LR at ``epoch`` (no warm-up; see :class:`MultigridLR`)."""
        e = self._check_epoch(epoch)
        # SlowFast lr_policy.get_step_index: the last boundary <= epoch; past max_epoch the
        # last stage.
        bounds = [*self.lr_boundaries, self.max_epoch]
        ind = len(bounds) - 1
        for i, b in enumerate(bounds):
            if e < b:
                ind = i
                break
        return self.lr_factors[ind - 1]

    def bn_splits_at(self, epoch: float) -> int:
        """SubBatchNorm split count at ``epoch``: per-device batch / ``bn_base_size`` when
        that is above 1, else 1 (SlowFast update_long_cycle)."""
        b, _, _ = self.shape_at(epoch)
        factor = b / self.world_size / self.bn_base_size
        return int(factor) if factor > 1 else 1

    def sync_devices_at(self, epoch: float) -> int:
        """Devices to synchronise BN over when the per-device batch is below
        ``bn_base_size`` (SlowFast's NaiveSyncBatchNorm path); 1 otherwise."""
        b, _, _ = self.shape_at(epoch)
        factor = b / self.world_size / self.bn_base_size
        return int(1.0 / factor) if factor < 1 else 1

    def sampling_rate_range(self, epoch: float, base_rate: int) -> tuple[int, int]:
        """``(min, max)`` temporal stride at ``epoch``: coarse-T clips draw their stride
        uniformly from this range so that they still span the baseline clip's duration
        (SlowFast LONG_CYCLE_SAMPLING_RATE and datasets/utils.get_random_sampling_rate)."""
        _check_int("base_rate", base_rate)
        _, t, _ = self.shape_at(epoch)
        return base_rate, base_rate * (self.num_frames // t)

    def is_eval_epoch(self, epoch: int) -> bool:
        """Whether to evaluate after (0-based) epoch ``epoch``: ``eval_freq`` times per
        phase counted back from its end, and after the last epoch (SlowFast misc.py)."""
        e = _check_int("epoch", epoch, 0)
        if e + 1 == self.max_epoch:
            return True
        prev = 0
        for p in self.phases:
            if e < p.end:
                period = max((p.end - prev) // self.eval_freq + 1, 1)
                return (p.end - 1 - e) % period == 0
            prev = p.end
        return False

    def short_cycle_crops(self, epoch: float) -> list[tuple[int, int]]:
        """The three ``(batch_size, crop)`` pairs the short cycle iterates at ``epoch``
        (one pair, the long-cycle shape, without short cycles)."""
        b, _, s = self.shape_at(epoch)
        if not self.short_cycle:
            return [(b, s)]
        return short_cycle_pairs(b, s, self.crop_size, self.short_factors)

    @property
    def total_iterations_relative(self) -> float:
        """Iterations of the whole schedule in units of baseline epochs (iterations of one
        baseline epoch = N/B), counting short cycles at their average batch."""
        total = 0.0
        for p in self.phases:
            pairs = self.short_cycle_crops(p.start) if p.epochs else [(p.batch_mult, p.crop)]
            avg_b = sum(b for b, _ in pairs) / len(pairs) / self.batch_size
            total += p.epochs / avg_b
        return total

    def describe(self) -> str:
        return "; ".join(
            f"[{p.start},{p.end}) stage {p.stage} m={p.batch_mult} T={p.num_frames} "
            f"S={p.crop} lr x{p.lr_factor:g}"
            for p in self.phases
        )


def short_cycle_pairs(
    batch_size: int, crop: int, default_crop: int, factors: Sequence[float] = DEFAULT_SHORT_FACTORS
) -> list[tuple[int, int]]:
    """The short cycle's ``(batch, crop)`` pairs for long-cycle batch ``batch_size`` and crop
    ``crop``: batch factors ``round((crop / (f * default_crop))**2)`` and crops
    ``round(f * default_crop)``, then the long-cycle pair (SlowFast ShortCycleBatchSampler
    and kinetics.py). A short crop that would exceed the long-cycle crop is capped at it
    with factor 1 (the reference would give a batch factor of 0 there; this never happens
    with its default factors)."""
    _check_int("batch_size", batch_size)
    _check_int("crop", crop)
    _check_int("default_crop", default_crop)
    if crop > default_crop:
        raise ValueError(f"crop must be <= default_crop={default_crop}, got {crop}")
    pairs = []
    for i, f in enumerate(factors):
        _check_float(f"factors[{i}]", f, 0.0, 1.0, low_open=True)
        c = round(f * default_crop)
        m = round((crop / (f * default_crop)) ** 2)
        if m < 1 or c > crop:
            c, m = crop, 1
        pairs.append((batch_size * m, max(c, 1)))
    pairs.append((batch_size, crop))
    return pairs
