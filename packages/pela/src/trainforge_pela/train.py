"""The intermediate pre-training loop: train the whole compressed student with
:class:`~trainforge_pela.distill.PELALoss` against the frozen teacher.

Optimiser and schedule follow ``guoyang9/PELA:DeiT/main.py`` (timm ``create_optimizer`` /
``create_scheduler``): AdamW, weight decay 0.05 on matrices only (timm's
``filter_bias_and_bn``), linear warm-up from ``warmup_lr`` then cosine to ``min_lr``
(DeiT defaults 5e-4, 1e-6, 1e-5).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainforge_pela.distill import PELALoss

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """Per-step values of each loss part (unweighted) and the learning rate."""

    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.history.get("total", []))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on matrices, none on biases and norm scales (timm's ``param_groups_weight_decay``)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(
    steps: int, warmup_steps: int, lr: float, warmup_lr: float, min_lr: float
) -> Callable[[int], float]:
    """Multiplier for ``LambdaLR``: linear ``warmup_lr → lr``, then cosine ``lr → min_lr``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (warmup_lr + (lr - warmup_lr) * step / warmup_steps) / lr
        t = (step - warmup_steps) / max(1, steps - warmup_steps)
        return (min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))) / lr

    return factor


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """Iterate ``batches`` again and again (a DataLoader reshuffles each pass)."""
    while True:
        seen = False
        for batch in batches:
            seen = True
            yield batch
        if not seen:
            return


def pela_pretrain(
    loss_fn: PELALoss,
    batches: Iterable[Any],
    steps: int,
    *,
    lr: float = 5e-4,
    weight_decay: float = 0.05,
    warmup_steps: int = 0,
    warmup_lr: float = 1e-6,
    min_lr: float = 1e-5,
    grad_clip: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> PretrainResult:
    """Train ``loss_fn.student`` for ``steps`` steps on ``batches`` (cycled).

    Each batch is ``(inputs, target)`` or ``inputs`` alone (pure distillation). With
    ``optimizer=None`` an AdamW over the student is built (``lr``, ``weight_decay`` on
    matrices) with a warm-up + cosine schedule; a given optimizer is stepped as is.
    ``on_step(step, parts)`` is called after every step.
    """
    if not isinstance(loss_fn, PELALoss):
        raise TypeError(f"loss_fn must be a PELALoss, got {type(loss_fn).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    for name, v in (
        ("lr", lr),
        ("weight_decay", weight_decay),
        ("warmup_lr", warmup_lr),
        ("min_lr", min_lr),
    ):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip!r}")
    if not isinstance(batches, Iterable):
        raise TypeError(f"batches must be an iterable of batches, got {type(batches).__name__}")

    student = loss_fn.student
    scheduler = None
    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups(student, weight_decay), lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(steps, warmup_steps, lr, warmup_lr, min_lr)
        )
    result = PretrainResult({k: [] for k in ("total", "task", "fd", "logit", "wpr", "lr")})
    student.train()
    stream = _cycle(batches)
    for step in range(steps):
        batch = next(stream, None)
        if batch is None:
            raise ValueError(
                f"batches ran out after {step} steps (an empty iterable or a one-shot iterator)"
            )
        if isinstance(batch, list | tuple) and len(batch) == 2:
            inputs, target = batch
        else:
            inputs, target = batch, None
        out = loss_fn(inputs, target)
        if not torch.isfinite(out.total):
            raise FloatingPointError(
                f"PELA loss is {out.total.item()} at step {step}: {out.parts()}"
            )
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(student.parameters(), grad_clip)
        optimizer.step()
        parts = out.parts()
        parts["lr"] = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        for k, v in parts.items():
            result.history[k].append(v)
        if on_step is not None:
            on_step(step, parts)
    logger.info("PELA pre-training: %d steps, last parts %s", steps, parts)
    return result
