"""Reparameterise a trained timm ViT or PVTv2 into a ShiftAddViT, and count multiplications.

:func:`reparameterize_vit` swaps, in place:

- attention (timm ``vision_transformer`` / ``layers.Attention`` with a fused ``qkv``, and
  ``pvt_v2.Attention`` with ``q`` + ``kv``) for :class:`AddLinearAttention`, ``to_qk``
  initialised from the query weights and ``to_v`` from the value weights, ``proj`` copied
  (the spec's ``convert_timm_vit``; pvt/main.py loads q into ``to_qk`` the same way).
  PVTv2's spatial reduction is dropped: the linear attention attends to every token, as the
  released ``LinAngularAttention_ksh`` (which ignores ``sr_ratio``). PVTv2's last stage keeps
  its softmax attention (``skip_last_stage``, pvt/pvt_v2.py ``last_stage``);
- the linear layers of MLPs (``fc1``, ``fc2``) and of the new attention (``to_qk``, ``to_v``,
  ``proj``) for a :class:`MultShiftMoE` of a Mult. and a Shift expert (``linears="moe"``, the
  step-2 model of the reference), a :class:`ShiftLinear` (``"shift"``), or nothing.

It returns a :class:`ReparamReport` and warns ``NoEffectWarning`` when nothing matched.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_shiftaddvit.attention import (
    ANCHORS,
    KSH_ITERS,
    NBITS,
    TOPK,
    AddLinearAttention,
    BinaryCoder,
)
from trainforge_shiftaddvit.moe import LATENCY, MultShiftMoE
from trainforge_shiftaddvit.shift import WEIGHT_BITS, ShiftLinear, shift_range

__all__ = [
    "ReparamReport",
    "ShiftAddConfig",
    "count_multiplications",
    "reparameterize_vit",
]

_LINEARS = ("moe", "shift", "none")


@dataclass(frozen=True)
class ShiftAddConfig:
    """What :func:`reparameterize_vit` replaces, with the reference defaults.

    ``attention``: binary linear-angular attention in place of softmax attention.
    ``linears``: ``"moe"`` (Mult. + Shift experts, step 2), ``"shift"`` (all power-of-two) or
    ``"none"``; applied to MLP linears when ``mlp`` and to the new attention's linears when
    ``attention_linears``. ``skip_last_stage``: PVTv2's last stage stays untouched
    (pvt/pvt_v2.py keeps MSA there). ``coder``: ``"ksh"`` or ``"mean"``; ``nbits``,
    ``anchors``, ``topk``, ``ksh_iters``: KSH settings (SGD steps per bit); ``fit``: when
    the coders fit (see BinaryCoder).
    ``gate``, ``latency``: MoE router; ``weight_bits``: shift weights.
    """

    attention: bool = True
    linears: str = "moe"
    mlp: bool = True
    attention_linears: bool = True
    skip_last_stage: bool = True
    coder: str = "ksh"
    nbits: int = NBITS
    anchors: int = ANCHORS
    topk: int = TOPK
    ksh_iters: int = KSH_ITERS
    fit: str = "first_batch"
    gate: str = "noisy"
    latency: tuple[float, ...] = LATENCY
    weight_bits: int = WEIGHT_BITS

    def __post_init__(self) -> None:
        if self.linears not in _LINEARS:
            raise ValueError(
                f"ShiftAddConfig: linears must be one of {_LINEARS}, got {self.linears!r}"
            )
        shift_range(self.weight_bits)  # validates
        if len(tuple(self.latency)) != 2:
            raise ValueError(
                f"ShiftAddConfig: latency needs 2 weights (Mult., Shift), got {self.latency!r}"
            )
        if self.coder == "ksh" and not 1 <= self.nbits <= 64:
            raise ValueError(f"ShiftAddConfig: nbits must be in [1, 64], got {self.nbits!r}")


@dataclass
class ReparamReport:
    """What :func:`reparameterize_vit` changed: module names by kind of replacement."""

    attention: list[str] = field(default_factory=list)
    moe: list[str] = field(default_factory=list)
    shift: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        """How many modules were replaced."""
        return len(self.attention) + len(self.moe) + len(self.shift)

    def __str__(self) -> str:
        return (
            f"ShiftAddViT reparameterisation: {len(self.attention)} attention -> binary "
            f"linear-angular, {len(self.moe)} linear -> Mult/Shift MoE, {len(self.shift)} "
            f"linear -> shift; kept {len(self.kept)} attention module(s) as they were"
        )


def _timm_classes() -> dict[str, type]:
    try:
        from timm.layers import Attention as ViTAttention
        from timm.models.pvt_v2 import Attention as PvtAttention
        from timm.models.pvt_v2 import PyramidVisionTransformerV2
    except ImportError as err:  # pragma: no cover - timm is a dependency
        raise ImportError("reparameterize_vit needs timm (pip install timm)") from err
    return {"vit": ViTAttention, "pvt": PvtAttention, "pvt_model": PyramidVisionTransformerV2}


def _copy_linear(dst: nn.Linear, w: torch.Tensor, b: torch.Tensor | None) -> None:
    with torch.no_grad():
        dst.weight.copy_(w)
        if dst.bias is not None:
            if b is None:
                dst.bias.zero_()
            else:
                dst.bias.copy_(b)


def _new_attention(dim: int, heads: int, bias: bool, proj: nn.Linear, cfg: ShiftAddConfig):
    head_dim = dim // heads
    coder = BinaryCoder(
        heads, head_dim, mode=cfg.coder, nbits=cfg.nbits, anchors=cfg.anchors, topk=cfg.topk,
        fit=cfg.fit, iters=cfg.ksh_iters,
    )  # fmt: skip
    att = AddLinearAttention(
        dim, heads, qkv_bias=bias, coder=coder, proj_bias=proj.bias is not None
    )
    w = proj.weight
    att = att.to(device=w.device, dtype=w.dtype)
    _copy_linear(att.proj, proj.weight, proj.bias)
    return att


def _from_vit(mod: nn.Module, cfg: ShiftAddConfig, name: str) -> AddLinearAttention:
    if not isinstance(mod.q_norm, nn.Identity) or not isinstance(mod.k_norm, nn.Identity):
        raise ValueError(f"reparameterize_vit: {name} uses qk_norm, which is not supported")
    if getattr(mod, "gate", None) is not None:
        raise ValueError(f"reparameterize_vit: {name} is a gated attention, not supported")
    if not isinstance(getattr(mod, "norm", nn.Identity()), nn.Identity):
        raise ValueError(f"reparameterize_vit: {name} uses scale_norm, which is not supported")
    dim = mod.qkv.in_features
    if mod.qkv.out_features != 3 * dim or mod.proj.in_features != dim:
        raise ValueError(
            f"reparameterize_vit: {name} has attention width {mod.qkv.out_features // 3} != "
            f"model width {dim}, not supported"
        )
    att = _new_attention(dim, mod.num_heads, mod.qkv.bias is not None, mod.proj, cfg)
    w, b = mod.qkv.weight, mod.qkv.bias
    _copy_linear(att.to_qk, w[:dim], None if b is None else b[:dim])
    _copy_linear(att.to_v, w[2 * dim :], None if b is None else b[2 * dim :])
    return att


def _from_pvt(mod: nn.Module, cfg: ShiftAddConfig, name: str) -> AddLinearAttention:
    if mod.pool is not None:
        raise ValueError(f"reparameterize_vit: {name} is a 'linear' PVTv2 (pooled) attention")
    dim = mod.dim
    att = _new_attention(dim, mod.num_heads, mod.q.bias is not None, mod.proj, cfg)
    _copy_linear(att.to_qk, mod.q.weight, mod.q.bias)
    kb = mod.kv.bias
    _copy_linear(att.to_v, mod.kv.weight[dim:], None if kb is None else kb[dim:])
    return att


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _convert_linear(lin: nn.Linear, cfg: ShiftAddConfig) -> nn.Module:
    if cfg.linears == "moe":
        return MultShiftMoE(
            lin, gate=cfg.gate, latency=tuple(cfg.latency), weight_bits=cfg.weight_bits
        )
    return ShiftLinear.from_linear(lin, weight_bits=cfg.weight_bits)


def reparameterize_vit(model: nn.Module, config: ShiftAddConfig | None = None) -> ReparamReport:
    """Turn a trained timm ViT / PVTv2 into a ShiftAddViT in place; see the module docstring.

    Supported: timm ``VisionTransformer``-style models built on ``timm.layers.Attention``
    (fused qkv, no qk-norm) with ``fc1``/``fc2`` MLPs, and ``PyramidVisionTransformerV2``
    (``pvt_v2_b0`` ... ``b5``, not the pooled ``linear`` variant). A model with none of
    these modules is left as it is, with a ``NoEffectWarning``; an attention of a supported
    class but an unsupported layout raises ``ValueError``. Calling it again on a converted
    model converts what is left (``attention=False, linears="moe"`` on a stage-1 model gives
    the stage-2 model).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"reparameterize_vit: model must be an nn.Module, got {type(model).__name__}"
        )
    cfg = ShiftAddConfig() if config is None else config
    if not isinstance(cfg, ShiftAddConfig):
        raise TypeError(f"reparameterize_vit: config must be a ShiftAddConfig, got {cfg!r}")
    classes = _timm_classes()
    report = ReparamReport()
    last_stage_prefix = None
    if cfg.skip_last_stage and isinstance(model, classes["pvt_model"]):
        last_stage_prefix = f"stages.{len(model.stages) - 1}."

    attn_targets = []
    mlp_targets = []
    binary_attn = []  # already converted (a stage-1 model): their linears may still convert
    for name, mod in model.named_modules():
        if isinstance(mod, AddLinearAttention):
            binary_attn.append(name)
        elif isinstance(mod, classes["vit"] | classes["pvt"]):
            if last_stage_prefix and name.startswith(last_stage_prefix):
                report.kept.append(name)
            else:
                attn_targets.append((name, mod))
        elif (
            cfg.mlp
            and isinstance(getattr(mod, "fc1", None), nn.Linear)
            and isinstance(getattr(mod, "fc2", None), nn.Linear)
        ):
            mlp_targets.append(name)

    new_attn: list[str] = []
    if cfg.attention:
        for name, mod in attn_targets:
            builder = _from_pvt if isinstance(mod, classes["pvt"]) else _from_vit
            new = builder(mod, cfg, name)
            new.train(mod.training)
            _set(model, name, new)
            report.attention.append(name)
            new_attn.append(name)

    linear_names: list[str] = []
    if cfg.linears != "none":
        linear_names += [f"{n}.fc1" for n in mlp_targets] + [f"{n}.fc2" for n in mlp_targets]
        if cfg.attention_linears:
            for n in new_attn + binary_attn:
                linear_names += [f"{n}.{c}" for c in ("to_qk", "to_v", "proj")]
    for name in sorted(linear_names):
        lin = model.get_submodule(name)
        if type(lin) is not nn.Linear:  # converted before
            continue
        new = _convert_linear(lin, cfg)
        new.train(lin.training)
        _set(model, name, new)
        (report.moe if cfg.linears == "moe" else report.shift).append(name)

    if report.changed == 0:
        warnings.warn(
            "reparameterize_vit matched no timm ViT/PVTv2 attention or MLP to replace "
            f"(model {type(model).__name__}, config {cfg}); nothing was changed",
            NoEffectWarning,
            stacklevel=2,
        )
    return report


def count_multiplications(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Multiplications of one forward pass of ``model`` on ``x``, by kind, counted with hooks.

    ``linear``: dense ``nn.Linear`` (tokens x in x out; a MoE's Mult. expert counts only the
    tokens routed to it), ``conv``: ``nn.Conv2d`` and the binary attention's token
    convolution, ``attention``: softmax attention products (``q k^T`` and ``attn v``),
    ``hashing``: the KSH kernel features and code projection of binary attention,
    ``router``: the MoE gates. Shift layers and the binary ``c (c^T v)`` products count as 0:
    they are shifts and additions. Elementwise scales and norms are not counted. See
    :func:`~trainforge_shiftaddvit.energy.energy_estimate` for additions, shifts and energy.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"count_multiplications: model must be an nn.Module, got {type(model).__name__}"
        )
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"count_multiplications: x must be a torch.Tensor, got {type(x).__name__}")
    from trainforge_shiftaddvit.energy import _count_ops

    ops = _count_ops(model, x)
    counts = {
        "linear": ops["linear"]["mult"],
        "conv": ops["conv"]["mult"] + ops["token conv"]["mult"],
        "attention": ops["attention"]["mult"],
        "hashing": ops["hashing"]["mult"],
        "router": ops["router"]["mult"],
    }
    counts["total"] = sum(counts.values())
    return counts
