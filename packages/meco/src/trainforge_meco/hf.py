"""Hugging Face ``Trainer`` glue: a callback that watches the metadata -> cooldown switch.

Use it with a :class:`~trainforge_meco.schedule.MeCoDataset` as ``train_dataset``, the
:class:`~trainforge_meco.packing.MeCoCollator` as ``data_collator``, ``max_steps`` equal to
the schedule's ``total_steps`` and ``lr_scheduler_type="cosine_with_min_lr"`` with
``lr_scheduler_kwargs={"min_lr_rate": 0.1}`` (the reference's schedule). The Trainer keeps
one optimizer and one scheduler for the whole run, so the cooldown continues them.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from trainforge_meco.schedule import MeCoDataset, MeCoSchedule, Phase

log = logging.getLogger(__name__)


class MeCoPhaseCallback(TrainerCallback):  # type: ignore[misc]
    """Checks the run against a :class:`MeCoSchedule` and records the phase switch.

    - ``on_train_begin``: ``args.max_steps`` must equal ``schedule.total_steps`` (else the
      switch would not land at 90% of the run): a ``ValueError``.
    - ``on_step_begin``: logs the switch and records ``switch_step`` and ``lr_at_switch``
      (the scheduler's last LR, to check it continues), and ``phase_log`` ``[(step, phase)]``
      at each change. With ``dataset`` given, the dataset's phase must not lag the step's.
    """

    def __init__(self, schedule: MeCoSchedule, dataset: MeCoDataset | None = None) -> None:
        if not isinstance(schedule, MeCoSchedule):
            raise TypeError(f"schedule must be a MeCoSchedule, got {type(schedule).__name__}")
        if dataset is not None and not isinstance(dataset, MeCoDataset):
            raise TypeError(f"dataset must be a MeCoDataset or None, got {type(dataset).__name__}")
        self.schedule, self.dataset = schedule, dataset
        self.switch_step: int | None = None
        self.lr_at_switch: float | None = None
        self.phase_log: list[tuple[int, Phase]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.max_steps != self.schedule.total_steps:
            raise ValueError(
                f"TrainingArguments.max_steps={args.max_steps} must equal the MeCo schedule's "
                f"total_steps={self.schedule.total_steps}"
            )

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
        if (
            self.dataset is not None
            and phase == "cooldown"
            and self.dataset.phase == "metadata"
            and self.dataset.step > 0
        ):
            raise RuntimeError(
                f"step {step} is in the cooldown but the MeCoDataset is still in the metadata "
                f"phase (at its step {self.dataset.step}); examples_per_step must equal "
                "per_device_train_batch_size * gradient_accumulation_steps * world size"
            )
