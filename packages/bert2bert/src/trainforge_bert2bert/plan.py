"""The index maps of bert2BERT (g_D, g_H, g_F) and the depth map.

Notation of the paper (Chen et al. 2021, Sec. 3-4): a small model S with hidden size D_s,
H_s attention heads and FFN size F_s grows to a target T with D_t >= D_s, H_t >= H_s,
F_t >= F_s and the same head dimension. A map g: [n_t] -> [n_s] says which small unit each
target unit copies; g(i) = i for the first n_s units and a uniform draw for the others
(paper eq. 6; ``zxhcelestes/bert2BERT:src/Bert_Model/pytorch_version/expand.py``
``generate_random_match``). ONE plan is drawn for the whole model: every producer and
consumer of the residual stream must use the same g_D (the public implementation redraws
it per block, which breaks function preservation; see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

Mapping = Literal["random", "cyclic"]
_MAPPINGS = ("random", "cyclic")


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def draw_map(
    small: int, target: int, generator: torch.Generator | None = None, mapping: Mapping = "random"
) -> torch.Tensor:
    """One index map g: [target] -> [small] as a long tensor.

    ``g[i] = i`` for ``i < small``; the other entries are uniform draws from ``[small]``
    (``mapping="random"``, the paper's choice) or ``i mod small`` (``mapping="cyclic"``,
    which duplicates every unit equally often when ``target`` is a multiple of ``small``:
    then LayerNorm is preserved exactly as well).
    """
    _positive_int("small", small)
    _positive_int("target", target)
    if target < small:
        raise ValueError(f"target size {target} is smaller than the source size {small}")
    if mapping not in _MAPPINGS:
        raise ValueError(f"mapping must be one of {_MAPPINGS}, got {mapping!r}")
    head = torch.arange(small)
    if target == small:
        return head
    if mapping == "cyclic":
        tail = torch.arange(small, target) % small
    else:
        tail = torch.randint(0, small, (target - small,), generator=generator)
    return torch.cat([head, tail])


def map_counts(g: torch.Tensor, small: int) -> torch.Tensor:
    """C_j = |{i : g(i) = j}| for every small unit j (float64, all >= 1)."""
    return torch.bincount(g, minlength=small).to(torch.float64)


@dataclass(frozen=True)
class Dims:
    """The sizes that width / depth expansion changes, read from a config by an adapter.

    ``kv_heads`` is the number of key/value heads (== ``heads`` except for grouped-query
    attention in Llama)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    head_dim: int


@dataclass(frozen=True)
class ExpansionPlan:
    """The index maps g_D (hidden), g_H (query heads), g_KV (key/value heads) and g_F (FFN
    neurons) from a source to a target size, drawn once, from ``seed``.

    Build it with :meth:`from_configs` (or :meth:`from_dims`) and pass the same plan to
    every call that must agree (``bert2bert``, ``expand_width``).
    """

    source: Dims
    target: Dims
    g_hidden: torch.Tensor
    g_heads: torch.Tensor
    g_kv_heads: torch.Tensor
    g_ffn: torch.Tensor
    seed: int = 0
    mapping: Mapping = "random"

    @classmethod
    def from_dims(
        cls, source: Dims, target: Dims, seed: int = 0, mapping: Mapping = "random"
    ) -> ExpansionPlan:
        """Draw the maps for ``source`` -> ``target`` (see :func:`draw_map`)."""
        if not isinstance(source, Dims) or not isinstance(target, Dims):
            raise TypeError(
                "source and target must be Dims, got "
                f"{type(source).__name__} and {type(target).__name__}"
            )
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if mapping not in _MAPPINGS:
            raise ValueError(f"mapping must be one of {_MAPPINGS}, got {mapping!r}")
        check_growable(source, target)
        gen = torch.Generator().manual_seed(seed)
        g_hidden = draw_map(source.hidden, target.hidden, gen, mapping)
        rep = source.heads // source.kv_heads
        g_kv = draw_map(source.kv_heads, target.kv_heads, gen, mapping)
        if source.kv_heads == source.heads:
            g_heads = g_kv
        else:
            # Grouped-query attention (Llama only; not in the paper): query heads move with
            # their key/value group so that every copied query head still reads the copy of
            # its own key/value head.
            g_heads = (g_kv[:, None] * rep + torch.arange(rep)[None, :]).reshape(-1)
        g_ffn = draw_map(source.ffn, target.ffn, gen, mapping)
        return cls(source, target, g_hidden, g_heads, g_kv, g_ffn, seed, mapping)

    @classmethod
    def from_configs(
        cls, small_config: Any, big_config: Any, seed: int = 0, mapping: Mapping = "random"
    ) -> ExpansionPlan:
        """Draw the maps between two transformers configs of the same architecture."""
        from trainforge_bert2bert.adapters import adapter_for_config, check_configs_match

        adapter = adapter_for_config(small_config)
        check_configs_match(small_config, big_config)
        return cls.from_dims(
            adapter.dims(small_config), adapter.dims(big_config), seed=seed, mapping=mapping
        )

    # -- per-dimension index vectors ---------------------------------------------------
    def index(self, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(source index per target unit, count C of that source unit, is-new mask) for a
        dimension kind: ``"D"`` hidden, ``"H"`` query heads x head_dim, ``"KV"`` key/value
        heads x head_dim, ``"3H"`` GPT-2's fused q|k|v, ``"F"`` FFN neurons."""
        s, hd = self.source, self.source.head_dim
        if kind == "D":
            g, n = self.g_hidden, s.hidden
        elif kind == "F":
            g, n = self.g_ffn, s.ffn
        elif kind in ("H", "KV", "3H"):
            heads = self.g_kv_heads if kind == "KV" else self.g_heads
            n_heads = s.kv_heads if kind == "KV" else s.heads
            g = (heads[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)
            n = n_heads * hd
            if kind == "3H":
                idx, cnt, new = self.index("H")
                return (
                    torch.cat([idx, idx + n, idx + 2 * n]),
                    cnt.repeat(3),
                    new.repeat(3),
                )
        else:
            raise ValueError(f"kind must be one of D, H, KV, 3H, F; got {kind!r}")
        counts = map_counts(g, n)[g]
        new = torch.arange(g.numel()) >= n
        return g, counts, new

    def describe(self) -> str:
        s, t = self.source, self.target
        return (
            f"hidden {s.hidden}->{t.hidden}, heads {s.heads}->{t.heads}, "
            f"ffn {s.ffn}->{t.ffn}, layers {s.layers}->{t.layers} "
            f"(mapping {self.mapping}, seed {self.seed})"
        )


def check_growable(source: Dims, target: Dims) -> None:
    """ValueError naming the first dimension where ``target`` cannot grow from ``source``."""
    for name in ("layers", "hidden", "heads", "kv_heads", "ffn"):
        a, b = getattr(source, name), getattr(target, name)
        if b < a:
            raise ValueError(
                f"target {name} ({b}) is smaller than the source's ({a}); bert2BERT only grows"
            )
    if source.head_dim != target.head_dim:
        raise ValueError(
            f"head dimension changes from {source.head_dim} to {target.head_dim}; bert2BERT "
            "keeps it fixed and adds heads (set the target's heads so that hidden / heads "
            f"== {source.head_dim})"
        )
    if source.kv_heads != source.heads or target.kv_heads != target.heads:
        rep_s, rep_t = source.heads // source.kv_heads, target.heads // target.kv_heads
        if rep_s != rep_t:
            raise ValueError(
                f"num_key_value_heads: heads per key/value group change from {rep_s} to "
                f"{rep_t}; grouped-query attention can only grow whole groups"
            )


def depth_map(source_layers: int, target_layers: int) -> list[int]:
    """Which source layer each target layer copies (paper Sec. 4.3, stacking).

    k = floor(L_t / L_s) full copies (layer i <- i mod L_s), then the remaining
    r = L_t mod L_s layers from the top r source layers
    (``zxhcelestes/bert2BERT:src/Bert_Model/pytorch_version/loader.py`` ``set_depth``).
    2 -> 5 gives [0, 1, 0, 1, 1].
    """
    _positive_int("source_layers", source_layers)
    _positive_int("target_layers", target_layers)
    if target_layers < source_layers:
        raise ValueError(
            f"target layers ({target_layers}) is smaller than the source's ({source_layers})"
        )
    k, r = divmod(target_layers, source_layers)
    return [i % source_layers for i in range(k * source_layers)] + list(
        range(source_layers - r, source_layers)
    )
