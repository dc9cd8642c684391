"""Attention over unpadded tokens with ALiBi, through existing kernels only.

Backends (``MosaicBertConfig.attn_impl``):

- ``"flash_varlen"``: ``flash_attn.flash_attn_varlen_qkvpacked_func`` on the packed real
  tokens with ``cu_seqlens`` and ``alibi_slopes`` (CUDA, fp16/bf16, the ``flash-attn``
  package). The reference used a Triton FlashAttention with an additive bias instead
  (``mosaicml/examples:examples/benchmarks/bert/src/flash_attn_triton.py``); flash-attn 2's
  varlen kernel has ALiBi built in, so no bias tensor and no re-padding are needed.
- ``"flex"``: ``torch.nn.attention.flex_attention`` with ALiBi as a ``score_mod`` and the
  padding as a ``BlockMask`` (compiled on CUDA; eager and unfused on CPU).
- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` with the ALiBi + padding
  bias as an additive float mask: the reference's PyTorch fallback, and the CPU path.
- ``"auto"``: ``flash_varlen`` when flash-attn is installed and the tensors are on CUDA in
  fp16/bf16, else ``flex`` on CUDA, else ``sdpa``.

The flex and sdpa paths re-pad Q, K and V to the longest real sequence of the batch (not to
the input's padded length) and unpad the result, as the reference's PyTorch path does.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from trainforge_mosaicbert.padding import pad_input

ATTN_IMPLS = ("auto", "flash_varlen", "flex", "sdpa")
"""The attention backends a MosaicBERT model can be asked for; ``auto`` chooses by device
and installed packages."""


def flash_attn_available() -> bool:
    """Whether ``flash-attn`` (with ``flash_attn_varlen_qkvpacked_func``) is importable."""
    return importlib.util.find_spec("flash_attn") is not None


def flex_attention_available() -> bool:
    """Whether this torch ships ``torch.nn.attention.flex_attention``."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def check_attn_impl(attn_impl: str) -> None:
    """Raise a clear error when ``attn_impl`` is unknown or its kernel is not installed."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
    if attn_impl == "flash_varlen" and not flash_attn_available():
        raise ImportError(
            "attn_impl='flash_varlen' needs the flash-attn package (CUDA only): "
            "pip install flash-attn, or use attn_impl='auto' / 'flex' / 'sdpa'"
        )
    if attn_impl == "flex" and not flex_attention_available():
        raise ImportError(
            f"attn_impl='flex' needs torch.nn.attention.flex_attention (torch >= 2.5); "
            f"this torch is {torch.__version__}"
        )


def resolve_attn_impl(attn_impl: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend ``attn_impl`` means for tensors on ``device`` in ``dtype`` (see module doc)."""
    check_attn_impl(attn_impl)
    half = dtype in (torch.float16, torch.bfloat16)
    if attn_impl == "auto":
        if device.type == "cuda" and half and flash_attn_available():
            return "flash_varlen"
        if device.type == "cuda" and flex_attention_available():
            return "flex"
        return "sdpa"
    if attn_impl == "flash_varlen" and (device.type != "cuda" or not half):
        raise ValueError(
            "attn_impl='flash_varlen' runs on CUDA tensors in float16/bfloat16 (use "
            f"torch.autocast), got device {device.type!r} and dtype {dtype}"
        )
    return attn_impl


@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    # Default dynamic-shape handling: after a first recompile for a new batch or length,
    # torch.compile marks those dims dynamic instead of recompiling for every batch.
    return torch.compile(flex_attention)


@dataclass
class UnpadContext:
    """What every layer of one forward pass shares: where the real tokens are, the ALiBi
    slopes, and per-backend artefacts built once (bias tensor, block mask)."""

    indices: torch.Tensor  # [nnz] positions in the flattened batch * seqlen
    cu_seqlens: torch.Tensor  # [batch + 1] int32
    max_seqlen: int
    batch: int
    seqlen: int  # padded length of the input
    slopes: torch.Tensor  # [heads] float32
    attn_impl: str  # the configured name (may be "auto")
    alibi_cache: Any  # callable(size, device) -> [1, h, size, size] float32 ALiBi
    _cache: dict = field(default_factory=dict)

    @property
    def repad_indices(self) -> torch.Tensor:
        """Positions of the real tokens in a ``[batch, max_seqlen]`` layout."""
        if "repad" not in self._cache:
            lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
            row = torch.repeat_interleave(torch.arange(self.batch, device=lengths.device), lengths)
            start = torch.repeat_interleave(self.cu_seqlens[:-1].long(), lengths)
            col = torch.arange(row.numel(), device=lengths.device) - start
            self._cache["repad"] = row * self.max_seqlen + col
        return self._cache["repad"]

    def key_mask(self) -> torch.Tensor:
        """``[batch, max_seqlen]`` True on real tokens."""
        if "key_mask" not in self._cache:
            lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()
            pos = torch.arange(self.max_seqlen, device=lengths.device)
            self._cache["key_mask"] = pos[None, :] < lengths[:, None]
        return self._cache["key_mask"]

    def sdpa_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """ALiBi plus padding as one additive ``[batch, heads, S, S]`` mask in ``dtype``."""
        key = ("bias", dtype)
        if key not in self._cache:
            s = self.max_seqlen
            alibi = self.alibi_cache(s, self.slopes.device)[:, :, :s, :s].to(dtype)
            bias = alibi.expand(self.batch, -1, -1, -1)
            masked = ~self.key_mask()[:, None, None, :]
            self._cache[key] = bias.masked_fill(masked, torch.finfo(dtype).min)
        return self._cache[key]

    def flex_mods(self) -> tuple[Any, Any]:
        """``(score_mod, block_mask)`` for FlexAttention: ALiBi and the key padding."""
        if "flex" not in self._cache:
            from torch.nn.attention.flex_attention import create_block_mask

            slopes = self.slopes
            lengths = (self.cu_seqlens[1:] - self.cu_seqlens[:-1]).long()

            def score_mod(score, b, h, q_idx, kv_idx):
                return score - slopes[h] * (q_idx - kv_idx).abs()

            def mask_mod(b, h, q_idx, kv_idx):
                return kv_idx < lengths[b]

            block_mask = create_block_mask(
                mask_mod, self.batch, None, self.max_seqlen, self.max_seqlen, device=lengths.device
            )
            self._cache["flex"] = (score_mod, block_mask)
        return self._cache["flex"]


def unpadded_attention(
    qkv: torch.Tensor, ctx: UnpadContext, num_heads: int, dropout_p: float
) -> torch.Tensor:
    """Multi-head self-attention of packed ``qkv`` (``[nnz, 3 * hidden]``) over each sequence
    of the batch, with ALiBi. Returns ``[nnz, hidden]``."""
    nnz, three_hidden = qkv.shape
    hidden = three_hidden // 3
    head_dim = hidden // num_heads
    impl = resolve_attn_impl(ctx.attn_impl, qkv.device, qkv.dtype)
    if impl == "flex" and dropout_p > 0:
        impl = "sdpa"  # FlexAttention has no dropout; the reference also falls back to torch
    if impl == "flash_varlen":
        from flash_attn import flash_attn_varlen_qkvpacked_func

        out = flash_attn_varlen_qkvpacked_func(
            qkv.view(nnz, 3, num_heads, head_dim),
            ctx.cu_seqlens,
            ctx.max_seqlen,
            dropout_p=dropout_p,
            causal=False,
            alibi_slopes=ctx.slopes,
        )
        return out.reshape(nnz, hidden)
    s = ctx.max_seqlen
    padded = pad_input(qkv, ctx.repad_indices, ctx.batch, s)  # [b, s, 3 * hidden]
    q, k, v = padded.view(ctx.batch, s, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if impl == "flex":
        score_mod, block_mask = ctx.flex_mods()
        if qkv.device.type == "cuda":
            out = _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask)
        else:
            from torch.nn.attention.flex_attention import flex_attention

            out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=ctx.sdpa_bias(q.dtype), dropout_p=dropout_p
        )
    out = out.transpose(1, 2).reshape(ctx.batch * s, hidden)
    return out.index_select(0, ctx.repad_indices)
