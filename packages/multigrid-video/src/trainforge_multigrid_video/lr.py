"""``MultigridLR``: the multigrid step schedule as a ``torch.optim.lr_scheduler.LRScheduler``.

Iterations per epoch change from one long-cycle phase to the next, so the scheduler is
stepped in *fractional epochs* (``epoch + i / iters_this_epoch``, as SlowFast's
``tools/train_net.py`` calls ``lr_policy.get_lr_at_epoch``). The LR is ``base_lr *
lr_factor_at(epoch)`` with the linear warm-up of ``facebookresearch/SlowFast:
slowfast/utils/lr_policy.py`` (from ``warmup_start_lr`` to the schedule's LR at
``warmup_epochs``; the warm-up is not rescaled by the multigrid epoch factor).
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from trainforge_multigrid_video.schedule import MultigridSchedule


class MultigridLR(LRScheduler):
    """Piecewise-constant multigrid LR with linear warm-up, stepped in fractional epochs.

    Args:
        optimizer: the wrapped optimizer; each param group's initial ``lr`` is its base LR
            unless ``base_lr`` is given (then every group uses it).
        schedule: the :class:`MultigridSchedule`.
        base_lr: the baseline's LR at the baseline batch size (SOLVER.BASE_LR).
        warmup_epochs: linear warm-up length in epochs (SOLVER.WARMUP_EPOCHS, default 0).
        warmup_start_lr: the LR at epoch 0 of the warm-up (SOLVER.WARMUP_START_LR, 0.01),
            scaled per group by ``group_base / base_lr`` when the groups differ.
        iters_per_epoch: optional; lets ``step()`` without an argument advance by
            ``1 / iters_per_epoch`` epochs. Update it with :meth:`set_iters_per_epoch` when
            the long cycle changes. ``step(epoch)`` with an explicit epoch always works.

    Usage: ``sched.step(epoch + (i + 1) / len(loader))`` after each ``optimizer.step()``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: MultigridSchedule,
        base_lr: float | None = None,
        warmup_epochs: float = 0.0,
        warmup_start_lr: float = 0.01,
        iters_per_epoch: int | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if not isinstance(schedule, MultigridSchedule):
            raise TypeError(f"schedule must be a MultigridSchedule, got {type(schedule).__name__}")
        if base_lr is not None and not (
            isinstance(base_lr, int | float) and math.isfinite(base_lr) and base_lr > 0
        ):
            raise ValueError(f"base_lr must be a positive finite number, got {base_lr!r}")
        if not (isinstance(warmup_epochs, int | float) and 0 <= warmup_epochs < schedule.max_epoch):
            raise ValueError(
                f"warmup_epochs must be in [0, {schedule.max_epoch}), got {warmup_epochs!r}"
            )
        if not (isinstance(warmup_start_lr, int | float) and warmup_start_lr >= 0):
            raise ValueError(f"warmup_start_lr must be a number >= 0, got {warmup_start_lr!r}")
        self.schedule = schedule
        self.warmup_epochs = float(warmup_epochs)
        self.warmup_start_lr = float(warmup_start_lr)
        self.epoch = 0.0
        self._increment: float | None = None
        if iters_per_epoch is not None:
            self.set_iters_per_epoch(iters_per_epoch)
        if base_lr is not None:
            for g in optimizer.param_groups:
                g["lr"] = float(base_lr)
                g.pop("initial_lr", None)
        self._ref_lr = float(base_lr) if base_lr is not None else None
        super().__init__(optimizer)

    def set_iters_per_epoch(self, n: int) -> None:
        """Iterations of the current epoch, for argument-less ``step()``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"iters_per_epoch must be a positive int, got {n!r}")
        self._increment = 1.0 / n

    def lr_at(self, epoch: float, base_lr: float) -> float:
        """The LR at fractional ``epoch`` for a group whose base LR is ``base_lr``."""
        lr = base_lr * self.schedule.lr_factor_at(epoch)
        if epoch < self.warmup_epochs:
            ref = self._ref_lr if self._ref_lr is not None else self.base_lrs[0]
            start = self.warmup_start_lr * base_lr / ref
            end = base_lr * self.schedule.lr_factor_at(self.warmup_epochs)
            lr = start + epoch * (end - start) / self.warmup_epochs
        return lr

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.lr_at(self.epoch, b) for b in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:  # type: ignore[override]
        """Move to fractional ``epoch`` (or advance by ``1/iters_per_epoch``)."""
        if not hasattr(self, "base_lrs") or self._step_count == 0:
            # LRScheduler.__init__'s initial step: epoch 0.
            pass
        elif epoch is None:
            if self._increment is None:
                raise ValueError(
                    "step() without an epoch needs iters_per_epoch (set_iters_per_epoch(n)); "
                    "or call step(epoch) with the fractional epoch"
                )
            self.epoch += self._increment
        else:
            if isinstance(epoch, bool) or not isinstance(epoch, int | float):
                raise TypeError(f"epoch must be a number, got {epoch!r}")
            if not math.isfinite(epoch) or epoch < 0:
                raise ValueError(f"epoch must be a finite number >= 0, got {epoch!r}")
            self.epoch = float(epoch)
        self._step_count += 1
        self.last_epoch += 1
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule")}
        state["schedule_fingerprint"] = _fingerprint(self.schedule)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        fp = state.pop("schedule_fingerprint", None)
        if fp is not None and fp != _fingerprint(self.schedule):
            raise ValueError(
                "state_dict was saved with another multigrid schedule "
                f"(saved {fp}, this one {_fingerprint(self.schedule)})"
            )
        self.__dict__.update(state)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr


def _fingerprint(schedule: MultigridSchedule) -> list[Any]:
    return [schedule.max_epoch, list(schedule.lr_boundaries), list(schedule.lr_factors)]
