"""When to grow, and what to reset: the paper's growth-timing rule and a two-stage plan.

The rule (``tongxuluo/prts:README.md``, "For growth timing d (tokens)"):

    log10(d) = 0.88 * log10(N) + 163.27 / log10(C) - 5.74,   C = 6 * N * D

with N the *target* (grown) model's parameters, D its token budget and C its FLOP budget.
It was fitted on runs of 410M-7B parameters and 10^20-10^23 FLOPs; far below that (toy
models) it returns more tokens than the whole budget, and :func:`plan_gstack` says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from trainforge_gstack.depth import DEFAULT_FACTOR, GrowthWarning

# tongxuluo/prts:README.md, growth timing formula.
TIMING_SLOPE = 0.88
TIMING_FLOPS_COEF = 163.27
TIMING_INTERCEPT = -5.74
# The FLOP range the rule was fitted on (the paper's growth-timing runs: 10^20 to 10^23);
# outside it the log-log fit gives budgets with no evidence behind them.
FITTED_FLOPS = (1e20, 1e23)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def growth_timing_tokens(
    n_params: float, flops: float | None = None, *, tokens: float | None = None
) -> float:
    """Tokens ``d`` to train the small model before growing (the paper's fitted rule).

    Give the target model's parameter count ``n_params`` and either its FLOP budget
    ``flops`` (C) or its token budget ``tokens`` (D, then C = 6 N D). Llama2-7B at 2T tokens
    gives about 11.1B tokens, Llama3-8B at 15T about 6.6B.
    """
    n = _positive("n_params", n_params)
    if (flops is None) == (tokens is None):
        raise ValueError("give exactly one of flops (C) and tokens (D)")
    c = 6.0 * n * _positive("tokens", tokens) if flops is None else _positive("flops", flops)
    if c <= 10.0:
        raise ValueError(f"the FLOP budget must exceed 10 (log10(C) > 1), got {c!r}")
    log_d = TIMING_SLOPE * math.log10(n) + TIMING_FLOPS_COEF / math.log10(c) + TIMING_INTERCEPT
    d = 10.0**log_d
    low, high = FITTED_FLOPS
    if not low / 10 <= c <= high * 10:
        warnings.warn(
            f"growth_timing_tokens: C={c:.3g} FLOPs is far outside the range the rule was "
            f"fitted on ({low:.0e}-{high:.0e}); its answer d={d:.3g} tokens is an "
            "extrapolation (pick the growth point by measurement at this scale)",
            GrowthWarning,
            stacklevel=2,
        )
    elif tokens is not None and d >= tokens:
        warnings.warn(
            f"growth_timing_tokens: the rule gives d={d:.3g} tokens, not below the budget "
            f"D={tokens:.3g}: there would be nothing left to train the grown model on",
            GrowthWarning,
            stacklevel=2,
        )
    return d


@dataclass(frozen=True)
class GStackPlan:
    """The G_stack recipe as the reference runs it (``tongxuluo/prts``: ``base_model.sh``,
    ``g_stack.sh``, ``pretrain/run_pretrain.py``).

    Stage 1 trains the small model (``L / factor`` blocks) for ``growth_tokens`` tokens;
    :func:`~trainforge_gstack.grow_depth` then stacks it ``factor`` times; stage 2 trains the
    grown model with a *fresh* optimizer (no state carried over), the learning-rate schedule
    restarted with its own warm-up, and data the small model has not seen.
    """

    n_params: float
    tokens: float
    factor: int = DEFAULT_FACTOR
    growth_tokens: float = 0.0
    # Stage 1 (base_model.sh): AdamW lr 1e-3 -> 1e-4, 3000 warm-up steps.
    small_lr: float = 1e-3
    small_min_lr: float = 1e-4
    # Stage 2 (g_stack.sh): lr 3e-4 -> 3e-5, warm-up 3000 steps again from iter 0.
    large_lr: float = 3e-4
    large_min_lr: float = 3e-5
    warmup_steps: int = 3000
    # Both stages: AdamW betas (0.9, 0.95), weight decay 0.1, gradient clipping 1.0.
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # pretrain/run_pretrain.py builds a new AdamW for the grown model (no state carried).
    reset_optimizer: bool = True
    # run_pretrain.py starts the grown model at iter_num 0: warm-up and cosine start again.
    restart_schedule: bool = True
    skip_seen_data: bool = True  # g_stack.sh --resume_id=5000: skip the small model's batches

    def __post_init__(self) -> None:
        for name in ("n_params", "tokens", "small_lr", "small_min_lr", "large_lr", "large_min_lr"):
            _positive(name, getattr(self, name))
        _positive("growth_tokens", self.growth_tokens)
        if isinstance(self.factor, bool) or not isinstance(self.factor, int) or self.factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {self.factor!r}")
        w = self.warmup_steps
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {w!r}")
        for name in ("reset_optimizer", "restart_schedule", "skip_seen_data"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.small_min_lr > self.small_lr or self.large_min_lr > self.large_lr:
            raise ValueError("the minimum learning rates must not exceed the peaks")
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            raise ValueError("weight_decay must be >= 0 and grad_clip positive (or None)")

    def lr(self, stage: int, iteration: int, horizon: int) -> float:
        """Learning rate at ``iteration`` of ``stage`` (1: small, 2: grown) whose cosine
        decays over ``horizon`` iterations (``run_pretrain.py`` ``get_lr``: linear warm-up
        from 0 over ``warmup_steps``, cosine to the minimum at ``horizon``, then flat)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        for name, value in (("iteration", iteration), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        peak, low = (
            (self.small_lr, self.small_min_lr) if stage == 1 else (self.large_lr, self.large_min_lr)
        )
        if iteration < self.warmup_steps:
            return peak * iteration / self.warmup_steps
        if iteration >= horizon:
            return low
        ratio = (iteration - self.warmup_steps) / max(1, horizon - self.warmup_steps)
        return low + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (peak - low)

    @property
    def small_params(self) -> float:
        """Approximate parameters of the small model (blocks dominate: ``N / factor``)."""
        return self.n_params / self.factor

    @property
    def small_flops(self) -> float:
        """Approximate compute of stage 1, ``6 * (N / g) * d``."""
        return 6.0 * self.small_params * self.growth_tokens

    @property
    def large_flops(self) -> float:
        """Compute of stage 2, ``6 * N * D``."""
        return 6.0 * self.n_params * self.tokens

    def steps(self, tokens_per_step: int) -> tuple[int, int]:
        """(stage-1 steps, stage-2 steps) at ``tokens_per_step`` tokens per optimizer step."""
        tps = tokens_per_step
        if isinstance(tps, bool) or not isinstance(tps, int) or tps <= 0:
            raise ValueError(f"tokens_per_step must be a positive integer, got {tokens_per_step!r}")
        return (
            max(1, round(self.growth_tokens / tokens_per_step)),
            max(1, round(self.tokens / tokens_per_step)),
        )


def plan_gstack(
    n_params: float,
    tokens: float,
    factor: int = DEFAULT_FACTOR,
    growth_tokens: float | None = None,
) -> GStackPlan:
    """A :class:`GStackPlan` for a target of ``n_params`` parameters trained on ``tokens``.

    ``growth_tokens`` defaults to :func:`growth_timing_tokens`; when the rule asks for more
    than the whole budget (it was fitted at 10^20+ FLOPs) a :class:`GrowthWarning` says so.
    A factor outside [2, 4] also warns (the paper's guideline: g = 4).
    """
    n = _positive("n_params", n_params)
    d_total = _positive("tokens", tokens)
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    if not 2 <= factor <= 4:
        warnings.warn(
            f"plan_gstack: growth factor {factor} is outside [2, 4] (paper: g=4)",
            GrowthWarning,
            stacklevel=2,
        )
    if growth_tokens is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", GrowthWarning)
            d = growth_timing_tokens(n, tokens=d_total)
        if d < d_total:  # the rule's own range warning, if any, is the one to see
            for w in caught:
                warnings.warn(w.message, w.category, stacklevel=2)
        else:  # says more than the range warning: the answer is not even usable
            warnings.warn(
                f"plan_gstack: the timing rule gives d={d:.3g} tokens, not below the budget "
                f"D={d_total:.3g}; it was fitted at 10^20-10^23 FLOPs and does not extrapolate "
                "to this scale. Pass growth_tokens explicitly.",
                GrowthWarning,
                stacklevel=2,
            )
    else:
        d = _positive("growth_tokens", growth_tokens)
    return GStackPlan(n_params=n, tokens=d_total, factor=factor, growth_tokens=d)
