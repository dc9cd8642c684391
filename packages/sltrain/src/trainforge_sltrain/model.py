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
    _check_init_b,
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
    "sltrain_from_pretrained",
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
    init_b: str = "zeros",
) -> SLTrainReport:
    """Replace, in place, every ``nn.Linear`` whose qualified name contains one of
    ``targets`` by a freshly initialised :class:`SLTrainLinear` (training from scratch: the
    old weights are dropped, as in the reference).

    ``sparsity=0`` gives the pure low-rank baseline. With ``seed`` the supports and
    initial values are drawn from one generator in module order (reproducible); without it
    from the global RNG. ``init_b="kaiming"`` starts ``B`` Kaiming-uniform instead of zero
    (the fair pure low-rank baseline; see :class:`SLTrainLinear`). All matched layers are
    validated before any is replaced: a rank above ``min(in, out)`` of some layer, or
    targets that match nothing, raise ValueError.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_int("rank", rank)
    sparsity = _check_sparsity(sparsity)
    alpha = _check_alpha(alpha)
    targets = _check_targets(targets)
    _check_init_b(init_b)
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
            init_b=init_b, device=lin.weight.device, dtype=lin.weight.dtype,
        )  # fmt: skip

    replaced = replace_modules(model, lambda n, m: n in wanted, factory, what="apply_sltrain")
    layers = {n: _layer_config(m) for n, m in sltrain_layers(model).items()}
    _set_config_marker(model, layers)
    report = SLTrainReport(replaced, params_before, count_parameters(model), layers)
    log.info("%s", report)
    return report


def merge_sltrain(model: nn.Module) -> list[Replacement]:
    """Replace every :class:`SLTrainLinear` by a plain ``nn.Linear`` with the materialised
    weight (for export or inference). In place; warns when there is nothing to merge."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    done = replace_modules(
        model,
        lambda n, m: isinstance(m, SLTrainLinear),
        lambda n, m: m.to_linear(),  # type: ignore[union-attr]
        what="merge_sltrain",
    )
    if done:
        _set_config_marker(model, {})  # a merged model saves and loads as a plain one
    return done


def _set_config_marker(model: nn.Module, layers: dict[str, dict]) -> None:
    """Record the SLTrain layers in a transformers model's config (``config.json`` after
    ``save_pretrained``), so a checkpoint directory says how to rebuild its layers, as the
    reference's ``splora_config.json`` does (andyjm3/SLTrain:splora/splora_model.py)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    if layers:
        setattr(config, _META_KEY, {"layers": layers})
    elif hasattr(config, _META_KEY):
        delattr(config, _META_KEY)


def save_sltrain(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state (supports included) to a safetensors file; the layer
    configurations go into the file's metadata so :func:`load_sltrain` can rebuild them.

    A transformers model can use its own ``save_pretrained`` (or ``Trainer``) instead:
    :func:`apply_sltrain` records the layers in ``model.config``, and :func:`load_sltrain` /
    :func:`sltrain_from_pretrained` read such directories."""
    from safetensors.torch import save_model

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")  # fmt: skip


def _read_checkpoint(path: Path) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """(layer configs, tensors) of a save_sltrain file or a save_pretrained / Trainer
    checkpoint directory (safetensors or .bin, single file or sharded)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    configs = None
    if path.is_file():
        files = [path]
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                meta = (f.metadata() or {}).get(_META_KEY)
            if meta is not None:
                configs = json.loads(meta)
        folder = path.parent
    elif path.is_dir():
        folder = path
        found = [name for name in _WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(
                f"{str(path)!r} holds none of {', '.join(_WEIGHT_FILES)}; give a directory "
                "written by save_pretrained / Trainer or a file written by save_sltrain"
            )
        first = path / found[0]
        if first.name.endswith(".index.json"):
            weight_map = json.loads(first.read_text())["weight_map"]
            files = [path / name for name in dict.fromkeys(weight_map.values())]
        else:
            files = [first]
    else:
        raise FileNotFoundError(f"no SLTrain checkpoint at {str(path)!r}")
    if configs is None and (folder / "config.json").is_file():
        marker = json.loads((folder / "config.json").read_text()).get(_META_KEY)
        if isinstance(marker, dict):
            configs = marker.get("layers")
    if not configs:
        raise ValueError(
            f"{str(path)!r} has no {_META_KEY!r} layer record (safetensors metadata of "
            "save_sltrain, or config.json of a model converted by apply_sltrain); it is not "
            "an SLTrain checkpoint"
        )
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            state.update(load_file(str(file)))
        else:
            state.update(torch.load(str(file), map_location="cpu", weights_only=True))
    return configs, state


def _new_layer(name: str, cfg: dict, ref: torch.Tensor) -> SLTrainLinear:
    try:
        return SLTrainLinear(
            cfg["in_features"], cfg["out_features"], cfg["rank"], cfg["sparsity"],
            cfg["alpha"], bias=cfg["bias"], index_dtype=getattr(torch, cfg["index_dtype"]),
            device="meta", dtype=ref.dtype,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint layer {name!r} has an invalid record {cfg!r}: {exc}") from exc


def load_sltrain(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an SLTrain checkpoint into ``model`` (dense or already converted) and return it.

    ``path`` is a file written by :func:`save_sltrain`, or a directory written by a
    converted transformers model's ``save_pretrained`` or a ``Trainer`` checkpoint. Layers
    named in the checkpoint's record become :class:`SLTrainLinear` with the stored shapes,
    then every tensor (supports included) is loaded strictly. Atomic: every layer name, key
    and shape is checked before the model is touched, so a failed load leaves it unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, str | Path):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    configs, state = _read_checkpoint(Path(path))
    # 1. Plan the swaps (meta tensors: nothing allocated, nothing changed yet).
    swaps: dict[str, SLTrainLinear] = {}
    for name, cfg in configs.items():
        try:
            current = model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"checkpoint layer {name!r} does not exist in the model") from exc
        if isinstance(current, SLTrainLinear) and _layer_config(current) == cfg:
            continue
        if not isinstance(current, nn.Linear | SLTrainLinear):
            raise ValueError(f"checkpoint layer {name!r} is a {type(current).__name__} here")
        swaps[name] = _new_layer(name, cfg, next(current.parameters()))
    # 2. The state dict the model will have, checked against the checkpoint.
    expected: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if not any(key.startswith(n + ".") for n in swaps):
            expected[key] = value
    for name, layer in swaps.items():
        for key, value in layer.state_dict(keep_vars=True).items():
            expected[f"{name}.{key}"] = value
    missing = sorted(set(expected) - set(state))
    # save_pretrained drops tied copies (lm_head.weight tied to the embeddings): a missing key
    # is fine when the model ties it to a key the checkpoint has.
    by_ptr = {}
    for key, value in expected.items():
        if value.device.type != "meta":
            by_ptr.setdefault(value.data_ptr(), []).append(key)
    missing = [
        k for k in missing
        if expected[k].device.type == "meta"
        or not any(o in state for o in by_ptr.get(expected[k].data_ptr(), []) if o != k)
    ]  # fmt: skip
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    bad_dtype = [
        f"{k}: checkpoint {state[k].dtype}, model {expected[k].dtype}"
        for k in sorted(set(state) & set(expected))
        if state[k].is_floating_point() != expected[k].is_floating_point()
    ]
    if missing or unexpected or bad_shape or bad_dtype:
        problems = [
            f"missing keys {missing[:5]}" if missing else "",
            f"unexpected keys {unexpected[:5]}" if unexpected else "",
            f"shape mismatches {bad_shape[:5]}" if bad_shape else "",
            f"dtype kinds differ {bad_dtype[:5]}" if bad_dtype else "",
        ]
        raise ValueError(
            f"{str(path)!r} does not fit the model ({'; '.join(p for p in problems if p)}); "
            "the model is unchanged"
        )
    # 3. Swap and load; undo the swaps if anything still fails.
    device = next(model.parameters()).device
    old: dict[str, nn.Module] = {}
    try:
        for name, layer in swaps.items():
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            old[name] = getattr(parent, child)
            setattr(parent, child, layer.to_empty(device=device))
        model.load_state_dict(state, strict=False)
    except BaseException:
        for name, module in old.items():
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
        raise
    _set_config_marker(model, {n: _layer_config(m) for n, m in sltrain_layers(model).items()})
    return model


def sltrain_from_pretrained(
    path: str | Path, model_class: type | None = None, **config_overrides
) -> nn.Module:
    """Rebuild an SLTrain transformers model saved with ``save_pretrained`` (or a ``Trainer``
    checkpoint): the config from ``path``, the model from the config
    (``model_class.from_config`` / ``model_class(config)``, default
    ``AutoModelForCausalLM``), then :func:`load_sltrain`. The reference does the same in
    ``SpLoRaModel.from_pretrained`` (andyjm3/SLTrain:splora/splora_model.py).

    A plain ``AutoModelForCausalLM.from_pretrained(path)`` cannot build SLTrain layers: it
    returns dense layers with fresh random weights (transformers reports the SLTrain keys as
    unexpected and the dense weights as missing).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if not isinstance(path, str | Path):
        raise TypeError(f"path must be a str or Path, got {type(path).__name__}")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no config.json in {str(path)!r}; give a directory written by save_pretrained"
        )
    config = AutoConfig.from_pretrained(str(path), **config_overrides)
    if not isinstance(getattr(config, _META_KEY, None), dict):
        raise ValueError(
            f"{str(path)!r}/config.json has no {_META_KEY!r} record: not a model converted by "
            "apply_sltrain (load it with transformers' from_pretrained)"
        )
    cls = AutoModelForCausalLM if model_class is None else model_class
    if not isinstance(cls, type):
        raise TypeError(f"model_class must be a class, got {model_class!r}")
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    return load_sltrain(model, path)
