"""The reference's two-stage fine-tuning recipe (GATECH-EIC/ShiftAddViT:pvt/README.md).

Stage 1: replace attention with binary linear-angular attention and fine-tune (the reference:
100 epochs, lr 5e-5). Stage 2: turn the linear layers into Mult./Shift mixtures of experts
and fine-tune with ``L = L_task + 0.01 L_bal`` (pvt/engine.py; the reference: 100 epochs,
lr 1e-5). The KSH coders fit on the first stage-1 batch unless they were fitted before.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from trainforge_shiftaddvit.convert import ReparamReport, ShiftAddConfig, reparameterize_vit
from trainforge_shiftaddvit.moe import moe_aux_loss

__all__ = ["TwoStageResult", "two_stage_finetune"]

logger = logging.getLogger(__name__)

STAGE1_LR = 5e-5  # pvt/README.md step 1 (LinAngular) lr
STAGE2_LR = 1e-5  # pvt/README.md step 2 (--moe_attn --moe_mlp) lr
BALANCE_WEIGHT = 0.01  # pvt/engine.py: loss + 0.01 * balance_loss


@dataclass
class TwoStageResult:
    """Reports of both conversions and the per-step losses of both stages."""

    stage1: ReparamReport
    stage2: ReparamReport
    stage1_losses: list[float] = field(default_factory=list)
    stage2_losses: list[float] = field(default_factory=list)
    stage2_balance: list[float] = field(default_factory=list)


def _train(
    model: nn.Module,
    batches: Iterator,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    steps: int,
    lr: float,
    balance_weight: float,
    optimizer: Callable | None,
) -> tuple[list[float], list[float]]:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (optimizer or (lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.05)))(
        params, lr
    )
    losses, balance = [], []
    for batch in itertools.islice(batches, steps):
        loss = loss_fn(model, batch)
        bal = moe_aux_loss(model)
        total = loss + balance_weight * bal if balance_weight else loss
        if not torch.isfinite(total):
            raise FloatingPointError(f"two_stage_finetune: non-finite loss {float(total)}")
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(loss.item())
        balance.append(bal.item())
    return losses, balance


def two_stage_finetune(
    model: nn.Module,
    batches: Sequence,
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    stage1_steps: int,
    stage2_steps: int,
    config: ShiftAddConfig | None = None,
    stage1_lr: float = STAGE1_LR,
    stage2_lr: float = STAGE2_LR,
    balance_weight: float = BALANCE_WEIGHT,
    optimizer: Callable | None = None,
    after_stage1: Callable[[nn.Module], None] | None = None,
) -> TwoStageResult:
    """Reparameterise ``model`` in place in two stages, fine-tuning after each.

    ``batches``: a non-empty sequence of batches, cycled through both stages (stage 2 starts
    where stage 1 stopped); ``loss_fn(model, batch)`` returns the
    task loss. ``config`` says what stage 2 converts (its ``linears``; stage 1 converts only
    attention). ``optimizer(params, lr)`` builds the optimiser (AdamW, weight decay 0.05, by
    default, as the reference's DeiT recipe). ``after_stage1(model)``, if given, is called
    between the stages (to evaluate the attention-only model, say).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"two_stage_finetune: model must be an nn.Module, got {type(model).__name__}"
        )
    if not isinstance(batches, Sequence) or len(batches) == 0:
        raise ValueError("two_stage_finetune: batches must be a non-empty sequence of batches")
    if not callable(loss_fn):
        raise TypeError("two_stage_finetune: loss_fn must be callable(model, batch) -> loss")
    for name, v in (("stage1_steps", stage1_steps), ("stage2_steps", stage2_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"two_stage_finetune: {name} must be an int >= 0, got {v!r}")
    for name, v in (("stage1_lr", stage1_lr), ("stage2_lr", stage2_lr)):
        if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"two_stage_finetune: {name} must be a positive number, got {v!r}")
    if not isinstance(balance_weight, int | float) or not balance_weight >= 0:
        raise ValueError(f"two_stage_finetune: balance_weight must be >= 0, got {balance_weight!r}")
    cfg = ShiftAddConfig() if config is None else config
    if not isinstance(cfg, ShiftAddConfig):
        raise TypeError(f"two_stage_finetune: config must be a ShiftAddConfig, got {cfg!r}")

    report1 = reparameterize_vit(model, replace(cfg, linears="none"))
    result = TwoStageResult(report1, ReparamReport())
    stream = itertools.cycle(batches)  # stage 2 continues where stage 1 stopped
    result.stage1_losses, _ = _train(
        model, stream, loss_fn, stage1_steps, stage1_lr, 0.0, optimizer
    )
    logger.info("two_stage_finetune: stage 1 done (%s)", report1)
    if after_stage1 is not None:
        after_stage1(model)
    result.stage2 = _stage2(model, cfg)
    result.stage2_losses, result.stage2_balance = _train(
        model, stream, loss_fn, stage2_steps, stage2_lr, balance_weight, optimizer
    )
    model.eval()
    return result


def _stage2(model: nn.Module, cfg: ShiftAddConfig) -> ReparamReport:
    """Convert the linears of the stage-1 model (MLPs and the new attention)."""
    if cfg.linears == "none":
        return ReparamReport()
    return reparameterize_vit(model, replace(cfg, attention=False))
