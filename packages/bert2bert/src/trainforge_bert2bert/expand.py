"""Width (FPI / AKI) and depth expansion of transformers models (bert2BERT, Sec. 4).

Every function returns a NEW model of the source's class, with a config that describes it,
so ``save_pretrained`` / ``from_pretrained`` round-trip it like any transformers model. The
source model is left untouched.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from trainforge_bert2bert.adapters import (
    _UNIT_KINDS,
    ArchAdapter,
    Role,
    adapter_for,
    check_configs_match,
)
from trainforge_bert2bert.plan import Dims, ExpansionPlan, Mapping, check_growable, depth_map
from trainforge_core.errors import NoEffectWarning
from trainforge_core.surgery import count_parameters

log = logging.getLogger(__name__)

Method = Literal["fpi", "aki"]
_METHODS = ("fpi", "aki")


@dataclass(frozen=True)
class GrowthReport:
    """What a growth call changed (also logged at INFO and kept as
    ``model.bert2bert_report`` on the returned model)."""

    method: str
    source: Dims
    target: Dims
    layer_map: list[int]
    tied_lm_head: bool
    parameters_before: int
    parameters_after: int
    tensors: int
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        s, t = self.source, self.target
        return (
            f"bert2bert {self.method}: layers {s.layers}->{t.layers} (map {self.layer_map}), "
            f"hidden {s.hidden}->{t.hidden}, heads {s.heads}->{t.heads}, ffn {s.ffn}->{t.ffn}; "
            f"{self.parameters_before:,} -> {self.parameters_after:,} parameters in "
            f"{self.tensors} tensors; LM head {'tied' if self.tied_lm_head else 'untied'}"
        )


# -- tensor primitives ---------------------------------------------------------------------
def _axes(role: Role) -> tuple[int | None, int | None]:
    """(out axis, in axis) of a tensor with this role."""
    if role.layout == "linear":
        return 0, 1
    if role.layout == "conv1d":  # GPT-2 Conv1D weight is [in, out]
        return 1, 0
    if role.layout == "embedding":
        return 1, None
    return 0, None  # vector


class _Indexer:
    """Caches the plan's (index, count, new-mask) per dimension kind and device."""

    def __init__(self, plan: ExpansionPlan, device: torch.device) -> None:
        self.plan, self.device, self.cache = plan, device, {}

    def __call__(self, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if kind not in self.cache:
            self.cache[kind] = tuple(t.to(self.device) for t in self.plan.index(kind))
        return self.cache[kind]


def _as_indexer(plan: ExpansionPlan | _Indexer, weight: Any) -> _Indexer:
    if isinstance(plan, _Indexer):
        return plan
    if not isinstance(plan, ExpansionPlan):
        raise TypeError(f"plan must be an ExpansionPlan, got {type(plan).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    return _Indexer(plan, weight.device)


def fpi_tensor(weight: torch.Tensor, role: Role, plan: ExpansionPlan | _Indexer) -> torch.Tensor:
    """Function-preserving expansion of one tensor (paper eq. 7-8, Net2Net):
    out-dimension ``U[:, j] = W[:, g_out(j)]`` (copy); in-dimension
    ``U[i, :] = W[g_in(i), :] / C_{g_in(i)}`` (split). ``role`` says which axis is which
    (see :mod:`trainforge_bert2bert.adapters`)."""
    index = _as_indexer(plan, weight)
    if not isinstance(role, Role):
        raise TypeError(f"role must be a Role, got {type(role).__name__}")
    work = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
    out_axis, in_axis = _axes(role)
    if role.out is not None and out_axis is not None:
        idx, _, _ = index(role.out)
        work = work.index_select(out_axis, idx)
    if role.inp is not None and in_axis is not None:
        idx, cnt, _ = index(role.inp)
        shape = [1] * work.dim()
        shape[in_axis] = -1
        work = work.index_select(in_axis, idx) / cnt.to(work.dtype).view(shape)
    return work.to(weight.dtype)


def _unit_axis(role: Role) -> tuple[int, str] | None:
    """The axis (and kind) that holds heads / FFN neurons, which AKI draws from layer l+1."""
    out_axis, in_axis = _axes(role)
    if role.out in _UNIT_KINDS and out_axis is not None:
        return out_axis, role.out
    if role.inp in _UNIT_KINDS and in_axis is not None:
        return in_axis, role.inp
    return None


def aki_tensor(
    weight: torch.Tensor,
    next_weight: torch.Tensor,
    role: Role,
    plan: ExpansionPlan | _Indexer,
) -> torch.Tensor:
    """Advanced knowledge initialisation (paper Sec. 4.2, eq. 10-11) of one tensor of layer l:
    both layers are expanded with FPI (the count division applies to both), then the NEW
    units (heads / FFN neurons beyond the source size) take layer l+1's values. Tensors
    without a head / FFN axis stay FPI."""
    index = _as_indexer(plan, weight)
    if not isinstance(next_weight, torch.Tensor) or next_weight.shape != weight.shape:
        raise ValueError(
            "next_weight must be a tensor of the same shape as weight "
            f"{tuple(weight.shape)}, got {getattr(next_weight, 'shape', type(next_weight))}"
        )
    current = fpi_tensor(weight, role, index)
    unit = _unit_axis(role)
    if unit is None:
        return current
    axis, kind = unit
    _, _, new = index(kind)
    shape = [1] * current.dim()
    shape[axis] = -1
    return torch.where(new.view(shape), fpi_tensor(next_weight, role, index), current)


# -- model construction --------------------------------------------------------------------
def _swap_layer(name: str, adapter: ArchAdapter, src_layer: int) -> str:
    prefix = re.escape(adapter.layers_path) + r"\.\d+\."
    return re.sub(prefix, f"{adapter.layers_path}.{src_layer}.", name, count=1)


def _empty_model(model: nn.Module, config: Any, adapter: ArchAdapter, layer_map: list[int]):
    """A model of ``type(model)`` for ``config`` whose parameters are allocated but not
    initialised (built on the meta device: random init of a 100M model costs seconds and
    is overwritten anyway). Buffers (position ids, rotary frequencies) come from the source
    model; if one has no counterpart there, the model is built the ordinary way."""
    ref = next(model.parameters())
    with torch.device("meta"):
        new = type(model)(config)
    new.to_empty(device=ref.device)
    if any(p.dtype != ref.dtype for p in new.parameters()):
        new.to(ref.dtype)
    src_buffers = dict(model.named_buffers())
    for name, buf in new.named_buffers():
        layer = adapter.layer_of(name)
        src = src_buffers.get(
            name if layer is None else _swap_layer(name, adapter, layer_map[layer])
        )
        if src is None or src.shape != buf.shape:
            log.debug("buffer %s has no source counterpart; building %s normally", name, config)
            new = type(model)(config).to(device=ref.device, dtype=ref.dtype)
            break
        with torch.no_grad():
            buf.copy_(src)
    if getattr(config, "tie_word_embeddings", False):
        new.tie_weights()
    return new


def _is_tied(model: nn.Module) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def _grow(
    model: nn.Module,
    adapter: ArchAdapter,
    plan: ExpansionPlan,
    target_config: Any,
    method: str,
    untie_lm_head: bool,
) -> nn.Module:
    source, target = plan.source, adapter.dims(target_config)
    layer_map = depth_map(source.layers, target.layers)
    tied = _is_tied(model) and not untie_lm_head
    target_config = copy.deepcopy(target_config)
    target_config.tie_word_embeddings = tied
    if _is_tied(model) and not tied:
        log.info("bert2bert: untying the LM head from the embedding (its in-dim is split)")
    src = model.state_dict()
    index = _Indexer(plan, next(model.parameters()).device)

    def expanded(name: str) -> torch.Tensor:
        # Recomputed for every target tensor (no cache): peak memory stays near the
        # target's size plus one tensor, even when depth growth reuses a source layer.
        role = adapter.role(name, tied)
        layer = adapter.layer_of(name)
        if method == "aki" and layer is not None and layer + 1 < source.layers:
            nxt = src[_swap_layer(name, adapter, layer + 1)]
            return aki_tensor(src[name], nxt, role, index)
        # FPI, and AKI's top layer (zxhcelestes/bert2BERT loader.py set_encoder)
        return fpi_tensor(src[name], role, index)

    with torch.no_grad():
        new = _empty_model(model, target_config, adapter, layer_map)
        targets = new.state_dict(keep_vars=True)
        for name, tensor in targets.items():
            layer = adapter.layer_of(name)
            src_name = name if layer is None else _swap_layer(name, adapter, layer_map[layer])
            if src_name not in src:
                raise ValueError(f"parameter {name!r} of the target has no source counterpart")
            value = expanded(src_name)
            if value.shape != tensor.shape:
                raise ValueError(
                    f"{name}: expanded shape {tuple(value.shape)} does not match the target "
                    f"model's {tuple(tensor.shape)}; the config and the plan disagree"
                )
            tensor.data.copy_(value)
            del value
    new.train(model.training)
    report = GrowthReport(
        method=method,
        source=source,
        target=target,
        layer_map=layer_map,
        tied_lm_head=tied,
        parameters_before=count_parameters(model),
        parameters_after=count_parameters(new),
        tensors=len(targets),
    )
    if tied and target.hidden > source.hidden:
        report.notes.append(
            "LM head kept tied to the embedding: logits are scaled by the duplicate counts "
            "(2x for uniform 2x width), so growth is not function preserving at the head"
        )
    new.bert2bert_report = report
    log.info("%s", report)
    if source == target:
        warnings.warn(
            "bert2bert: the target has the source's sizes; the model was copied unchanged",
            NoEffectWarning,
            stacklevel=3,
        )
    return new


def _check_method(method: Any) -> str:
    if not isinstance(method, str) or method.lower() not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    return method.lower()


def _check_plan(plan: Any, source: Dims, target: Dims | None = None) -> ExpansionPlan:
    if not isinstance(plan, ExpansionPlan):
        raise TypeError(f"plan must be an ExpansionPlan, got {type(plan).__name__}")
    if replace(plan.source, layers=source.layers) != source:
        raise ValueError(f"plan was drawn for source {plan.source}, but the model has {source}")
    if target is not None and replace(plan.target, layers=target.layers) != target:
        raise ValueError(f"plan was drawn for target {plan.target}, but the config asks {target}")
    return plan


# -- public API ----------------------------------------------------------------------------
def expand_width(
    model: nn.Module, plan: ExpansionPlan, method: Method = "fpi", *, untie_lm_head: bool = True
) -> nn.Module:
    """Grow hidden size, heads and FFN size of ``model`` to ``plan.target`` (same depth).

    ``method="fpi"`` is function preserving (exactly, when every unit is duplicated equally
    often; otherwise up to LayerNorm); ``"aki"`` takes the new heads / neurons of layer l
    from layer l+1 (top layer: FPI). ``untie_lm_head=True`` unties a tied LM head and splits
    its in-dimension, which keeps the logits; ``False`` keeps it tied (logits scaled by the
    duplicate counts).
    """
    adapter = adapter_for(model)
    method = _check_method(method)
    source = adapter.dims(model.config)
    plan = _check_plan(plan, source)
    target = replace(plan.target, layers=source.layers)
    plan = replace(plan, source=source, target=target)
    return _grow(
        model, adapter, plan, adapter.with_dims(model.config, target), method, untie_lm_head
    )


def expand_depth(model: nn.Module, num_layers: int) -> nn.Module:
    """Stack ``model`` to ``num_layers`` blocks: layer i copies source layer i mod L_s for
    the first floor(L_t / L_s) * L_s layers, the remaining r layers copy the top r source
    layers (:func:`depth_map`)."""
    adapter = adapter_for(model)
    source = adapter.dims(model.config)
    if not isinstance(num_layers, int) or isinstance(num_layers, bool):
        raise TypeError(f"num_layers must be an integer, got {num_layers!r}")
    if num_layers < source.layers:
        raise ValueError(
            f"num_layers ({num_layers}) is smaller than the source's layers ({source.layers})"
        )
    plan = ExpansionPlan.from_dims(source, replace(source, layers=num_layers))
    return _grow(
        model,
        adapter,
        plan,
        adapter.with_layers(model.config, num_layers),
        "fpi",
        untie_lm_head=False,
    )


def bert2bert(
    small: nn.Module,
    big_config: Any,
    method: Method = "aki",
    *,
    plan: ExpansionPlan | None = None,
    untie_lm_head: bool = True,
    seed: int = 0,
    mapping: Mapping = "random",
) -> nn.Module:
    """Grow a pre-trained ``small`` model to ``big_config`` (width with FPI or AKI, then
    depth by stacking), in one pass, and return the new model.

    ``plan`` (an :class:`ExpansionPlan` for these two configs) fixes the index maps; without
    one, a plan is drawn from ``seed`` with ``mapping`` (``"random"`` as in the paper,
    ``"cyclic"`` for equal duplicate counts). The paper's default method is AKI
    (Sec. 4.2: it converges faster than FPI).
    """
    adapter = adapter_for(small)
    method = _check_method(method)
    if not hasattr(big_config, "model_type"):
        raise TypeError(
            f"big_config must be a transformers config, got {type(big_config).__name__}"
        )
    check_configs_match(small.config, big_config)
    source, target = adapter.dims(small.config), adapter.dims(big_config)
    check_growable(source, target)
    if plan is None:
        plan = ExpansionPlan.from_dims(source, target, seed=seed, mapping=mapping)
    else:
        _check_plan(plan, source, target)
        plan = replace(plan, source=source, target=target)
    return _grow(small, adapter, plan, big_config, method, untie_lm_head)
