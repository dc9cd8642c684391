"""Widthwise growth of a Llama-style decoder: the G_zero→ and G_split→ operators.

The paper compares four growth operators in depth *and* width. In width both of ours keep
``head_dim`` fixed and grow the residual width, the number of heads (query and key/value in
proportion, so grouped-query attention keeps its group size) and the MLP width:

- ``"split"`` (G_direct→, bert2BERT / Net2Net, ``tongxuluo/prts:G_zero_depthwise.py``
  ``expand_tensor``): every unit is copied ``k`` times (the new width must be an integer
  multiple); a weight *writing* a grown axis repeats its rows, a weight *reading* one divides
  its columns among the copies. Copies of a residual unit are equal, so RMSNorm sees the same
  mean square and the function is preserved exactly. ``split_noise`` draws unequal shares
  (they still sum to one) to break the symmetry between copies, as the reference's
  ``lemon`` variant does, without losing function preservation.
- ``"zero"`` (G_zero→, ``tongxuluo/prts:prts_lit/scaling/zero.py``): the source weights sit
  in the top-left block, weights from old inputs to new outputs are zero, weights reading new
  inputs keep the target's fresh initialisation. New residual units start at zero; to keep
  RMSNorm exact, old norm weights are scaled by ``sqrt(H/H')`` and ``rms_norm_eps`` by
  ``H/H'`` (the reference leaves both alone, which rescales every normalised activation).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from torch import nn

from trainforge_gstack.layouts import _check_model

log = logging.getLogger(__name__)

WIDTH_OPS = ("split", "zero")
"""The width-growth operators `grow_width` accepts as ``op``."""
_WIDTH_FAMILIES = ("llama", "mistral")

# Axis kinds per parameter name suffix: "<group>_<role>" with role "out" (the weight writes
# that axis), "in" (reads it) or "norm"; None = not grown (vocabulary).
_AXES: dict[str, tuple[str | None, ...]] = {
    "embed_tokens.weight": (None, "hid_out"),
    "q_proj.weight": ("q_out", "hid_in"),
    "q_proj.bias": ("q_out",),
    "k_proj.weight": ("kv_out", "hid_in"),
    "k_proj.bias": ("kv_out",),
    "v_proj.weight": ("kv_out", "hid_in"),
    "v_proj.bias": ("kv_out",),
    "o_proj.weight": ("hid_out", "q_in"),
    "o_proj.bias": ("hid_out",),
    "gate_proj.weight": ("ff_out", "hid_in"),
    "gate_proj.bias": ("ff_out",),
    "up_proj.weight": ("ff_out", "hid_in"),
    "up_proj.bias": ("ff_out",),
    "down_proj.weight": ("hid_out", "ff_in"),
    "down_proj.bias": ("hid_out",),
    "input_layernorm.weight": ("hid_norm",),
    "post_attention_layernorm.weight": ("hid_norm",),
    "norm.weight": ("hid_norm",),
    "lm_head.weight": (None, "hid_in"),
}


def _axes_of(name: str) -> tuple[str | None, ...]:
    parts = name.split(".")
    key = ".".join(parts[-2:])
    if key not in _AXES:
        raise ValueError(f"grow_width: does not know how to grow parameter {name!r}")
    return _AXES[key]


def grow_width(
    model: nn.Module,
    hidden_size: int,
    op: str = "split",
    *,
    intermediate_size: int | None = None,
    split_noise: float = 0.0,
    seed: int = 0,
) -> nn.Module:
    """Return a wider copy of a Llama-style causal LM (the input model is left unchanged).

    Args:
        model: a ``LlamaForCausalLM`` (or Mistral) instance.
        hidden_size: the new residual width H'. ``"split"``: an integer multiple of H.
            ``"zero"``: larger than H, a multiple of ``head_dim``, and giving a head count
            divisible by the grouped-query group size.
        op: ``"split"`` or ``"zero"``; both preserve the model's function (see module doc).
        intermediate_size: the new MLP width; default scales it with the hidden width
            (``"split"``: the same integer factor, which it must be a multiple of).
        split_noise: ``"split"`` only: std of the random deviation of each copy's share from
            ``1/k`` (0 = the plain, symmetric split).
        seed: RNG seed for the target's fresh initialisation and the split shares.
    """
    model = _check_model(model)
    config: Any = model.config
    family = getattr(config, "model_type", None)
    if family not in _WIDTH_FAMILIES:
        raise ValueError(
            f"unsupported model for grow_width: config.model_type={family!r}; supported: "
            f"{list(_WIDTH_FAMILIES)}"
        )
    if op not in WIDTH_OPS:
        raise ValueError(f"op must be one of {WIDTH_OPS}, got {op!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    noise_ok = isinstance(split_noise, int | float) and not isinstance(split_noise, bool)
    if not noise_ok or not math.isfinite(split_noise) or split_noise < 0:
        raise ValueError(f"split_noise must be a finite number >= 0, got {split_noise!r}")
    if split_noise and op != "split":
        raise ValueError("split_noise only applies to op='split'")

    h, inter = config.hidden_size, config.intermediate_size
    n_q, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or h // n_q
    new_h, new_inter = _check_sizes(op, h, inter, hidden_size, intermediate_size, head_dim)
    new_q = new_h // head_dim if op == "zero" else n_q * (new_h // h)
    group = n_q // n_kv
    if op == "zero" and new_q % group:
        raise ValueError(
            f"hidden_size={hidden_size} gives {new_q} heads of head_dim {head_dim}, not "
            f"divisible by the grouped-query group size {group}"
        )
    new_kv = new_q // group

    new_config = copy.deepcopy(config)
    new_config.hidden_size = new_h
    new_config.intermediate_size = new_inter
    new_config.num_attention_heads = new_q
    new_config.num_key_value_heads = new_kv
    new_config.head_dim = head_dim
    if op == "zero":
        new_config.rms_norm_eps = config.rms_norm_eps * h / new_h
    sizes = {
        "hid": (h, new_h),
        "q": (n_q * head_dim, new_q * head_dim),
        "kv": (n_kv * head_dim, new_kv * head_dim),
        "ff": (inter, new_inter),
    }
    ref = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        big = type(model)(new_config).to(dtype=ref.dtype, device=ref.device)
        generator = torch.Generator(device="cpu").manual_seed(seed + 1)
        src_params = dict(model.named_parameters())
        tied = _tied(big)
        with torch.no_grad():
            for name, target in big.named_parameters():
                if name not in src_params:
                    raise ValueError(f"grow_width: the source model has no parameter {name!r}")
                src = src_params[name].detach()
                axes = _axes_of(name)
                if op == "split":
                    grown = _split(src, axes, sizes, split_noise, generator)
                    if tied and name == "model.norm.weight":
                        # The final norm feeds only the head. A tied head repeats the
                        # embedding's columns instead of dividing them, so the final norm
                        # carries the 1/k share.
                        grown = grown * (h / new_h)
                else:
                    grown = _zero(src, target.detach(), axes, sizes)
                target.copy_(grown)
    log.info(
        "grow_width: hidden %d -> %d, heads %d -> %d, kv %d -> %d, mlp %d -> %d (op=%s)",
        h,
        new_h,
        n_q,
        new_q,
        n_kv,
        new_kv,
        inter,
        new_inter,
        op,
    )
    return big


def _tied(model: Any) -> bool:
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and embed is not None and head.weight is embed.weight


def _check_sizes(
    op: str, h: int, inter: int, hidden_size: object, intermediate_size: object, head_dim: int
) -> tuple[int, int]:
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size <= h:
        raise ValueError(
            f"hidden_size must be an integer larger than the current {h}, got {hidden_size!r}"
        )
    if intermediate_size is not None and (
        not isinstance(intermediate_size, int)
        or isinstance(intermediate_size, bool)
        or intermediate_size < inter
    ):
        raise ValueError(
            f"intermediate_size must be None or an integer >= the current {inter}, "
            f"got {intermediate_size!r}"
        )
    if op == "split":
        if hidden_size % h:
            raise ValueError(
                f"op='split' needs hidden_size to be an integer multiple of {h}, got {hidden_size}"
            )
        new_inter = inter * (hidden_size // h) if intermediate_size is None else intermediate_size
        if new_inter % inter:
            raise ValueError(
                f"op='split' needs intermediate_size to be an integer multiple of {inter}, "
                f"got {new_inter}"
            )
        return hidden_size, new_inter
    if hidden_size % head_dim:
        raise ValueError(
            f"op='zero' needs hidden_size to be a multiple of head_dim={head_dim}, "
            f"got {hidden_size}"
        )
    new_inter = round(inter * hidden_size / h) if intermediate_size is None else intermediate_size
    return hidden_size, new_inter


def _split(
    src: torch.Tensor,
    axes: tuple[str | None, ...],
    sizes: dict[str, tuple[int, int]],
    noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    out = src
    # Rows first (repeat what a weight writes), then divide the columns it reads.
    for dim, kind in enumerate(axes):
        if kind is None or kind.endswith("_in"):
            continue
        old, new = sizes[kind.split("_")[0]]
        out = out.index_select(dim, torch.arange(new, device=src.device) % old)
    for dim, kind in enumerate(axes):
        if kind is None or not kind.endswith("_in"):
            continue
        old, new = sizes[kind.split("_")[0]]
        k = new // old
        out = out.index_select(dim, torch.arange(new, device=src.device) % old)
        shape = [out.shape[d] if d != dim else 1 for d in range(out.dim())]
        # shares[..., c*old + i] for copy c of column i; they sum to 1 over c.
        shares = torch.full((*shape[:dim], k, old, *shape[dim + 1 :]), 1.0 / k)
        if noise:
            eps = torch.randn(shares.shape, generator=generator) * noise
            shares = shares + eps - eps.mean(dim=dim, keepdim=True)
        shares = shares.reshape(*shape[:dim], new, *shape[dim + 1 :])
        out = out * shares.to(dtype=out.dtype, device=out.device)
    return out


def _zero(
    src: torch.Tensor,
    init: torch.Tensor,
    axes: tuple[str | None, ...],
    sizes: dict[str, tuple[int, int]],
) -> torch.Tensor:
    if axes == ("hid_norm",):
        old, new = sizes["hid"]
        out = init.clone()
        out[:old] = src * math.sqrt(old / new)
        return out
    out = init.clone()
    # Region fed only by old inputs: zero it (new outputs from old inputs stay zero) ...
    region = tuple(
        slice(0, sizes[k.split("_")[0]][0]) if k is not None and k.endswith("_in") else slice(None)
        for k in axes
    )
    out[region] = 0
    # ... then put the source in the old corner. Columns reading new inputs keep their init.
    out[tuple(slice(0, s) for s in src.shape)] = src
    return out
