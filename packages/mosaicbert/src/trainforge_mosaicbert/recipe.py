"""The MosaicBERT pre-training recipe: decoupled AdamW and linear warm-up / linear decay.

From ``mosaicml/examples:examples/benchmarks/bert/yamls/main/mosaic-bert-base-uncased.yaml``:
``decoupled_adamw`` lr 5e-4, betas (0.9, 0.98), eps 1e-6, weight decay 1e-5;
``linear_decay_with_warmup`` with ``t_warmup: 0.06dur`` and ``alpha_f: 0.02``; MLM 30%
(evaluated at 15%); sequence length 128; global batch 4096; bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MosaicRecipe:
    """Knobs of :func:`mosaic_recipe`, defaults from the reference yaml."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 1e-5  # decoupled: applied as wd * (lr_t / lr), not wd * lr_t
    warmup_fraction: float = 0.06
    final_lr_ratio: float = 0.02
    mlm_probability: float = 0.3
    eval_mlm_probability: float = 0.15
    max_seq_len: int = 128
    global_batch_size: int = 4096

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"MosaicRecipe.lr must be positive, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"MosaicRecipe.betas must be two values in [0, 1), got {self.betas!r}")
        if not self.eps > 0:
            raise ValueError(f"MosaicRecipe.eps must be positive, got {self.eps!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"MosaicRecipe.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(
                f"MosaicRecipe.warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}"
            )
        if not 0.0 <= self.final_lr_ratio <= 1.0:
            raise ValueError(
                f"MosaicRecipe.final_lr_ratio must be in [0, 1], got {self.final_lr_ratio!r}"
            )
        for name in ("mlm_probability", "eval_mlm_probability"):
            p = getattr(self, name)
            if not 0.0 < p < 1.0:
                raise ValueError(f"MosaicRecipe.{name} must be in (0, 1), got {p!r}")


def linear_warmup_decay(
    total_steps: int, warmup_fraction: float = 0.06, final_lr_ratio: float = 0.02
) -> Callable[[int], float]:
    """LR multiplier per step: linear 0 -> 1 over ``warmup_fraction * total_steps``, then
    linear 1 -> ``final_lr_ratio`` at ``total_steps`` (Composer's
    ``LinearWithWarmupScheduler``), constant after."""
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps <= 0:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    if not 0.0 <= final_lr_ratio <= 1.0:
        raise ValueError(f"final_lr_ratio must be in [0, 1], got {final_lr_ratio!r}")
    warmup = round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        frac = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 + (final_lr_ratio - 1.0) * frac

    return factor


def mosaic_recipe(
    model: nn.Module, total_steps: int, recipe: MosaicRecipe | None = None
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """Optimizer and schedule of the MosaicBERT recipe for ``total_steps`` optimizer steps.

    Composer's ``DecoupledAdamW`` multiplies parameters by ``1 - wd * lr_t / lr_0``;
    ``torch.optim.AdamW`` multiplies by ``1 - lr_t * wd'``; so ``wd' = wd / lr_0`` gives the
    same update. Weight decay applies to every parameter, as in the reference run.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    recipe = recipe if recipe is not None else MosaicRecipe()
    if not isinstance(recipe, MosaicRecipe):
        raise TypeError(f"recipe must be a MosaicRecipe or None, got {type(recipe).__name__}")
    schedule = linear_warmup_decay(total_steps, recipe.warmup_fraction, recipe.final_lr_ratio)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    opt = torch.optim.AdamW(
        params,
        lr=recipe.lr,
        betas=recipe.betas,
        eps=recipe.eps,
        weight_decay=recipe.weight_decay / recipe.lr,
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)
