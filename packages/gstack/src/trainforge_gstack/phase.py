"""G_random in depth: a separately initialised target whose block groups replace the small
model's blocks one group at a time (``tongxuluo/prts:prts_lit/scaling/milk.py``).

The reference (``MilkModel``) pairs the small ("meta") model's block list with a freshly
initialised target model's, split into groups: group ``j`` of the target (``g`` blocks) runs
in place of meta block ``j`` until its ``MaskSchedule`` starts (``mask_iters = [0, 500, 1000,
...]``: group ``j`` at optimizer step ``500 j``), and from then on the target group runs.
The meta blocks are frozen (``make_only_trg_as_trainable``); only the target is trained.
Its ``IncubationLayer`` returns the target group's output for every mask value above 0 (the
blend of meta and target outputs is commented out there), so the switch is a hard one, and
so is ours. ``tongxuluo/prts:pretrain/run_pretrain.py`` steps the schedules once per optimizer
step (``method == 'milk'``); here :meth:`PhaseIn.step` does that.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

_ATTR = "gstack_phase_in"


class PhaseIn:
    """The phase-in state of a model grown with ``grow_depth(..., op="random")``.

    Target block ``i`` belongs to group ``j = i // g``. Until optimizer step ``j * interval``
    (inclusive) the group is bypassed: its first block runs the small model's block ``j``
    (frozen) and the others pass the hidden states through; afterwards the group's own
    freshly initialised blocks run. Call :meth:`step` after every optimizer step; once every
    group has switched, the model is a plain model again (:attr:`done`, and the small
    blocks are dropped).

    The target blocks that are still bypassed get no gradient (AdamW skips them, as in the
    reference); under DDP pass ``find_unused_parameters=True`` while a phase-in is running.
    """

    def __init__(
        self, blocks: nn.ModuleList, sources: list[nn.Module], group: int, interval: int
    ) -> None:
        self.group = group
        self.interval = interval
        self.step_count = 0
        self.sources = nn.ModuleList(sources)
        self.sources.requires_grad_(False)
        self._num_groups = len(sources)
        self._blocks = list(blocks)
        self._tuple_output = False
        for i, block in enumerate(self._blocks):
            block.forward = functools.partial(_phased_forward, self, block, i)

    @property
    def num_groups(self) -> int:
        """How many groups (= blocks of the small model) are phased in."""
        return self._num_groups

    @property
    def total_steps(self) -> int:
        """Optimizer steps until the last group has switched to its target blocks."""
        return (self.num_groups - 1) * self.interval + 1

    @property
    def done(self) -> bool:
        """True once every group runs its target blocks."""
        return not self._blocks

    def active_groups(self) -> int:
        """How many groups (from the bottom) run their target blocks now."""
        if self.done:
            return self.num_groups
        return sum(self.step_count > j * self.interval for j in range(self.num_groups))

    def step(self) -> None:
        """Advance by one optimizer step (``MaskSchedule.step`` in the reference)."""
        if self.done:
            return
        self.step_count += 1
        if self.active_groups() == self.num_groups:
            self.finish()

    def finish(self) -> None:
        """Switch every group to its target blocks now and drop the small model's blocks."""
        for block in self._blocks:
            block.__dict__.pop("forward", None)
        self._blocks = []
        self.sources = nn.ModuleList()


def _phased_forward(phase: PhaseIn, block: nn.Module, index: int, *args: Any, **kwargs: Any) -> Any:
    group, position = divmod(index, phase.group)
    if phase.step_count > group * phase.interval:
        return type(block).forward(block, *args, **kwargs)
    hidden = args[0] if args else kwargs["hidden_states"]
    if position:
        return (hidden,) if phase._tuple_output else hidden
    source = phase.sources[group]
    ref = next(block.parameters(), None)
    first = next(source.parameters(), None)
    if (
        ref is not None
        and first is not None
        and (first.device != ref.device or first.dtype != ref.dtype)
    ):
        phase.sources.to(device=ref.device, dtype=ref.dtype)  # follows model.to(...)
    out = source(*args, **kwargs)
    phase._tuple_output = isinstance(out, tuple)
    return out


def phase_in_of(model: nn.Module) -> PhaseIn | None:
    """The :class:`PhaseIn` of a model grown with ``op="random"`` (None for any other)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    phase = model.__dict__.get(_ATTR)
    return phase if isinstance(phase, PhaseIn) else None


def _attach(model: nn.Module, phase: PhaseIn) -> None:
    model.__dict__[_ATTR] = phase


@torch.no_grad()
def _poison_and_reset(blocks: nn.ModuleList) -> None:
    """Re-initialise copied blocks through ``reset_parameters``; fail on any parameter that
    no initialiser touched (it would otherwise stay a copy of the small model)."""
    for block in blocks:
        for p in block.parameters():
            p.fill_(float("nan"))
        for module in block.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    for block in blocks:
        for name, p in block.named_parameters():
            if torch.isnan(p).any():
                raise ValueError(
                    f"op='random' cannot initialise parameter {name!r} of "
                    f"{type(block).__name__}: neither a transformers PreTrainedModel (whose "
                    "target is built from its config) nor a module with reset_parameters(); "
                    "use op='stack' or give that module a reset_parameters method"
                )
