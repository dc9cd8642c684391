"""transformers integration: a ``TrainerCallback`` that takes Sophia's Hessian estimates."""

from __future__ import annotations

import contextlib
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


def _own_loader(train_dataloader: Any, args: Any) -> Any:
    """A plain ``DataLoader`` over the Trainer's training set for the estimates. Iterating
    the Trainer's own (accelerate-prepared) loader would move its epoch counter and its
    gradient-accumulation bookkeeping; this one is separate, shuffled by our own seed."""
    dataset = getattr(train_dataloader, "dataset", None)
    if dataset is None:
        return train_dataloader
    batch_size = getattr(train_dataloader, "batch_size", None) or getattr(
        args, "per_device_train_batch_size", 1
    )
    shuffle = not isinstance(dataset, torch.utils.data.IterableDataset)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=True,
        collate_fn=getattr(train_dataloader, "collate_fn", None),
    )  # fmt: skip


def _mix(*parts: int) -> int:
    """A 63-bit seed from small non-negative integers (seed, stream, index, rank)."""
    h = 0x9E3779B97F4A7C15
    for x in parts:
        h = ((h ^ (x & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h >> 1


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class SophiaCallback(_transformers.TrainerCallback, _transformers.trainer_callback.ExportableState):
    """Every ``hessian_interval`` optimizer steps of a ``transformers.Trainer`` whose
    optimizer is :class:`SophiaG` (GNB estimate) or :class:`SophiaH` (Hutchinson), draw
    ``gradient_accumulation_steps`` fresh micro-batches and update the Hessian EMA with
    :func:`~trainforge_sophia.maybe_update_hessian`. On each log, add the optimizer's
    :meth:`stats` (``sophia/win_rate`` ...) to the logged values.

    ``hessian_data``: an iterable of batches for the estimates (default: the Trainer's own
    training dataloader, iterated separately, so the batches are fresh ones). Pass the
    optimizer as ``Trainer(..., optimizers=(SophiaG(...), None))``; with ``bs=None`` the
    optimizer uses the number of predictions the estimate counted.

    Resuming (``trainer.train(resume_from_checkpoint=...)``) is exact: the callback's
    state (estimates taken, the position in its data) goes into each checkpoint's
    ``trainer_state.json`` and is read back at the start of training; the labels of
    estimate ``i`` are sampled with a generator seeded from ``(seed, i)`` and each pass
    over the data is shuffled from ``(seed, pass, rank)``, with the global RNG set aside,
    so training's own random stream is untouched. A resumed run redraws the batches of
    the current pass up to its position (they are fetched, not used). Leave
    ``TrainingArguments.restore_callback_states_from_checkpoint`` at its default
    (``False``): it would rebuild the callback from its JSON arguments, without
    ``hessian_data``, ``logits_fn`` or ``loss_fn``.
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
        self.seed = seed
        self.generator = torch.Generator()
        self.estimates = 0
        self.passes = 0  # index of the current pass over the estimate data
        self.draws = 0  # batches drawn in the current pass
        self._iter: Iterator[Any] | None = None
        self._source: Iterable[Any] | None = None
        self._own: Any = None
        self._data_rng: Tensor | None = None

    # -- checkpointing (transformers ExportableState) ------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "grad_clip": self.grad_clip,
                "ignore_index": self.ignore_index,
                "log_stats": self.log_stats,
                "seed": self.seed,
            },
            "attributes": {"estimates": self.estimates, "passes": self.passes, "draws": self.draws},
        }

    def on_train_begin(self, args, state, control, **kwargs):
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        attrs = (saved or {}).get("attributes", {})
        estimates, passes, draws = (int(attrs.get(k, 0)) for k in ("estimates", "passes", "draws"))
        if (estimates, passes, draws) != (self.estimates, self.passes, self.draws):
            log.info("SophiaCallback: resuming after %d estimates (pass %d, batch %d)",
                     estimates, passes, draws)  # fmt: skip
            self.estimates = estimates
            self._iter = None  # rebuilt at the next draw: pass `passes`, skip `draws`
            self.passes, self.draws = passes, draws
        return control

    # -- the estimate data ---------------------------------------------------------------
    @contextlib.contextmanager
    def _data_rng_scope(self) -> Iterator[None]:
        """Run data loading on our own CPU random stream, leaving the global one as it was."""
        saved = torch.get_rng_state()
        torch.set_rng_state(self._data_rng)
        try:
            yield
        finally:
            self._data_rng = torch.get_rng_state()
            torch.set_rng_state(saved)

    def _start_pass(self, source: Iterable[Any], skip: int) -> None:
        gen = torch.Generator().manual_seed(_mix(self.seed, 1, self.passes, _rank()))
        self._data_rng = gen.get_state()
        with self._data_rng_scope():
            self._iter = iter(source)
            for _ in range(skip):
                next(self._iter)
        self.draws = skip

    def _next(self, source: Iterable[Any]) -> Any:
        if self._iter is None:  # first draw, or first after a resume: pass `passes`
            self._source = source
            self._start_pass(source, self.draws)
        elif self._source is not source:  # a new data source: a new pass
            self._source = source
            self.passes += 1
            self._start_pass(source, 0)
        try:
            with self._data_rng_scope():
                batch = next(self._iter)
        except StopIteration:
            self.passes += 1
            self._start_pass(source, 0)
            with self._data_rng_scope():
                batch = next(self._iter)
        self.draws += 1
        return batch

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
        source = self.hessian_data
        if source is None:
            if train_dataloader is None:
                raise ValueError(
                    "SophiaCallback: no hessian_data and no train_dataloader to draw from"
                )
            if self._own is None or self._own[0] is not train_dataloader:
                self._own = (train_dataloader, _own_loader(train_dataloader, args))
            source = self._own[1]
        device = next(model.parameters()).device
        n_micro = max(1, int(getattr(args, "gradient_accumulation_steps", 1)))
        batches = [_to(self._next(source), device) for _ in range(n_micro)]
        was_training = model.training
        model.train()
        self.generator.manual_seed(_mix(self.seed, 0, self.estimates, _rank()))
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
