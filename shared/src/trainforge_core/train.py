"""One small training loop for demos and slow tests of language models."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from trainforge_core.data import LMData

log = logging.getLogger(__name__)

StepHook = Callable[[int, nn.Module, torch.optim.Optimizer, torch.Tensor], None]


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of :func:`train_lm`. ``warmup_steps`` + cosine decay to ``min_lr_ratio`` of the
    peak when ``schedule="cosine"``; ``grad_clip=None`` disables clipping."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    eval_every: int = 50
    eval_batches: int = 8
    grad_clip: float | None = 1.0
    schedule: str = "cosine"
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"TrainConfig.warmup_steps must be in [0, steps], got {self.warmup_steps!r}"
            )
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(
                f"TrainConfig.schedule must be 'constant' or 'cosine', got {self.schedule!r}"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(
                f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(
                f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip!r}"
            )


@dataclass
class TrainResult:
    """Losses per step, held-out losses at eval steps, and wall time per step (seconds)."""

    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    step_time: list[float] = field(default_factory=list)

    @property
    def final_eval_loss(self) -> float:
        return self.eval_loss[-1] if self.eval_loss else math.nan

    @property
    def median_step_time(self) -> float:
        times = sorted(self.step_time)
        return times[len(times) // 2] if times else math.nan

    def steps_to_reach(self, target: float) -> int | None:
        """First eval step whose held-out loss is <= ``target`` (None if never)."""
        return next(
            (s for s, v in zip(self.eval_steps, self.eval_loss, strict=True) if v <= target), None
        )


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step (linear warm-up, cosine decay)."""

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine

    return factor


def causal_lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a transformers causal LM on a window batch."""
    return model(input_ids=batch, labels=batch).loss


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    data: LMData,
    seq_len: int,
    batch_size: int = 16,
    max_batches: int | None = 8,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = causal_lm_loss,
) -> float:
    """Mean held-out loss over the fixed evaluation windows."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = [
        float(loss_fn(model, b.to(device)))
        for b in data.eval_batches(batch_size, seq_len, max_batches)
    ]
    model.train(was_training)
    return sum(losses) / len(losses)


def train_lm(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: LMData,
    config: TrainConfig | None = None,
    *,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = causal_lm_loss,
    after_backward: StepHook | None = None,
    after_step: StepHook | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` for ``config.steps`` steps on random windows of ``data.train``.

    The learning-rate schedule wraps ``optimizer`` (peak = each group's ``lr``). Hooks get
    ``(step, model, optimizer, batch)``: ``after_backward`` before the optimizer step (to
    inspect or edit gradients), ``after_step`` after it (e.g. a periodic Hessian estimate).
    Held-out loss is measured every ``eval_every`` steps and after the last one.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    generator = torch.Generator().manual_seed(config.seed)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    device = next(model.parameters()).device
    result = TrainResult()
    model.train()
    bar = tqdm(range(config.steps), desc=desc, disable=not config.progress, leave=False)
    for step in bar:
        batch = data.sample_batch(config.batch_size, config.seq_len, generator).to(device)
        start = time.perf_counter()
        loss = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(step, model, optimizer, batch)
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        if after_step is not None:
            after_step(step, model, optimizer, batch)
        result.step_time.append(time.perf_counter() - start)
        result.train_loss.append(loss.item())
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            held_out = evaluate_lm(
                model, data, config.seq_len, config.batch_size, config.eval_batches, loss_fn
            )
            result.eval_steps.append(step + 1)
            result.eval_loss.append(held_out)
            bar.set_postfix(loss=f"{loss.item():.3f}", eval=f"{held_out:.3f}")
            log.info("%s step %d: train %.4f eval %.4f", desc, step + 1, loss.item(), held_out)
    return result
