"""Sparse products shared by the backbone and the encoder."""

from __future__ import annotations

import torch
from torch import Tensor


class _SymmetricSpMM(torch.autograd.Function):
    """``A @ x`` for a symmetric sparse ``A``; the backward ``A^T g`` reuses ``A`` (a COO
    transpose would re-sort all entries on every backward pass)."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        return None, torch.sparse.mm(ctx.adj, grad)


def symmetric_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` for a symmetric sparse ``adj`` (no gradient to ``adj``)."""
    return _SymmetricSpMM.apply(adj, x)
