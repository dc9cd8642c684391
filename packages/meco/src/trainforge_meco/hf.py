"""Hugging Face ``Trainer`` glue: a callback that watches the metadata -> cooldown switch.

Use it with a :class:`~trainforge_meco.schedule.MeCoDataset` as ``train_dataset``, the
:class:`~trainforge_meco.packing.MeCoCollator` as ``data_collator``, ``max_steps`` equal to
the schedule's ``total_steps`` and ``lr_scheduler_type="cosine_with_min_lr"`` with
``lr_scheduler_kwargs={"min_lr_rate": 0.1}`` (the reference's schedule). The Trainer keeps
one optimizer and one scheduler for the whole run, so the cooldown continues them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from transformers import TrainerCallback

from trainforge_meco.schedule import MeCoDataset, MeCoSchedule, Phase

log = logging.getLogger(__name__)


class MeCoPhaseCallback(TrainerCallback):  # type: ignore[misc]
    """Checks the run against a :class:`MeCoSchedule` and records the phase switch.

    - ``on_train_begin``: ``args.max_steps`` must equal ``schedule.total_steps`` (else the
      switch would not land at 90% of the run), and the dataset's ``examples_per_step`` must
      equal ``per_device_train_batch_size x gradient_accumulation_steps x world_size`` (else
      the dataset would switch to the cooldown pool at another optimizer step than the
      schedule says): a ``ValueError`` before any step runs. The dataset is the one given, or
      the Trainer's ``train_dataset`` when it is a :class:`MeCoDataset`; with neither, the
      data cannot be checked and a ``UserWarning`` says so.
    - ``on_step_begin``: logs the switch and records ``switch_step`` and ``lr_at_switch``
      (the scheduler's last LR, to check it continues), and ``phase_log`` ``[(step, phase)]``
      at each change. Where the dataset is iterated in this process, the step it is serving
      must be the Trainer's step (up to the data loader's look-ahead), else a
      ``RuntimeError``: the data and the recorded switch would disagree.
    """

    # How many optimizer steps a data loader may have read ahead of the step being run
    # (accelerate fetches one batch ahead to detect the end of the data).
    LOOKAHEAD_STEPS = 2

    def __init__(self, schedule: MeCoSchedule, dataset: MeCoDataset | None = None) -> None:
        if not isinstance(schedule, MeCoSchedule):
            raise TypeError(f"schedule must be a MeCoSchedule, got {type(schedule).__name__}")
        if dataset is not None and not isinstance(dataset, MeCoDataset):
            raise TypeError(f"dataset must be a MeCoDataset or None, got {type(dataset).__name__}")
        if dataset is not None and dataset.schedule != schedule:
            raise ValueError(
                f"the dataset's schedule {dataset.schedule} differs from the callback's "
                f"{schedule}; use one MeCoSchedule for both"
            )
        self.schedule, self.dataset = schedule, dataset
        self.switch_step: int | None = None
        self.lr_at_switch: float | None = None
        self.phase_log: list[tuple[int, Phase]] = []

    def _find_dataset(self, kwargs: dict[str, Any]) -> MeCoDataset | None:
        if self.dataset is not None:
            return self.dataset
        loader = kwargs.get("train_dataloader")
        for obj in (loader, getattr(loader, "base_dataloader", None)):
            candidate = getattr(obj, "dataset", None)
            if isinstance(candidate, MeCoDataset):
                return candidate
        return None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.max_steps != self.schedule.total_steps:
            raise ValueError(
                f"TrainingArguments.max_steps={args.max_steps} must equal the MeCo schedule's "
                f"total_steps={self.schedule.total_steps}"
            )
        dataset = self._find_dataset(kwargs)
        if dataset is None:
            warnings.warn(
                "MeCoPhaseCallback cannot see a MeCoDataset (pass dataset=): it records the "
                "schedule's switch but cannot check that the data switches at the same step",
                UserWarning,
                stacklevel=2,
            )
            return
        if dataset.schedule != self.schedule:
            raise ValueError(
                f"the dataset's schedule {dataset.schedule} differs from the callback's "
                f"{self.schedule}; use one MeCoSchedule for both"
            )
        world = int(getattr(args, "world_size", 1) or 1)
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
        if dataset.examples_per_step != per_step:
            raise ValueError(
                f"MeCoDataset(examples_per_step={dataset.examples_per_step}) must equal "
                f"per_device_train_batch_size ({args.per_device_train_batch_size}) x "
                f"gradient_accumulation_steps ({args.gradient_accumulation_steps}) x "
                f"world_size ({world}) = {per_step} examples per optimizer step; otherwise the "
                "cooldown data would reach the model at another step than the schedule's "
                f"switch (step {self.schedule.cooldown_start})"
            )
        self.dataset = dataset

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = int(state.global_step)
        phase = self.schedule.phase(min(step, self.schedule.total_steps - 1))
        if not self.phase_log or self.phase_log[-1][1] != phase:
            self.phase_log.append((step, phase))
            if phase == "cooldown":
                self.switch_step = step
                scheduler = kwargs.get("lr_scheduler")
                if scheduler is not None:
                    self.lr_at_switch = float(scheduler.get_last_lr()[0])
                log.info(
                    "MeCo: cooldown on plain documents from step %d (lr %s)",
                    step,
                    self.lr_at_switch,
                )
        dataset = self.dataset
        # Only the process that iterates the dataset can compare (with a dispatching data
        # loader, the other ranks never touch their copy).
        if dataset is None or dataset.examples_served == 0:
            return
        served = dataset.step
        if not step <= served <= step + self.LOOKAHEAD_STEPS:
            raise RuntimeError(
                f"the Trainer is at step {step} ({phase} phase) but the MeCoDataset is serving "
                f"its step {served} ({dataset.phase} phase); the data and the schedule disagree. "
                "examples_per_step must equal per_device_train_batch_size x "
                "gradient_accumulation_steps x world size; a resumed run either lets the Trainer "
                "skip the data it has seen (start_step=0) or passes start_step=<resumed step> "
                "with ignore_data_skip=True"
            )
