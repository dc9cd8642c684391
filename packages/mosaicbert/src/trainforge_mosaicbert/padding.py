"""Unpadding: run the dense layers on the real tokens only.

Same contract as ``mosaicml/examples:examples/benchmarks/bert/src/bert_padding.py``
(``unpad_input`` / ``pad_input``), written with plain differentiable indexing (``index_select``
and ``index_copy``), whose gradients are the gather / scatter the reference hand-wrote.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_mask(attention_mask: torch.Tensor, batch: int, seqlen: int) -> None:
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(
            f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}"
        )
    if attention_mask.shape != (batch, seqlen):
        raise ValueError(
            f"attention_mask must have shape (batch, seqlen) = {(batch, seqlen)}, "
            f"got {tuple(attention_mask.shape)}"
        )
    if attention_mask.dtype != torch.bool and attention_mask.numel():
        values = attention_mask.unique()
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(
                "attention_mask must hold only 0 and 1 (or booleans), got values "
                f"{values.tolist()[:8]}"
            )


def unpad_input(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Drop the padded positions of ``hidden_states`` (``[batch, seqlen, ...]``).

    ``attention_mask`` is ``[batch, seqlen]`` with 1 (or True) on real tokens. Returns
    ``(unpadded [nnz, ...], indices [nnz] into the flattened batch*seqlen positions,
    cu_seqlens [batch + 1] int32, max_seqlen_in_batch)``.
    """
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim < 2:
        raise ValueError(
            "hidden_states must be a tensor of shape (batch, seqlen, ...), got "
            f"{getattr(hidden_states, 'shape', type(hidden_states).__name__)}"
        )
    batch, seqlen = hidden_states.shape[:2]
    _check_mask(attention_mask, batch, seqlen)
    mask = attention_mask.bool()
    seqlens = mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max()) if seqlens.numel() else 0
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(batch * seqlen, *hidden_states.shape[2:])
    return flat.index_select(0, indices), indices, cu_seqlens, max_seqlen


def pad_input(
    hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int
) -> torch.Tensor:
    """Inverse of :func:`unpad_input`: scatter ``[nnz, ...]`` rows back into a zero-filled
    ``[batch, seqlen, ...]`` tensor at ``indices``."""
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.ndim < 1:
        raise ValueError("hidden_states must be a tensor of shape (nnz, ...)")
    for name, value in (("batch", batch), ("seqlen", seqlen)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not isinstance(indices, torch.Tensor) or indices.ndim != 1:
        raise ValueError("indices must be a 1-D integer tensor (from unpad_input)")
    if indices.numel() != hidden_states.shape[0]:
        raise ValueError(
            f"indices has {indices.numel()} entries but hidden_states has "
            f"{hidden_states.shape[0]} rows"
        )
    if indices.numel() and int(indices.max()) >= batch * seqlen:
        raise ValueError(
            f"indices reach {int(indices.max())}, beyond batch * seqlen = {batch * seqlen}"
        )
    out = hidden_states.new_zeros(batch * seqlen, *hidden_states.shape[1:])
    out = out.index_copy(0, indices, hidden_states)
    return out.view(batch, seqlen, *hidden_states.shape[1:])
