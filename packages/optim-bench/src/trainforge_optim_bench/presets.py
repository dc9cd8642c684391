"""The paper's tuned 130M baselines and Phase I sweep grids, as flat configs.

Keys follow this package's names (marin's in brackets): ``lr`` [learning_rate],
``weight_decay``, ``beta1``, ``beta2``, ``eps`` [epsilon], ``momentum``, ``muon_eps``
[muon_epsilon], ``adam_lr_ratio`` [muon_to_adam_lr / scion_to_signum_lr], ``gamma``,
``shampoo_beta``, ``precondition_frequency``, ``preconditioner_update_probability``,
plus trainer knobs ``warmup`` (steps), ``decay`` (WSD decay fraction; None = decay over
everything after warm-up), ``schedule`` ("linear" or "cosine"), ``min_lr_ratio``,
``max_grad_norm``, ``train_batch_size`` (sequences of 4,096 tokens).

BASELINES: the best configuration (first row) of each optimiser's "130m on 1x Chinchilla
Data" table in ``marin-community/marin:experiments/optimizer_sweep/Analysis/PhaseI/tex/
hyperparam_tables_<opt>.tex``, with its final C4-en loss. Adam-mini, Scion and Kron are the
sweep's *starting* configs (``experiments/optimizer_sweep/PhaseI/exp725_<opt>sweep_130M_1.py``),
not its result: their tables were not transcribed here. ``cautious_lion`` is ours (Lion's
tuned config with the cautious mask; the paper's Cautious is the AdamW variant).

GRIDS: the Phase I sweep grids of the same ``exp725_<opt>sweep_130M_1.py`` files, less the
knobs this package does not implement (SOAP/Kron ``block_size`` and blocking, Kron's
``preconditioner_lr``, ``normalize_grads`` and ``update_prob_flat_start``).

A 130M x 1 Chinchilla run is about 5,120 steps (20 x 134,217,728 tokens / (128 x 4,096));
warm-up counts are in those steps. Scale them to your run as a fraction.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

PAPER_130M_1X_STEPS = 20 * 134_217_728 // (128 * 4096)
"""Training steps of the paper's 130M model at 1x Chinchilla data (batch 128 x 4,096 tokens)."""

_TRAIN = dict(min_lr_ratio=0.0, max_grad_norm=1.0, train_batch_size=128)

_BASELINES: dict[str, dict[str, Any]] = {
    "adamw": dict(
        lr=8e-3,
        weight_decay=0.1,
        beta1=0.9,
        beta2=0.98,
        eps=1e-20,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "nadamw": dict(
        lr=8e-3,
        weight_decay=0.1,
        beta1=0.95,
        beta2=0.98,
        eps=1e-25,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "lion": dict(
        lr=2e-3,
        weight_decay=0.7,
        beta1=0.9,
        beta2=0.95,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "mars": dict(
        lr=1.6e-2,
        weight_decay=0.1,
        beta1=0.9,
        beta2=0.95,
        eps=1e-25,
        gamma=0.025,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "cautious": dict(
        lr=8e-3,
        weight_decay=0.1,
        beta1=0.95,
        beta2=0.98,
        eps=1e-15,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "cautious_lion": dict(
        lr=2e-3,
        weight_decay=0.7,
        beta1=0.9,
        beta2=0.95,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "adam_mini": dict(
        lr=8e-3,
        weight_decay=0.1,
        beta1=0.9,
        beta2=0.98,
        eps=1e-20,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "muon": dict(
        lr=1.6e-2,
        weight_decay=0.1,
        momentum=0.95,
        muon_eps=1e-5,
        adam_lr_ratio=0.2,
        beta1=0.8,
        beta2=0.98,
        eps=1e-15,
        warmup=0,
        decay=0.8,
        schedule="linear",
        **_TRAIN,
    ),
    "scion": dict(
        lr=1.6e-2,
        weight_decay=0.0,
        momentum=0.98,
        adam_lr_ratio=0.2,
        warmup=0,
        decay=0.4,
        schedule="linear",
        **_TRAIN,
    ),
    "kron": dict(
        lr=2e-3,
        weight_decay=0.9,
        beta1=0.98,
        preconditioner_update_probability=0.05,
        warmup=2000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
    "soap": dict(
        lr=1.6e-2,
        weight_decay=0.1,
        beta1=0.95,
        beta2=0.98,
        eps=1e-15,
        shampoo_beta=0.95,
        precondition_frequency=1,
        warmup=1000,
        decay=None,
        schedule="cosine",
        **_TRAIN,
    ),
}

PAPER_LOSS_130M_1X: MappingProxyType = MappingProxyType(
    {
        "adamw": 3.529,
        "nadamw": 3.531,
        "lion": 3.552,
        "mars": 3.537,
        "cautious": 3.535,
        "muon": 3.464,
        "soap": 3.483,
    }
)
"""The paper's final losses at 130M parameters and 1x data, by optimizer."""

_BATCH = [128, 256, 512, 1024]
_GRIDS: dict[str, dict[str, list[Any]]] = {
    "adamw": dict(
        lr=[4e-3, 8e-3, 1.6e-2, 3.2e-2],
        weight_decay=[0, 0.1, 0.2],
        warmup=[500, 1000, 2000, 4000],
        beta1=[0.9, 0.95, 0.98],
        beta2=[0.9, 0.95, 0.98],
        eps=[1e-25, 1e-20, 1e-15, 1e-10],
        max_grad_norm=[0, 1.0, 2.0],
        train_batch_size=_BATCH,
    ),
    "nadamw": dict(
        lr=[8e-3, 1.6e-2, 3.2e-2],
        weight_decay=[0, 0.1, 0.2],
        warmup=[500, 1000, 2000, 4000],
        beta1=[0.8, 0.9, 0.95, 0.98],
        beta2=[0.9, 0.95, 0.98],
        eps=[1e-25, 1e-20, 1e-15, 1e-10],
        max_grad_norm=[0, 1.0, 2.0],
        train_batch_size=_BATCH,
    ),
    "lion": dict(
        lr=[5e-4, 1e-3, 2e-3, 4e-3, 8e-3],
        weight_decay=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
        warmup=[500, 1000, 2000, 4000],
        beta1=[0.8, 0.9, 0.95, 0.98],
        beta2=[0.9, 0.95, 0.98],
        max_grad_norm=[0, 1.0, 2.0],
        train_batch_size=_BATCH,
    ),
    "mars": dict(
        lr=[8e-3, 1.6e-2, 3.2e-2],
        weight_decay=[0, 0.1, 0.2],
        warmup=[500, 1000, 2000, 4000],
        beta1=[0.8, 0.9, 0.95, 0.98],
        beta2=[0.9, 0.95, 0.98, 0.99],
        gamma=[0.0125, 0.025, 0.05, 0.1],
        eps=[1e-30, 1e-25, 1e-20, 1e-15, 1e-10],
        train_batch_size=_BATCH,
    ),
    "cautious": dict(
        lr=[8e-3, 1.6e-2, 3.2e-2],
        weight_decay=[0, 0.1, 0.2],
        warmup=[500, 1000, 2000, 4000],
        beta1=[0.8, 0.9, 0.95, 0.98],
        beta2=[0.9, 0.95, 0.98],
        eps=[1e-25, 1e-20, 1e-15, 1e-10],
        max_grad_norm=[0, 1.0, 2.0],
        train_batch_size=_BATCH,
    ),
    "adam_mini": dict(
        lr=[4e-3, 8e-3, 1.6e-2, 3.2e-2],
        weight_decay=[0, 0.1, 0.2],
        warmup=[500, 1000, 2000, 4000],
        beta1=[0.9, 0.95, 0.98],
        beta2=[0.9, 0.95, 0.98],
        eps=[1e-25, 1e-20, 1e-15, 1e-10],
        max_grad_norm=[0, 1.0, 2.0],
        train_batch_size=_BATCH,
    ),
    "muon": dict(
        lr=[8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 1.28e-1],
        weight_decay=[0, 0.1, 0.2],
        momentum=[0.8, 0.9, 0.95, 0.98],
        beta1=[0.8, 0.9, 0.95, 0.98],
        beta2=[0.9, 0.95, 0.98],
        eps=[1e-25, 1e-20, 1e-15, 1e-10],
        muon_eps=[1e-25, 1e-20, 1e-15, 1e-10, 1e-5],
        max_grad_norm=[0, 1.0, 2.0],
        decay=[0.2, 0.4, 0.6, 0.8, 1.0],
        adam_lr_ratio=[0.1, 0.2, 0.3],
        train_batch_size=_BATCH,
    ),
    "scion": dict(
        lr=[8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 1.28e-1],
        weight_decay=[0, 0.1, 0.2],
        momentum=[0.8, 0.9, 0.95, 0.98],
        max_grad_norm=[0, 1.0, 2.0],
        decay=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        adam_lr_ratio=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        train_batch_size=_BATCH,
    ),
    "kron": dict(
        lr=[5e-4, 1e-3, 2e-3, 4e-3, 8e-3],
        weight_decay=[0.0, 0.5, 0.7, 0.9],
        beta1=[0.9, 0.95, 0.98],
        max_grad_norm=[0.0, 1.0, 2.0],
        preconditioner_update_probability=[0.05, 0.1],
        warmup=[1000, 2000, 4000],
        train_batch_size=_BATCH,
    ),
    "soap": dict(
        lr=[4e-3, 8e-3, 1.6e-2],
        weight_decay=[0, 0.1, 0.2],
        warmup=[500, 1000, 2000],
        beta1=[0.8, 0.9, 0.95],
        beta2=[0.9, 0.95, 0.98, 0.99],
        shampoo_beta=[0.9, 0.95, 0.98, 0.99],
        precondition_frequency=[1, 5],
        eps=[1e-20, 1e-15, 1e-10],
        train_batch_size=[128, 256, 512],
    ),
}
_GRIDS["cautious_lion"] = dict(_GRIDS["lion"])

BASELINES: MappingProxyType = MappingProxyType(
    {k: MappingProxyType(v) for k, v in _BASELINES.items()}
)
"""Each optimizer's tuned 130M x 1 Chinchilla configuration (the paper's Phase I best
rows), by name."""
GRIDS: MappingProxyType = MappingProxyType(
    {k: MappingProxyType({kk: tuple(vv) for kk, vv in v.items()}) for k, v in _GRIDS.items()}
)
"""Each optimizer's Phase I sweep grid (the knobs this package implements), by name."""

TRAINER_KEYS = ("warmup", "decay", "schedule", "min_lr_ratio", "max_grad_norm", "train_batch_size")


def baseline(name: str) -> dict[str, Any]:
    """A mutable copy of ``BASELINES[name]`` (unknown names list the known ones)."""
    if name not in BASELINES:
        raise ValueError(f"unknown optimizer {name!r}; known: {sorted(BASELINES)}")
    return dict(BASELINES[name])


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(optimiser hyper-parameters, trainer knobs) of a flat config."""
    if not isinstance(config, dict | MappingProxyType):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    opt = {k: v for k, v in config.items() if k not in TRAINER_KEYS}
    train = {k: v for k, v in config.items() if k in TRAINER_KEYS}
    return opt, train
