"""Warm-up / stable / decay learning-rate schedule (Levanter's, which the paper used).

Factor of the peak rate at step s of T (warm-up W steps, decay fraction d):

- warm-up ``s < W``: ``s / W`` (linear from 0, as ``optax.linear_schedule``);
- stable: 1 until ``T - d T``;
- decay over the last ``d T`` steps to ``min_lr_ratio``: linear, or cosine.

``decay=None`` decays over everything after warm-up (Levanter's default: the plain
"warm-up + cosine" of the AdamW-family baselines). Muon's 130M baseline is linear WSD with
``decay=0.8`` and no warm-up. Source: ``stanford-crfm/levanter:src/levanter/optim/config.py``
(``lr_scheduler``) and marin's ``lr_schedule`` / ``decay`` knobs.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler


def wsd_factor(
    step: int,
    total_steps: int,
    warmup: int = 0,
    decay: float | None = None,
    min_lr_ratio: float = 0.0,
    shape: str = "linear",
) -> float:
    """The schedule's multiplier of the peak learning rate at ``step`` (0-based)."""
    _check(total_steps, warmup, decay, min_lr_ratio, shape)
    if step < warmup:
        return step / warmup
    decay_steps = total_steps - warmup if decay is None else round(decay * total_steps)
    decay_steps = min(decay_steps, total_steps - warmup)
    start = total_steps - decay_steps
    if step < start or decay_steps == 0:
        return 1.0
    frac = min(1.0, (step - start) / decay_steps)
    if shape == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * frac
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


def _check(
    total_steps: int, warmup: int, decay: float | None, min_lr_ratio: float, shape: str
) -> None:
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or not 0 <= warmup <= total_steps:
        raise ValueError(
            f"warmup must be an integer in [0, total_steps={total_steps}], got {warmup!r}"
        )
    if decay is not None and not (isinstance(decay, int | float) and 0.0 <= decay <= 1.0):
        raise ValueError(f"decay must be a fraction in [0, 1] or None, got {decay!r}")
    if not (isinstance(min_lr_ratio, int | float) and 0.0 <= min_lr_ratio <= 1.0):
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")
    if shape not in ("linear", "cosine"):
        raise ValueError(f"shape must be 'linear' or 'cosine', got {shape!r}")


class WarmupStableDecay(LRScheduler):
    """:func:`wsd_factor` as a ``torch.optim.lr_scheduler.LRScheduler`` (step once per
    optimiser step). Each param group keeps its own base rate (Muon's AdamW groups stay at
    ``adam_lr_ratio`` times the matrix rate)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup: int = 0,
        decay: float | None = None,
        min_lr_ratio: float = 0.0,
        shape: str = "linear",
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        _check(total_steps, warmup, decay, min_lr_ratio, shape)
        self.total_steps, self.warmup, self.decay = total_steps, warmup, decay
        self.min_lr_ratio, self.shape = min_lr_ratio, shape
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        f = wsd_factor(
            min(self.last_epoch, self.total_steps),
            self.total_steps,
            self.warmup,
            self.decay,
            self.min_lr_ratio,
            self.shape,
        )
        return [base * f for base in self.base_lrs]
