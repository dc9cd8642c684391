"""Depthwise growth of a transformers decoder: G_stack and the other depth operators.

``grow_depth(small, factor=4)`` returns a new model whose block ``i`` is an independent copy
of block ``i mod L`` of the small model (whole-model repetition, as
``tongxuluo/prts:prts_lit/scaling/stackingpt.py`` builds it from ``stacking_list``), with the
embeddings, final norm and head copied unchanged.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from trainforge_core.errors import NoEffectWarning
from trainforge_gstack.layouts import DecoderLayout, _get_layers, find_layout
from trainforge_gstack.phase import PhaseIn, _attach, _poison_and_reset

log = logging.getLogger(__name__)

DEPTH_OPS = ("stack", "interleave", "zero", "random")
"""The depth-growth operators `grow_depth` accepts as ``op``."""
# README of tongxuluo/prts: "For growth factor g, we fix g=4 is the best."
DEFAULT_FACTOR = 4
"""The paper's growth factor g (4 blocks out of each one)."""
# tongxuluo/prts:prts_lit/scaling/milk.py: mask_iters = [0, 500, 1000, ...].
PHASE_IN_STEPS = 500
"""G_random: optimizer steps between two block groups' switches (reference: 500)."""


class GrowthWarning(UserWarning):
    """A growth setting outside what the paper found to work (e.g. a factor outside [2, 4])."""


@dataclass(frozen=True)
class DepthPlan:
    """Which source block each target block comes from.

    ``sources[i]`` is the small model's block index copied into target block ``i``;
    ``fresh[i]`` marks blocks that are re-initialised (``op="random"``) and ``zeroed[i]``
    blocks whose output projections are set to zero (``op="zero"``).
    """

    sources: tuple[int, ...]
    fresh: tuple[bool, ...]
    zeroed: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.sources)


def depth_plan(
    num_layers: int, factor: int | None = None, op: str | Sequence[int] = "stack"
) -> DepthPlan:
    """The layer mapping of a depth operator, without touching a model.

    - ``"stack"``: ``[0..L-1] * g`` (G_stack; ``tongxuluo/prts:README.md`` stacking_list).
    - ``"interleave"``: ``[0]*g + [1]*g + ...`` (each block repeated in place).
    - ``"zero"``: the interleaved order, every repeat after the first has its output
      projections zeroed, so it is an identity on the residual stream (G_zero depthwise,
      ``tongxuluo/prts:G_zero_depthwise.py`` ``expend_depth`` with ``lemon=True``).
    - ``"random"``: G_random, every target block freshly initialised; target blocks
      ``[jg, (j+1)g)`` form group ``j`` and are phased in in place of small block ``j``
      (``sources`` records that pairing; ``tongxuluo/prts:prts_lit/scaling/milk.py``).
    - a sequence of ints: an explicit source index per target block (``factor`` is then
      optional; when given it must equal ``len(op) / L``).
    """
    if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    if factor is not None and (
        not isinstance(factor, int) or isinstance(factor, bool) or factor < 1
    ):
        raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
    if isinstance(op, str):
        if op not in DEPTH_OPS:
            raise ValueError(
                f"op must be one of {DEPTH_OPS} or a list of layer indices, got {op!r}"
            )
        g = DEFAULT_FACTOR if factor is None else factor
        n = num_layers * g
        stacked = tuple(i % num_layers for i in range(n))
        if op == "stack":
            return DepthPlan(stacked, (False,) * n, (False,) * n)
        interleaved = [i // g for i in range(n)]
        if op == "interleave":
            return DepthPlan(tuple(interleaved), (False,) * n, (False,) * n)
        if op == "zero":
            return DepthPlan(tuple(interleaved), (False,) * n, tuple(i % g != 0 for i in range(n)))
        return DepthPlan(tuple(interleaved), (True,) * n, (False,) * n)
    if isinstance(op, torch.Tensor | bytes) or not isinstance(op, Sequence):
        raise TypeError(
            f"op must be one of {DEPTH_OPS} or a sequence of layer indices, got {type(op).__name__}"
        )
    sources: list[Any] = list(op)
    if not sources:
        raise ValueError("op: an explicit layer list must not be empty")
    bad = [s for s in sources if not isinstance(s, int) or isinstance(s, bool)]
    if bad:
        raise TypeError(f"op: layer indices must be integers, got {bad[:5]!r}")
    out_of_range = [s for s in sources if not 0 <= s < num_layers]
    if out_of_range:
        raise ValueError(
            f"op: layer indices {out_of_range[:5]!r} are out of range for a model with "
            f"{num_layers} layers (allowed: 0..{num_layers - 1})"
        )
    if factor is not None and len(sources) != factor * num_layers:
        raise ValueError(
            f"factor={factor} asks for {factor * num_layers} layers but the explicit list has "
            f"{len(sources)}; pass factor=None with an explicit list"
        )
    n = len(sources)
    return DepthPlan(tuple(sources), (False,) * n, (False,) * n)


def grow_depth(
    model: nn.Module,
    factor: int | None = None,
    op: str | Sequence[int] = "stack",
    *,
    layers_attr: str = "auto",
    seed: int = 0,
    phase_in_steps: int = PHASE_IN_STEPS,
) -> nn.Module:
    """Return a deeper copy of a transformers decoder (the input model is left unchanged).

    Args:
        model: a ``LlamaForCausalLM``, ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM`` (found
            from ``config.model_type``), or any decoder whose block list ``layers_attr`` names.
        factor: growth factor g (default 4, the paper's choice); the target has ``g * L``
            blocks. Ignored when ``op`` is an explicit list (then it may be ``None``).
        op: ``"stack"`` (G_stack), ``"interleave"``, ``"zero"`` (function-preserving),
            ``"random"`` or a list of source block indices; see :func:`depth_plan`.
        layers_attr: ``"auto"`` or the dotted path of the block ``nn.ModuleList``.
        seed: RNG seed of the fresh blocks of ``op="random"`` (the global RNG is untouched).
        phase_in_steps: ``op="random"`` only: optimizer steps between the switches of two
            consecutive block groups (reference: 500, ``milk.py`` ``mask_iters``); see
            :class:`~trainforge_gstack.PhaseIn`.

    ``op="random"`` (G_random) builds a separately initialised target model (a transformers
    model from the grown config, seeded; any other model through its modules'
    ``reset_parameters``, and an error naming a parameter no initialiser reaches), copies the
    embeddings, final norm and head, and phases the fresh blocks in group by group:
    :func:`~trainforge_gstack.phase_in_of` returns the :class:`~trainforge_gstack.PhaseIn`
    whose ``step()`` the training loop calls after each optimizer step.

    Every target block is an independent ``deepcopy`` (no shared storage), the config's
    ``num_hidden_layers`` (and ``layer_types`` where present) follow the new depth, and every
    ``layer_idx`` inside block ``i`` is set to ``i``, so KV-cache generation addresses the
    right cache slot. Embeddings, final norm and head are copied; tied embeddings stay tied.

    ``"stack"`` is *not* function-preserving: the grown model computes a different function
    than the small one (the paper's point is that it trains faster anyway). ``"zero"`` is.
    """
    model = _refuse_wrapped(model)
    layout = find_layout(model, layers_attr)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    small_layers = _get_layers(model, layout.layers)
    num_layers = len(small_layers)
    plan = depth_plan(num_layers, factor, op)
    _warn_factor(plan, num_layers, op)
    if any(plan.fresh) and (
        isinstance(phase_in_steps, bool)
        or not isinstance(phase_in_steps, int)
        or phase_in_steps < 1
    ):
        raise ValueError(f"phase_in_steps must be an integer >= 1, got {phase_in_steps!r}")
    if any(plan.zeroed) and not layout.output_projections:
        raise ValueError(
            f"op='zero' needs the blocks' output projections; none of the known names was "
            f"found in {type(small_layers[0]).__name__}"
        )

    big = _copy_without_layers(model, layout)
    _update_config(big.config, plan, num_layers)
    # A fresh memo per copy (so copies share nothing), mapping the small config onto the
    # grown one (blocks keep a reference to the config).
    new_layers = nn.ModuleList(
        copy.deepcopy(small_layers[s], {id(model.config): big.config}) for s in plan.sources
    )
    if any(plan.fresh):
        new_layers = _fresh_target(model, big, new_layers, layout, seed)
    for block, zero in zip(new_layers, plan.zeroed, strict=True):
        if zero:
            _zero_outputs(block, layout)
    parent_path, _, name = layout.layers.rpartition(".")
    parent = big.get_submodule(parent_path) if parent_path else big
    setattr(parent, name, new_layers)
    renumber_layers(big, layout.layers)
    if any(plan.fresh):
        g = len(plan) // num_layers
        sources = []
        for j, block in enumerate(small_layers):
            src = copy.deepcopy(block, {id(model.config): big.config})
            _set_layer_idx(src, j * g)  # it runs in target slot j*g (KV-cache slot)
            sources.append(src)
        _attach(big, PhaseIn(new_layers, sources, g, phase_in_steps))
    log.info(
        "grow_depth: %s %d -> %d layers (op=%s, sources=%s)",
        type(model).__name__,
        num_layers,
        len(plan),
        op if isinstance(op, str) else "list",
        list(plan.sources),
    )
    return big


def renumber_layers(model: nn.Module, layers_attr: str = "auto") -> int:
    """Set every ``layer_idx`` attribute inside block ``i`` to ``i``; return how many changed.

    transformers attention modules address their KV-cache slot through ``layer_idx``: copies
    that keep their source's index overwrite each other's cache and generation silently
    goes wrong. GPT-2's ``scale_attn_by_inverse_layer_idx`` scaling is recomputed as well.
    """
    path = find_layout(model, "auto").layers if layers_attr == "auto" else layers_attr
    return sum(_set_layer_idx(block, i) for i, block in enumerate(_get_layers(model, path)))


def _set_layer_idx(block: nn.Module, i: int) -> int:
    changed = 0
    module: Any
    for module in block.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            changed += module.layer_idx != i
            module.layer_idx = i
            if getattr(module, "scale_attn_by_inverse_layer_idx", False):
                scale = module.head_dim**-0.5 if module.scale_attn_weights else 1.0
                module.scaling = scale / float(i + 1)
    return changed


def _copy_without_layers(model: nn.Module, layout: DecoderLayout) -> nn.Module:
    """Deep copy of ``model`` (ties preserved) that does not copy the block list twice."""
    layers = _get_layers(model, layout.layers)
    placeholder = nn.ModuleList()
    memo = {id(layers): placeholder}
    return copy.deepcopy(model, memo)


def _fresh_target(
    model: nn.Module,
    big: nn.Module,
    copies: nn.ModuleList,
    layout: DecoderLayout,
    seed: int,
) -> nn.ModuleList:
    """The blocks of a separately initialised target model (``milk.py``'s ``trg_model``)."""
    ref = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(model, PreTrainedModel):
            target = type(model)(copy.deepcopy(big.config)).to(dtype=ref.dtype, device=ref.device)
            blocks = _get_layers(target, layout.layers)
            for module in blocks.modules():  # the blocks refer to the grown model's config
                for attr, value in list(vars(module).items()):
                    if value is target.config:
                        setattr(module, attr, big.config)
            if len(blocks) != len(copies):
                raise ValueError(
                    f"op='random': {type(model).__name__} built from the grown config has "
                    f"{len(blocks)} blocks, expected {len(copies)}"
                )
            return blocks
        _poison_and_reset(copies)
    return copies


def _refuse_wrapped(model: object) -> nn.Module:
    """Growth needs the plain model: refuse DDP / FSDP / compiled wrappers with the fix."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, DistributedDataParallel):
        raise TypeError(
            "grow a model, not its DistributedDataParallel wrapper: pass ddp.module (every "
            "rank holds the full model), then wrap the grown model in a new DDP"
        )
    if hasattr(model, "_orig_mod") and isinstance(model, nn.Module):
        raise TypeError(
            "grow the model, not its torch.compile wrapper: pass compiled._orig_mod, "
            "then compile the grown model again"
        )
    if isinstance(model, nn.Module) and _is_sharded(model):
        raise TypeError(
            "cannot grow an FSDP-sharded model: each rank holds only a shard of every "
            "parameter. Save it with torch.distributed.checkpoint and grow from the "
            "checkpoint (trainforge_gstack.load_for_growth, then grow_depth), or gather a "
            "full copy first; then shard the grown model with fully_shard"
        )
    return model  # type: ignore[return-value]


def _is_sharded(model: nn.Module) -> bool:
    if (
        type(model).__name__.startswith("FSDP")
        or "FullyShardedDataParallel" in type(model).__name__
    ):
        return True
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def _zero_outputs(block: nn.Module, layout: DecoderLayout) -> None:
    with torch.no_grad():
        for path in layout.output_projections:
            for param in block.get_submodule(path).parameters():
                param.zero_()


def _update_config(config: Any, plan: DepthPlan, num_layers: int) -> None:
    config.num_hidden_layers = len(plan)  # GPT-2 maps this onto n_layer
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == num_layers:
        config.layer_types = [layer_types[s] for s in plan.sources]


def _warn_factor(plan: DepthPlan, num_layers: int, op: str | Sequence[int]) -> None:
    g = len(plan) / num_layers
    if len(plan) == num_layers and list(plan.sources) == list(range(num_layers)):
        warnings.warn(
            "grow_depth: the layer plan is the identity; the model is only copied",
            NoEffectWarning,
            stacklevel=3,
        )
    elif isinstance(op, str) and not 2 <= g <= 4:
        # tongxuluo/prts README: g=4 best; the paper's guideline studies g in [2, 4] and
        # reports that a larger g hurts.
        warnings.warn(
            f"grow_depth: growth factor {g:g} is outside [2, 4], where the paper "
            "found G_stack to help (g=4 best)",
            GrowthWarning,
            stacklevel=3,
        )
