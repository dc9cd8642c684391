"""transformers integration: a ``TrainerCallback`` that takes Sophia's Hessian estimates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from trainforge_core._optional import require
from trainforge_sophia.hessian import maybe_update_hessian
from trainforge_sophia.optimizer import SophiaG, SophiaH

__all__ = ["SophiaCallback"]

log = logging.getLogger(__name__)

_transformers = require("transformers", extra="lm")


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer`` wrapper."""
    while not isinstance(optimizer, SophiaG | SophiaH) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict) or hasattr(batch, "items"):
        return {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
    return batch


class SophiaCallback(_transformers.TrainerCallback):
    """Every ``hessian_interval`` optimizer steps of a ``transformers.Trainer`` whose
    optimizer is :class:`SophiaG` (GNB estimate) or :class:`SophiaH` (Hutchinson), draw
    ``gradient_accumulation_steps`` fresh micro-batches and update the Hessian EMA with
    :func:`~trainforge_sophia.maybe_update_hessian`. On each log, add the optimizer's
    :meth:`stats` (``sophia/win_rate`` ...) to the logged values.

    ``hessian_data``: an iterable of batches for the estimates (default: the Trainer's own
    training dataloader, iterated separately, so the batches are fresh ones). Pass the
    optimizer as ``Trainer(..., optimizers=(SophiaG(...), None))``; with ``bs=None`` the
    optimizer uses the number of predictions the estimate counted.
    """

    def __init__(
        self,
        hessian_data: Iterable[Any] | None = None,
        *,
        grad_clip: float | None = 1.0,
        ignore_index: int = -100,
        logits_fn: Callable[[nn.Module, Any], tuple[Tensor, Tensor | None]] | None = None,
        loss_fn: Callable[[nn.Module, Any], Tensor] | None = None,
        log_stats: bool = True,
        seed: int = 0,
    ) -> None:
        if hessian_data is not None and not isinstance(hessian_data, Iterable):
            raise TypeError(f"hessian_data must be iterable, got {type(hessian_data).__name__}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.hessian_data = hessian_data
        self.grad_clip = grad_clip
        self.ignore_index = ignore_index
        self.logits_fn = logits_fn
        self.loss_fn = loss_fn
        self.log_stats = log_stats
        self.generator = torch.Generator().manual_seed(seed)
        self.estimates = 0
        self._iter: Iterator[Any] | None = None
        self._source: Iterable[Any] | None = None

    def _next(self, source: Iterable[Any]) -> Any:
        if self._iter is None or self._source is not source:
            self._source, self._iter = source, iter(source)
        try:
            return next(self._iter)
        except StopIteration:
            self._iter = iter(source)
            return next(self._iter)

    def on_step_end(self, args, state, control, model=None, optimizer=None,
                    train_dataloader=None, **kwargs):  # fmt: skip
        opt = _unwrap(optimizer)
        if not isinstance(opt, SophiaG | SophiaH):
            raise TypeError(
                "SophiaCallback needs the Trainer's optimizer to be SophiaG or SophiaH, got "
                f"{type(opt).__name__}: pass Trainer(..., optimizers=(SophiaG(...), None))"
            )
        if not opt.hessian_due():
            return control
        source = self.hessian_data if self.hessian_data is not None else train_dataloader
        if source is None:
            raise ValueError("SophiaCallback: no hessian_data and no train_dataloader to draw from")
        device = next(model.parameters()).device
        n_micro = max(1, int(getattr(args, "gradient_accumulation_steps", 1)))
        batches = [_to(self._next(source), device) for _ in range(n_micro)]
        was_training = model.training
        model.train()
        maybe_update_hessian(opt, model, batches, logits_fn=self.logits_fn, loss_fn=self.loss_fn,
                             ignore_index=self.ignore_index, grad_clip=self.grad_clip,
                             generator=self.generator)  # fmt: skip
        model.train(was_training)
        self.estimates += 1
        log.debug("Sophia Hessian estimate %d at step %d", self.estimates, state.global_step)
        return control

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        opt = _unwrap(optimizer)
        if self.log_stats and logs is not None and isinstance(opt, SophiaG | SophiaH):
            stats = {f"sophia/{k}": v for k, v in opt.stats().items()}
            logs.update(stats)  # seen by the reporting callbacks that run after this one
            # the Trainer appended its copy of `logs` to log_history before on_log
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(stats)
        return control
