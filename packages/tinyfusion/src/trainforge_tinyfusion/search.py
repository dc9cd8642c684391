"""``learn_depth_pruning``: TinyFusion's learnable depth pruning with co-optimised recoverability.

The loop follows ``VainF/TinyFusion:prune_by_learning.py``:

* the gates (:class:`~trainforge_tinyfusion.gates.GatedDepth`) and the weight update Delta W
  (LoRA on every linear, ``--delta-w --lora``; or all weights, ``--delta-w``; or none) are
  optimised together on the model's own training loss with masks sampled per sample;
* AdamW, weight decay 0, lr 1e-4 for Delta W and 10x (1e-3) for the gate logits; gradient
  clipping at 1.0; the step is skipped when the loss is NaN;
* tau anneals linearly 4 -> 0.1 and scaling stays at 100 over all steps;
* an EMA (decay 0.999) of the gate logits supplies the decision: in every group, the argmax
  option of the EMA logits;
* the pruned model is built from the *original* weights (Delta W is thrown away).

``TinyFusionConfig(estimator="rloo")`` is an opt-in departure from the reference: the gate
logits get an unbiased score-function gradient of the same objective instead of the
straight-through Gumbel gradient (see :func:`_rloo_objective`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainforge_tinyfusion.gates import GatedDepth, LinearAnneal, make_groups
from trainforge_tinyfusion.layouts import find_blocks, prune_layers
from trainforge_tinyfusion.lora import attach_lora, detach_lora, lora_parameters

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
ESTIMATORS = ("straight_through", "rloo")


@dataclass(frozen=True)
class TinyFusionConfig:
    """Search hyper-parameters; the defaults are the reference's
    (``VainF/TinyFusion:prune_by_learning.py``)."""

    tau_range: tuple[float, float] = (4.0, 0.1)  # --tau-range 4 0.1
    scaling_range: tuple[float, float] = (100.0, 100.0)  # --scaling-range 1e2 1e2
    lr: float = 1e-4  # lr = 1e-4 for Delta W
    gate_lr_mult: float = 10.0  # gates get 10 * lr
    weight_decay: float = 0.0  # AdamW(..., weight_decay=0.0)
    grad_clip: float = 1.0  # clip_grad_norm_(..., 1.0)
    ema_decay: float = 0.999  # --ema-decay 0.999
    delta_w: str = "lora"  # --delta-w --lora; "full" = --delta-w alone; "frozen" = neither
    lora_rank: int = 8  # --lora-rank 8
    lora_alpha: float = 16.0  # alpha = 2 * rank
    gate_init: float = 0.02  # torch.nn.init.constant_(g, 0.02)
    per_sample: bool = True  # gate.repeat(N, 1): one Gumbel draw per sample
    # "straight_through": gumbel_softmax(hard=True) (the reference); "rloo": two masks per
    # sample with shared data, t and noise, two-sample leave-one-out score-function gradient
    # for the logits (not in the reference; doubles the forward/backward work of a step)
    estimator: str = "straight_through"

    def __post_init__(self) -> None:
        for name in ("tau_range", "scaling_range"):
            rng = getattr(self, name)
            if not isinstance(rng, Sequence) or len(rng) != 2:
                raise ValueError(f"{name} must be a (start, end) pair, got {rng!r}")
            for v in rng:
                if (
                    isinstance(v, bool)
                    or not isinstance(v, int | float)
                    or not math.isfinite(v)
                    or v <= 0
                ):
                    raise ValueError(f"{name} values must be finite numbers > 0, got {rng!r}")
        for name in ("lr", "gate_lr_mult", "grad_clip", "lora_alpha"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v <= 0
            ):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.delta_w not in ("lora", "full", "frozen"):
            raise ValueError(f"delta_w must be 'lora', 'full' or 'frozen', got {self.delta_w!r}")
        if (
            isinstance(self.lora_rank, bool)
            or not isinstance(self.lora_rank, int)
            or self.lora_rank <= 0
        ):
            raise ValueError(f"lora_rank must be a positive int, got {self.lora_rank!r}")


@dataclass
class PruningResult:
    """What a pruning method chose and the pruned copy built from the original weights."""

    kept: list[int]
    model: nn.Module
    method: str
    depth: int
    scores: list[float] | None = None
    confidence: list[float] | None = None
    history: dict[str, list[float]] = field(default_factory=dict)


def _batches(data: Iterable[Any], steps: int | None) -> Iterable[Any]:
    """Cycle through ``data`` (re-iterating it) for ``steps`` batches, or one pass."""
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(
            "data must be an iterable of batches (a DataLoader, a list, ...), "
            f"got {type(data).__name__}"
        )
    produced = 0
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
            produced += 1
            if steps is not None and produced >= steps:
                return
        if empty:
            raise ValueError("data yielded no batches")
        if steps is None:
            return
        if iter(data) is data:  # a one-shot iterator: cannot cycle
            raise ValueError(
                f"data is a one-shot iterator that ran out after {produced} of steps={steps} "
                "batches; pass a re-iterable (a list or DataLoader)"
            )


def _check_loss_fn(loss_fn: Any) -> None:
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(model, batch) -> scalar tensor, got {loss_fn!r}"
        )


def _scalar_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(
            "loss_fn must return a scalar tensor, "
            f"got {type(loss).__name__} {getattr(loss, 'shape', '')}"
        )
    return loss.reshape(())


def _rng_state(devices: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor]], devices: list[int]) -> None:
    torch.set_rng_state(state[0])
    for d, s in zip(devices, state[1], strict=True):
        torch.cuda.set_rng_state(s, d)


def _per_sample(loss: Any, rows: int, per_sample: bool) -> torch.Tensor:
    """The rloo estimator's losses: ``(rows,)`` per sample, or ``(1,)`` with one mask per batch."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn must return a tensor, got {type(loss).__name__}")
    if not per_sample:
        return loss.mean().reshape(1)
    if loss.dim() != 1 or loss.shape[0] != rows:
        raise ValueError(
            "estimator='rloo' needs loss_fn(model, batch) to return the per-sample losses, "
            f"a 1-D tensor of the batch size ({rows}) that the blocks see, got shape "
            f"{tuple(loss.shape)}; or use per_sample=False (one mask per batch)"
        )
    return loss


def _rloo_objective(
    work: nn.Module, gates: GatedDepth, batch: Any, loss_fn: LossFn
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the two-sample leave-one-out (RLOO) score-function estimator.

    Every sample is run twice with the same data and the same random state (so the same t,
    noise and label dropout of a diffusion loss), under two independent hard masks m1, m2 drawn
    from the search distribution ``softmax(scaling * logits)`` (``gates`` in ``"categorical"``
    mode). Returns ``(objective, loss)``: ``loss`` is the mean of both runs' losses, whose
    ordinary gradient trains Delta W; ``objective`` adds the surrogate
    ``mean_i 0.5 (L1_i - L2_i) (log p(m1_i) - log p(m2_i))``, whose gradient in the logits is the
    unbiased RLOO estimate of the gradient of ``E_m[L(m)]``. It costs two forward/backward
    passes of the batch (the compute of a straight-through step at twice the batch).
    """
    devices = (
        list(range(torch.cuda.device_count()))
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else []
    )
    state = _rng_state(devices)
    raw1 = loss_fn(work, batch)
    c1 = gates.last_choices
    batch_rows = gates._mask.shape[0] if gates._mask is not None else None
    _set_rng_state(state, devices)
    gates.last_choices = None
    raw2 = loss_fn(work, batch)
    c2 = gates.last_choices
    if c1 is None or c2 is None or batch_rows is None:
        raise RuntimeError("loss_fn did not run the gated blocks of the model it was given")
    l1 = _per_sample(raw1, batch_rows, gates.per_sample)
    l2 = _per_sample(raw2, batch_rows, gates.per_sample)
    loss = 0.5 * (l1.mean() + l2.mean())
    adv = 0.5 * (l1 - l2).detach()
    surrogate = (adv * (gates.log_prob(c1) - gates.log_prob(c2))).mean()
    return loss + surrogate, loss


def learn_depth_pruning(
    model: nn.Module,
    data: Iterable[Any],
    loss_fn: LossFn,
    *,
    keep: int | None = None,
    block: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    steps: int | None = None,
    config: TinyFusionConfig | None = None,
    blocks: str | None = None,
    merge_lora: bool = False,
    log_every: int = 0,
) -> PruningResult:
    """Learn which ``keep`` of every ``block`` consecutive layers to keep (or explicit
    ``groups=[[N, M], ...]``) and return the kept indices and a pruned copy of ``model``.

    ``loss_fn(model, batch)`` is the model's own training loss on one batch (for a DiT, the
    diffusion loss); ``data`` is re-iterated until ``steps`` batches were used (default: one
    pass). ``model`` is left untouched: the search runs on a copy carrying the gates and Delta W,
    and the pruned model is cut from the original weights, so Delta W does not leak into it
    unless ``merge_lora=True`` (then LoRA / full updates are kept).

    With ``config.estimator="rloo"``, ``loss_fn`` must return the per-sample losses (shape
    ``(batch,)``; a scalar is accepted with ``per_sample=False``) and must draw its randomness
    from torch's global generator: each step runs it twice from the same random state.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_loss_fn(loss_fn)
    cfg = config if config is not None else TinyFusionConfig()
    if not isinstance(cfg, TinyFusionConfig):
        raise TypeError(f"config must be a TinyFusionConfig, got {type(cfg).__name__}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
        raise ValueError(f"steps must be a positive int or None, got {steps!r}")
    path, stack = find_blocks(model, blocks)
    group_list = make_groups(len(stack), keep, block, groups)
    if steps is None:
        try:
            steps = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(
                "data has no len(); pass steps= so the temperature schedule knows its length"
            ) from None
    if steps == 0:
        raise ValueError("data yielded no batches")

    work = copy.deepcopy(model)
    work.train()
    gates = GatedDepth(
        work,
        group_list,
        blocks=path,
        tau=cfg.tau_range[0],
        scaling=cfg.scaling_range[0],
        per_sample=cfg.per_sample,
        init=cfg.gate_init,
    )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gates.to(device)
    if cfg.estimator == "rloo":
        gates.set_mode("categorical")
        gates.generator = torch.Generator(device=device)
        gates.generator.manual_seed(int(torch.randint(0, 2**62, (1,))))
    if cfg.delta_w == "lora":
        attach_lora(work, cfg.lora_rank, cfg.lora_alpha)
        weight_params = lora_parameters(work)
    elif cfg.delta_w == "full":
        weight_params = [p for p in work.parameters() if p.requires_grad]
    else:
        for p in work.parameters():
            p.requires_grad_(False)
        weight_params = []
    groups_ = [{"params": list(gates.parameters()), "lr": cfg.lr * cfg.gate_lr_mult}]
    if weight_params:
        groups_.insert(0, {"params": weight_params, "lr": cfg.lr})
    opt = torch.optim.AdamW(groups_, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = [g.detach().clone() for g in gates.gumbel_gates]
    trainable = weight_params + list(gates.parameters())

    tau_sched = LinearAnneal(cfg.tau_range[0], cfg.tau_range[1], steps, "tau")
    scale_sched = LinearAnneal(cfg.scaling_range[0], cfg.scaling_range[1], steps, "scaling")
    history: dict[str, list[float]] = {"loss": [], "tau": []}
    skipped = 0
    step = 0
    for batch in _batches(data, steps):
        tau_sched(gates, step)
        scale_sched(gates, step)
        opt.zero_grad(set_to_none=True)
        if cfg.estimator == "rloo":
            objective, loss = _rloo_objective(work, gates, batch, loss_fn)
        else:
            objective = loss = _scalar_loss(loss_fn(work, batch))
        objective.backward()
        if torch.isnan(loss).any():
            skipped += 1  # the reference skips the update on a NaN loss
        else:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            opt.step()
        with torch.no_grad():
            for e, g in zip(ema, gates.gumbel_gates, strict=True):
                e.mul_(cfg.ema_decay).add_(g.detach(), alpha=1 - cfg.ema_decay)
        history["loss"].append(float(loss.detach()))
        history["tau"].append(gates.tau)
        step += 1
        if log_every and step % log_every == 0:
            logger.info(
                "step %d loss %.4f decision %s confidence %s",
                step,
                history["loss"][-1],
                gates.decisions(ema),
                [round(c, 3) for c in gates.confidence(ema)],
            )
    if step == 0:
        raise ValueError("data yielded no batches")
    if skipped:
        logger.warning("learn_depth_pruning: skipped %d of %d steps with a NaN loss", skipped, step)
    kept = gates.decisions(ema)
    confidence = gates.confidence(ema)
    history["gates_ema"] = [v for e in ema for v in e.tolist()]
    gates.remove()
    if merge_lora:
        if cfg.delta_w == "lora":
            detach_lora(work, merge=True)
        for p in work.parameters():
            p.requires_grad_(True)
        pruned = prune_layers(work, kept, blocks=path, inplace=True)
    else:
        pruned = prune_layers(model, kept, blocks=path)
    pruned.train(model.training)
    logger.info("learn_depth_pruning: kept %s (confidence %s)", kept, confidence)
    return PruningResult(
        kept=kept,
        model=pruned,
        method=f"learned ({cfg.delta_w}" + (", rloo)" if cfg.estimator == "rloo" else ")"),
        depth=len(stack),
        confidence=confidence,
        history=history,
    )
