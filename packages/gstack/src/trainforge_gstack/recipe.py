"""The two-stage G_stack recipe as a loop users call: :func:`train_gstack`.

It runs what ``tongxuluo/prts`` runs in two jobs (``base_model.sh``, then ``g_stack.sh``
through ``pretrain/run_pretrain.py``) and reads every flag of :class:`GStackPlan`:

- stage 1 trains the small model on the first batches of one fixed, shuffled stream of
  non-overlapping windows (the reference's packed dataset read in order), with the small
  model's learning rates and a cosine planned over the grown model's horizon (the small run
  has ``max_step`` 300k and is grown from ``iter-005000``, so it is *not* annealed at growth);
- growth with :func:`~trainforge_gstack.grow_depth`;
- stage 2 trains the grown model: a new AdamW (``reset_optimizer``; otherwise each copy
  inherits its source parameter's AdamW state), the schedule from iteration 0
  (``restart_schedule``; otherwise it continues the count), and the batches after the
  small model's (``skip_seen_data``, ``g_stack.sh --resume_id``; otherwise from the start).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainforge_core.data import LMData
from trainforge_core.train import TrainResult, causal_lm_loss, evaluate_lm
from trainforge_gstack.depth import depth_plan, grow_depth
from trainforge_gstack.layouts import _get_layers, find_layout
from trainforge_gstack.phase import phase_in_of
from trainforge_gstack.timing import GStackPlan

log = logging.getLogger(__name__)


class WindowStream:
    """Batches of non-overlapping training windows in a seeded random order, read in order.

    Batch ``k`` holds windows ``k*B .. k*B+B-1`` of the order; an epoch is one permutation
    of every window, the next epoch a new one (so data repeats only after a full epoch).
    """

    def __init__(self, data: LMData, batch_size: int, seq_len: int, seed: int = 0) -> None:
        for name, v in (("batch_size", batch_size), ("seq_len", seq_len)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        n = data.train.numel() // seq_len
        if n < batch_size:
            raise ValueError(f"{n} windows of {seq_len} tokens do not fill a batch of {batch_size}")
        self.windows = data.train[: n * seq_len].view(n, seq_len)
        self.batch_size, self.seed = batch_size, seed
        self._orders: dict[int, torch.Tensor] = {}

    @property
    def batches_per_epoch(self) -> int:
        """Whole batches in one pass over the windows."""
        return len(self.windows) // self.batch_size

    def batch(self, index: int) -> torch.Tensor:
        """Batch number ``index`` (0-based) of the stream."""
        epoch, k = divmod(index, self.batches_per_epoch)
        if epoch not in self._orders:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._orders[epoch] = torch.randperm(len(self.windows), generator=gen)
        rows = self._orders[epoch][k * self.batch_size : (k + 1) * self.batch_size]
        return self.windows[rows]


@dataclass
class GStackRun:
    """What :func:`train_gstack` did: both models, both stages' curves, the growth point
    (``loss_at_growth``: held-out loss of the grown model before stage 2), the stage-2
    optimizer (to keep training), and in
    ``details`` the learning rate of every step (``lr1``, ``lr2``) and the epochs read."""

    small: nn.Module
    grown: nn.Module
    stage1: TrainResult
    stage2: TrainResult
    small_steps: int
    large_steps: int
    stage2_first_batch: int
    loss_at_growth: float
    optimizer: torch.optim.Optimizer
    details: dict[str, Any] = field(default_factory=dict)


def train_gstack(
    small: nn.Module,
    data: LMData,
    plan: GStackPlan,
    *,
    batch_size: int,
    seq_len: int,
    op: str = "stack",
    eval_every: int | None = None,
    eval_batches: int = 8,
    seed: int = 0,
    layers_attr: str = "auto",
) -> GStackRun:
    """Train ``small`` (in place) for ``plan.growth_tokens``, grow it ``plan.factor`` times
    with ``op``, and train the grown model for ``plan.tokens``; see the module doc.

    With ``op="random"`` the phase-in (:class:`~trainforge_gstack.PhaseIn`) is stepped after
    every stage-2 optimizer step. ``eval_every`` (default: about 10 points per stage) sets
    how often held-out loss is measured.
    """
    if not isinstance(plan, GStackPlan):
        raise TypeError(f"plan must be a GStackPlan, got {type(plan).__name__}")
    if not isinstance(data, LMData):
        raise TypeError(f"data must be an LMData, got {type(data).__name__}")
    if eval_every is not None and (
        isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1
    ):
        raise ValueError(f"eval_every must be a positive integer or None, got {eval_every!r}")
    if not plan.reset_optimizer and op == "random":
        raise ValueError(
            "reset_optimizer=False carries AdamW state from source to copied blocks; "
            "op='random' has no copied blocks: keep reset_optimizer=True"
        )
    stream = WindowStream(data, batch_size, seq_len, seed)
    n1, n2 = plan.steps(batch_size * seq_len)
    # base_model.sh: max_step (the cosine horizon) is the large run's, not the growth point.
    horizon1 = max(n1, n2)
    opt1 = _adamw(small, plan, plan.small_lr)
    stage1, lr1 = _run(
        small, opt1, stream, plan, 1, 0, 0, n1, horizon1, eval_every, eval_batches, data, seq_len
    )
    layout = find_layout(small, layers_attr)
    grown = grow_depth(small, plan.factor, op, layers_attr=layout.layers, seed=seed)
    at_growth = evaluate_lm(grown, data, seq_len, batch_size, eval_batches)
    if plan.reset_optimizer:
        opt2 = _adamw(grown, plan, plan.large_lr)
    else:
        opt2 = _carry_state(small, opt1, grown, plan, layout.layers, op)
    first = n1 if plan.skip_seen_data else 0
    it0 = 0 if plan.restart_schedule else n1
    horizon2 = n2 if plan.restart_schedule else n1 + n2
    stage2, lr2 = _run(
        grown, opt2, stream, plan, 2, first, it0, n2, horizon2, eval_every, eval_batches, data,
        seq_len,
    )  # fmt: skip
    phase = phase_in_of(grown)
    if phase is not None and not phase.done:
        log.warning(
            "train_gstack: stage 2 ended with %d of %d groups phased in",
            phase.active_groups(),
            phase.num_groups,
        )
    return GStackRun(
        small=small,
        grown=grown,
        stage1=stage1,
        stage2=stage2,
        small_steps=n1,
        large_steps=n2,
        stage2_first_batch=first,
        loss_at_growth=at_growth,
        optimizer=opt2,
        details={"epochs_read": (first + n2) / stream.batches_per_epoch, "lr1": lr1, "lr2": lr2},
    )


def _adamw(model: nn.Module, plan: GStackPlan, lr: float) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, betas=plan.betas, weight_decay=plan.weight_decay)


def _carry_state(
    small: nn.Module,
    opt: torch.optim.Optimizer,
    grown: nn.Module,
    plan: GStackPlan,
    layers: str,
    op: str,
) -> torch.optim.AdamW:
    """A new AdamW over the grown model whose copies start from their source's state."""
    sources = depth_plan(len(_get_layers(small, layers)), plan.factor, op).sources
    by_name = {n: opt.state[p] for n, p in small.named_parameters() if p in opt.state}
    new = _adamw(grown, plan, plan.large_lr)
    prefix = layers + "."
    for name, p in grown.named_parameters():
        src = name
        if name.startswith(prefix):
            i, rest = name[len(prefix) :].split(".", 1)
            src = f"{prefix}{sources[int(i)]}.{rest}"
        state = by_name.get(src)
        if state:
            new.state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
    return new


def _run(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    stream: WindowStream,
    plan: GStackPlan,
    stage: int,
    first_batch: int,
    first_iter: int,
    steps: int,
    horizon: int,
    eval_every: int | None,
    eval_batches: int,
    data: LMData,
    seq_len: int,
) -> tuple[TrainResult, list[float]]:
    every = eval_every or max(1, steps // 10)
    device = next(model.parameters()).device
    phase = phase_in_of(model)
    params = [p for g in opt.param_groups for p in g["params"]]
    result = TrainResult()
    lrs: list[float] = []
    model.train()
    for step in range(steps):
        lr = plan.lr(stage, first_iter + step, horizon)
        for group in opt.param_groups:
            group["lr"] = lr
        lrs.append(lr)
        batch = stream.batch(first_batch + step).to(device)
        loss = causal_lm_loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"stage {stage}: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if plan.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, plan.grad_clip)
        opt.step()
        if phase is not None:
            phase.step()
        result.train_loss.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps:
            result.eval_steps.append(step + 1)
            result.eval_loss.append(
                evaluate_lm(model, data, seq_len, stream.batch_size, eval_batches)
            )
            model.train()
    return result, lrs
