"""transformers glue: a ``Trainer`` that trains a compressed student with the PELA loss.

Needs the ``hf`` extra (``pip install "trainforge-pela[hf]"``); imported lazily.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainforge_core.errors import MissingOptionalDependency
from trainforge_pela.distill import PELALoss

try:
    from transformers import Trainer
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise MissingOptionalDependency(
        "trainforge_pela.hf needs transformers: pip install 'trainforge-pela[hf]'"
    ) from err


class PELATrainer(Trainer):
    """``transformers.Trainer`` whose loss is :class:`PELALoss` against a frozen ``teacher``.

    ``model`` is the compressed student (see :func:`~trainforge_pela.apply_pela`). The
    batch's ``labels`` feed the task loss (cross-entropy unless ``task_loss`` is given);
    the other entries are the model inputs (a single entry is passed positionally, so a
    timm model fed ``{"pixel_values": x, "labels": y}`` works too). ``pela_kwargs`` go to
    :class:`PELALoss` (``alpha``, ``beta``, ``lam``, ``eps``, ``block_pattern``,
    ``task_loss``). The parts of the last step are in ``last_pela_parts`` and are added to
    the Trainer's logs.
    """

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module,
        pela_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if pela_kwargs is not None and not isinstance(pela_kwargs, dict):
            raise TypeError(f"pela_kwargs must be a dict or None, got {type(pela_kwargs).__name__}")
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device)
        self.pela_loss = PELALoss(teacher, self.model, **(pela_kwargs or {}))
        self.last_pela_parts: dict[str, float] = {}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        out = self.pela_loss(inputs, labels)
        self.last_pela_parts = out.parts()
        return (out.total, {"logits": out.logits}) if return_outputs else out.total

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self.last_pela_parts:
            logs = {**logs, **{f"pela_{k}": v for k, v in self.last_pela_parts.items()}}
        super().log(logs, *args, **kwargs)
