"""`build_optimizer(name, model, **hparams)`: the paper's optimisers, grouped the paper's way.

Which implementation each name uses (README "Hyper-parameters" has the table):

========================  ==========================================================
adamw                     ``torch.optim.AdamW`` (fused on CUDA)
nadamw                    in-package :class:`NAdamW` (optax Nesterov Adam)
lion, cautious_lion       ``pytorch_optimizer.Lion`` (``cautious=True`` for the latter)
mars                      ``pytorch_optimizer.MARS`` (MARS-AdamW, also on 1-D params)
cautious                  in-package :class:`CautiousAdamW` (Levanter's mask rescale)
adam_mini                 ``pytorch_optimizer.AdamMini`` (needs the model's heads/width)
muon                      ``torch.optim.Muon`` on 2-D hidden weights + ``torch.optim.AdamW``
                          on embeddings, head, norms, biases at ``adam_lr_ratio * lr``
scion                     ``pytorch_optimizer.SCION`` (spectral LMO) on 2-D hidden weights +
                          in-package :class:`Signum` elsewhere at ``adam_lr_ratio * lr``
kron                      ``pytorch_optimizer.Kron`` (PSGD Kron)
soap                      in-package :class:`SOAP`
========================  ==========================================================

Hyper-parameters left out take the paper's tuned 130M value (:data:`BASELINES`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from trainforge_optim_bench.adam_variants import CautiousAdamW, NAdamW, Signum
from trainforge_optim_bench.combined import GroupedOptimizer
from trainforge_optim_bench.grouping import decay_groups, param_groups_for_matrix_opt
from trainforge_optim_bench.presets import BASELINES, TRAINER_KEYS
from trainforge_optim_bench.soap import SOAP

log = logging.getLogger(__name__)

_COMMON = ("lr", "weight_decay")
KNOBS: dict[str, tuple[str, ...]] = {
    "adamw": (*_COMMON, "beta1", "beta2", "eps"),
    "nadamw": (*_COMMON, "beta1", "beta2", "eps"),
    "lion": (*_COMMON, "beta1", "beta2"),
    "cautious_lion": (*_COMMON, "beta1", "beta2"),
    "mars": (*_COMMON, "beta1", "beta2", "eps", "gamma"),
    "cautious": (*_COMMON, "beta1", "beta2", "eps"),
    "adam_mini": (*_COMMON, "beta1", "beta2", "eps", "num_heads", "num_kv_heads", "hidden_size"),
    "muon": (
        *_COMMON,
        "momentum",
        "muon_eps",
        "adam_lr_ratio",
        "beta1",
        "beta2",
        "eps",
        "ns_steps",
        "nesterov",
        "adjust_lr_fn",
    ),
    "scion": (*_COMMON, "momentum", "adam_lr_ratio"),
    "kron": (*_COMMON, "beta1", "preconditioner_update_probability", "max_size_triangular"),
    "soap": (
        *_COMMON,
        "beta1",
        "beta2",
        "eps",
        "shampoo_beta",
        "precondition_frequency",
        "max_precond_dim",
    ),
}
"""The hyper-parameters `build_optimizer` accepts for each optimizer name."""
OPTIMIZERS: tuple[str, ...] = tuple(KNOBS)
"""Every optimizer name `build_optimizer` knows."""
MATRIX_OPTIMIZERS = ("muon", "scion")
"""Optimizers that act on 2-D hidden weights only (AdamW or Signum takes the rest)."""

_UNIT = ("beta1", "beta2", "momentum", "shampoo_beta")  # in [0, 1)


def _validate(name: str, hp: dict[str, Any]) -> None:
    for key, value in hp.items():
        if key in ("nesterov",):
            if not isinstance(value, bool):
                raise TypeError(f"{key} must be a bool, got {value!r}")
            continue
        if key == "adjust_lr_fn":
            if value not in ("original", "match_rms_adamw"):
                raise ValueError(
                    f"adjust_lr_fn must be 'original' or 'match_rms_adamw', got {value!r}"
                )
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name}: {key} must be a finite number, got {value!r}")
        if key in ("lr", "adam_lr_ratio") and not value > 0:
            raise ValueError(f"{name}: {key} must be > 0, got {value!r}")
        if key in ("weight_decay", "eps", "muon_eps", "gamma") and value < 0:
            raise ValueError(f"{name}: {key} must be >= 0, got {value!r}")
        if key in _UNIT and not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: {key} must be in [0, 1), got {value!r}")
        if key == "preconditioner_update_probability" and not 0.0 < value <= 1.0:
            raise ValueError(f"{name}: {key} must be in (0, 1], got {value!r}")
        if key in (
            "precondition_frequency",
            "ns_steps",
            "num_heads",
            "num_kv_heads",
            "hidden_size",
            "max_size_triangular",
        ) and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}: {key} must be a positive integer, got {value!r}")
        if key == "max_precond_dim" and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{name}: {key} must be a non-negative integer, got {value!r}")


def resolve_hparams(name: str, **hparams: Any) -> dict[str, Any]:
    """``hparams`` completed with the paper's 130M preset and checked (``wd`` = weight_decay)."""
    if name not in KNOBS:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(KNOBS)}")
    if "wd" in hparams:
        if "weight_decay" in hparams:
            raise TypeError("give weight_decay or its alias wd, not both")
        hparams["weight_decay"] = hparams.pop("wd")
    if "betas" in hparams:
        betas = hparams.pop("betas")
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        hparams.setdefault("beta1", betas[0])
        hparams.setdefault("beta2", betas[1])
    unknown = sorted(set(hparams) - set(KNOBS[name]) - set(TRAINER_KEYS))
    if unknown:
        raise TypeError(f"{name} takes no hyper-parameter {unknown}; allowed: {list(KNOBS[name])}")
    preset = {k: v for k, v in BASELINES[name].items() if k in KNOBS[name]}
    resolved = {**preset, **{k: v for k, v in hparams.items() if k in KNOBS[name]}}
    _validate(name, resolved)
    return resolved


def _adamw(params: list[dict], lr: float, hp: dict[str, Any]) -> torch.optim.Optimizer:
    fused = all(p.is_cuda for g in params for p in g["params"]) or None
    return torch.optim.AdamW(
        params,
        lr=lr,
        betas=(hp.get("beta1", 0.9), hp.get("beta2", 0.95)),
        eps=hp.get("eps", 1e-8),
        fused=fused,
    )


def _matrix_split(model: nn.Module, name: str, hp: dict[str, Any]):  # type: ignore[no-untyped-def]
    grouping = param_groups_for_matrix_opt(model)
    if not grouping.matrix_params:
        raise ValueError(
            f"{name} needs 2-D hidden weights, but {type(model).__name__} has none outside "
            "embeddings and the head; use an element-wise optimizer such as 'adamw'"
        )
    rest = [{"params": grouping.adam_decay_params, "weight_decay": hp["weight_decay"]}]
    if grouping.adam_no_decay_params:
        rest.append({"params": grouping.adam_no_decay_params, "weight_decay": 0.0})
    rest = [g for g in rest if g["params"]]
    return grouping, rest


def _muon(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    grouping, rest = _matrix_split(model, "muon", hp)
    children: dict[str, torch.optim.Optimizer] = {
        "muon": torch.optim.Muon(
            grouping.matrix_params,
            lr=hp["lr"],
            weight_decay=hp["weight_decay"],
            momentum=hp["momentum"],
            nesterov=hp.get("nesterov", True),
            eps=max(hp["muon_eps"], 1e-30),
            ns_steps=hp.get("ns_steps", 5),
            # sqrt(max(1, fan_out / fan_in)): Levanter's scale_with_muon
            adjust_lr_fn=hp.get("adjust_lr_fn", "original"),
        )
    }
    if rest:
        children["adamw"] = _adamw(rest, hp["lr"] * hp["adam_lr_ratio"], hp)
    return GroupedOptimizer(children)


def _scion(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    from pytorch_optimizer import SCION
    from pytorch_optimizer.optimizer.scion import LMONorm

    grouping, rest = _matrix_split(model, "scion", hp)
    # pytorch-optimizer's momentum is the weight of the new gradient (1 - the paper's)
    children: dict[str, torch.optim.Optimizer] = {
        "scion": SCION(
            grouping.matrix_params,
            lr=hp["lr"],
            momentum=1.0 - hp["momentum"],
            norm_type=LMONorm.SPECTRAL,
            weight_decay=hp["weight_decay"],
            weight_decouple=True,
        )
    }
    if rest:
        children["signum"] = Signum(
            rest, lr=hp["lr"] * hp["adam_lr_ratio"], momentum=hp["momentum"]
        )
    return GroupedOptimizer(children)


def _adam_mini(model: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    from pytorch_optimizer import AdamMini

    config = getattr(model, "config", None)
    hidden = hp.get("hidden_size", getattr(config, "hidden_size", None))
    heads = hp.get("num_heads", getattr(config, "num_attention_heads", None))
    kv = hp.get("num_kv_heads", getattr(config, "num_key_value_heads", heads))
    if hidden is None or heads is None:
        raise ValueError(
            "adam_mini needs hidden_size and num_heads: pass them, or a model with a "
            "transformers config"
        )
    return AdamMini(
        model,
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        weight_decay=hp["weight_decay"],
        num_embeds=hidden,
        num_heads=heads,
        num_query_groups=kv,
        eps=hp["eps"],
    )


_BUILDERS: dict[str, Callable[[nn.Module, dict[str, Any]], torch.optim.Optimizer]] = {
    "adamw": lambda m, hp: _adamw(decay_groups(m, hp["weight_decay"]), hp["lr"], hp),
    "nadamw": lambda m, hp: NAdamW(
        decay_groups(m, hp["weight_decay"]),
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        eps=hp["eps"],
    ),
    "cautious": lambda m, hp: CautiousAdamW(
        decay_groups(m, hp["weight_decay"]),
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        eps=hp["eps"],
    ),
    "soap": lambda m, hp: SOAP(
        decay_groups(m, hp["weight_decay"]),
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        shampoo_beta=hp["shampoo_beta"],
        eps=hp["eps"],
        precondition_frequency=hp["precondition_frequency"],
        max_precond_dim=hp.get("max_precond_dim", 10000),
    ),
    "muon": _muon,
    "scion": _scion,
    "adam_mini": _adam_mini,
}


def _lion(cautious: bool) -> Callable[[nn.Module, dict[str, Any]], torch.optim.Optimizer]:
    def build(m: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
        from pytorch_optimizer import Lion

        return Lion(
            decay_groups(m, hp["weight_decay"]),
            lr=hp["lr"],
            betas=(hp["beta1"], hp["beta2"]),
            weight_decouple=True,
            cautious=cautious,
        )

    return build


def _mars(m: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    from pytorch_optimizer import MARS

    groups = decay_groups(m, hp["weight_decay"])
    return MARS(
        groups,
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        gamma=hp["gamma"],
        mars_type="adamw",
        optimize_1d=True,
        eps=hp["eps"],
        weight_decouple=True,
    )


def _kron(m: nn.Module, hp: dict[str, Any]) -> torch.optim.Optimizer:
    from pytorch_optimizer import Kron

    # PSGD's multi-operand einsums need opt_einsum's contraction order (torch uses it when
    # installed); without it torch contracts left to right through an outer product of the
    # preconditioner factors (a 10M-parameter Llama asked for 1 TB).
    if not torch.backends.opt_einsum.is_available():
        raise RuntimeError("kron needs the opt-einsum package (pip install opt-einsum)")

    return Kron(
        decay_groups(m, hp["weight_decay"]),
        lr=hp["lr"],
        momentum=hp["beta1"],
        weight_decouple=True,
        pre_conditioner_update_probability=hp["preconditioner_update_probability"],
        # dims above this get a diagonal factor (the paper blocked at 256; a full
        # vocabulary-sized triangular factor costs O(vocab^3) per update)
        max_size_triangular=hp.get("max_size_triangular", 2048),
    )


_BUILDERS.update(lion=_lion(False), cautious_lion=_lion(True), mars=_mars, kron=_kron)


def build_optimizer(name: str, model: nn.Module, **hparams: Any) -> torch.optim.Optimizer:
    """The paper's optimiser ``name`` for ``model``'s trainable parameters.

    ``hparams`` override the paper's tuned 130M preset (:data:`BASELINES`); ``wd`` is an
    alias of ``weight_decay`` and ``betas=(b1, b2)`` of ``beta1``/``beta2``. Trainer knobs
    of a flat config (``warmup``, ``decay``, ``max_grad_norm`` ...) are accepted and ignored,
    so a tuner config can be passed whole. Matrix optimisers (``muon``, ``scion``) use
    :func:`param_groups_for_matrix_opt` and return a :class:`GroupedOptimizer`.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    hp = resolve_hparams(name, **hparams)
    hp.setdefault("weight_decay", 0.0)
    optimizer = _BUILDERS[name](model, hp)
    log.info("build_optimizer(%s): %s", name, {k: v for k, v in hp.items()})
    return optimizer
