"""Model surgery for SLTrain: swap targeted ``nn.Linear`` layers, merge back, save and load.

Works on any ``nn.Module``; the default targets are the attention and MLP projections of
transformers Llama-style models (embeddings, norms and the LM head stay dense).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainforge_core.surgery import Replacement, count_parameters, replace_modules
from trainforge_sltrain.linear import (
    DEFAULT_ALPHA,
    DEFAULT_RANK,
    DEFAULT_SPARSITY,
    SLTrainLinear,
    _check_alpha,
    _check_int,
    _check_sparsity,
)

__all__ = [
    "DEFAULT_TARGETS",
    "SLTrainReport",
    "apply_sltrain",
    "load_sltrain",
    "merge_sltrain",
    "save_sltrain",
    "sltrain_layers",
]

log = logging.getLogger(__name__)

# andyjm3/SLTrain:torchrun_main.py: target_modules_list = ["attn", "mlp", "attention"]
# (substring match on the module name; in LLaMA: q, k, v, o, gate, up, down projections).
DEFAULT_TARGETS: tuple[str, ...] = ("attn", "mlp", "attention")
"""Module-name fragments whose Linears `apply_sltrain` replaces by default."""
_META_KEY = "trainforge_sltrain"


@dataclass(frozen=True)
class SLTrainReport:
    """What :func:`apply_sltrain` changed."""

    replaced: list[Replacement]
    params_before: int
    params_after: int
    layers: dict[str, dict] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Parameters after / before."""
        return self.params_after / self.params_before if self.params_before else float("nan")

    def __str__(self) -> str:
        return (
            f"SLTrain replaced {len(self.replaced)} linear layers: parameters "
            f"{self.params_before:,} -> {self.params_after:,} ({self.ratio:.3f}x)"
        )


def _check_targets(targets: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = (targets,)
    if not isinstance(targets, Sequence) or not targets:
        raise TypeError(f"targets must be a non-empty sequence of strings, got {targets!r}")
    out = tuple(targets)
    if not all(isinstance(t, str) and t for t in out):
        raise TypeError(f"targets must be non-empty strings, got {targets!r}")
    return out


def _layer_config(layer: SLTrainLinear) -> dict:
    return {
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "rank": layer.rank,
        "sparsity": layer.sparsity,
        "alpha": layer.alpha,
        "bias": layer.bias is not None,
        "index_dtype": str(layer.sparse_index.dtype).removeprefix("torch."),
    }


def sltrain_layers(model: nn.Module) -> dict[str, SLTrainLinear]:
    """The :class:`SLTrainLinear` layers of ``model`` by qualified name."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {n: m for n, m in model.named_modules() if isinstance(m, SLTrainLinear)}


def apply_sltrain(
    model: nn.Module,
    rank: int = DEFAULT_RANK,
    sparsity: float = DEFAULT_SPARSITY,
    alpha: float = DEFAULT_ALPHA,
    targets: Sequence[str] | str = DEFAULT_TARGETS,
    *,
    seed: int | None = None,
    index_dtype: torch.dtype | None = None,
) -> SLTrainReport:
    """Replace, in place, every ``nn.Linear`` whose qualified name contains one of
    ``targets`` by a freshly initialised :class:`SLTrainLinear` (training from scratch: the
    old weights are dropped, as in the reference).

    ``sparsity=0`` gives the pure low-rank baseline. With ``seed`` the supports and
    initial values are drawn from one generator in module order (reproducible); without it
    from the global RNG. All matched layers are validated before any is replaced: a rank
    above ``min(in, out)`` of some layer, or targets that match nothing, raise ValueError.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_int("rank", rank)
    sparsity = _check_sparsity(sparsity)
    alpha = _check_alpha(alpha)
    targets = _check_targets(targets)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    names = [
        n for n, m in model.named_modules() if type(m) is nn.Linear and any(t in n for t in targets)
    ]
    if not names:
        raise ValueError(
            f"targets={targets!r} match no nn.Linear in {type(model).__name__}; "
            "name substrings of linear layers to replace (e.g. 'attn', 'mlp')"
        )
    for n in names:
        lin = model.get_submodule(n)
        if rank > min(lin.in_features, lin.out_features):
            raise ValueError(
                f"rank={rank} exceeds min(in, out) = {min(lin.in_features, lin.out_features)} "
                f"of layer {n!r} ({lin.out_features}x{lin.in_features})"
            )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    params_before = count_parameters(model)
    wanted = set(names)

    def factory(name: str, lin: nn.Module) -> nn.Module:
        assert isinstance(lin, nn.Linear)
        return SLTrainLinear(
            lin.in_features, lin.out_features, rank, sparsity, alpha,
            bias=lin.bias is not None, generator=generator, index_dtype=index_dtype,
            device=lin.weight.device, dtype=lin.weight.dtype,
        )  # fmt: skip

    replaced = replace_modules(model, lambda n, m: n in wanted, factory, what="apply_sltrain")
    layers = {n: _layer_config(m) for n, m in sltrain_layers(model).items()}
    report = SLTrainReport(replaced, params_before, count_parameters(model), layers)
    log.info("%s", report)
    return report


def merge_sltrain(model: nn.Module) -> list[Replacement]:
    """Replace every :class:`SLTrainLinear` by a plain ``nn.Linear`` with the materialised
    weight (for export or inference). In place; warns when there is nothing to merge."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return replace_modules(
        model,
        lambda n, m: isinstance(m, SLTrainLinear),
        lambda n, m: m.to_linear(),  # type: ignore[union-attr]
        what="merge_sltrain",
    )


def save_sltrain(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state (supports included) to a safetensors file; the layer
    configurations go into the file's metadata so :func:`load_sltrain` can rebuild them."""
    from safetensors.torch import save_model

    layers = sltrain_layers(model)
    if not layers:
        raise ValueError(
            "save_sltrain: model has no SLTrainLinear layers; call apply_sltrain first"
        )
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a directory; give a file name")
    meta = {n: _layer_config(m) for n, m in layers.items()}
    save_model(model, str(path), metadata={_META_KEY: json.dumps(meta)})
    return path


def load_sltrain(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a file written by :func:`save_sltrain` into ``model`` (dense or already
    converted): layers named in the file's metadata become :class:`SLTrainLinear` with the
    stored shapes, then every tensor (supports included) is loaded strictly."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SLTrain checkpoint at {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get(_META_KEY)
    if meta is None:
        raise ValueError(
            f"{str(path)!r} has no {_META_KEY!r} metadata; not written by save_sltrain"
        )
    configs: dict[str, dict] = json.loads(meta)
    for name, cfg in configs.items():
        try:
            current = model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"checkpoint layer {name!r} does not exist in the model") from exc
        if isinstance(current, SLTrainLinear) and _layer_config(current) == cfg:
            continue
        if not isinstance(current, nn.Linear | SLTrainLinear):
            raise ValueError(f"checkpoint layer {name!r} is a {type(current).__name__} here")
        ref = next(current.parameters())
        new = SLTrainLinear(
            cfg["in_features"], cfg["out_features"], cfg["rank"], cfg["sparsity"],
            cfg["alpha"], bias=cfg["bias"], index_dtype=getattr(torch, cfg["index_dtype"]),
            device=ref.device, dtype=ref.dtype,
        )  # fmt: skip
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    device = next(model.parameters()).device
    load_model(model, str(path), strict=True, device=str(device))
    return model
