"""The Influence Encoder (IE) and the unlearned recommender built around it.

Follows Shuvayu12/UnlearnRec2:Model.py ``GraphUnlearning.forward`` (a public copy of the
official code; HKUDS/UnlearnRec itself could not be read here):

* ``h = sum_{l=0..L} Ã^l H0`` with a learnable ``H0`` (N, d) that starts at zero, where
  ``Ã`` is the normalized bipartite adjacency of the request edges alone;
* ``w = Ã^L (E_fin * eta)`` with a learnable per-node ``eta`` (N, 1) that starts at
  ``2 * lr = 0.002`` (``withdraw_rate_init=1``);
* ``delta = MLP(h - omega * w)``, ``omega = overall_withdraw_rate = 0.1``; the MLP is
  ``layer_mlp=2`` layers of ``LeakyReLU_0.99(x W + b)`` with ``W = I, b = 0`` created with
  ``requires_grad=False`` (``FeedForwardLayer``), so only ``H0`` and ``eta`` learn during
  pre-training;
* the unlearned model is ``E' = f(E0 + delta, Â')`` with the frozen base ``f`` on the
  remaining graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from trainforge_unlearnrec._sparse import symmetric_spmm
from trainforge_unlearnrec.backbone import BaseRecAdapter


def normalized_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Sparse ``D^-1/2 A D^-1/2`` of a symmetric ``edge_index`` (PyG ``gcn_norm``, no self
    loops; nodes without edges get zero rows, as the reference's ``_normalize_adj``)."""
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(
            f"edge_index has node ids outside [0, {num_nodes - 1}] (num_nodes={num_nodes})"
        )
    ei, w = gcn_norm(edge_index, None, num_nodes, add_self_loops=False)
    # message passing source -> target: out[target] += w * x[source]
    return torch.sparse_coo_tensor(
        ei.flip(0), w, (num_nodes, num_nodes), check_invariants=False
    ).coalesce()


def drop_sparse_entries(
    adj: Tensor, keep_rate: float, generator: torch.Generator | None = None
) -> Tensor:
    """Keep each stored entry with probability ``keep_rate`` and rescale it by
    ``1 / keep_rate`` (Model.py ``SpAdjDropEdge``, "v1")."""
    if keep_rate >= 1.0:
        return adj
    idx, val = adj.indices(), adj.values()
    mask = torch.rand(val.shape, generator=generator) < keep_rate
    # a subset of a coalesced matrix's entries is still coalesced: skip the re-sort
    return torch.sparse_coo_tensor(
        idx[:, mask], val[mask] / keep_rate, adj.shape, check_invariants=False, is_coalesced=True
    )


class FeedForwardLayer(nn.Module):
    """``LeakyReLU(x W + b)`` with ``W = I``, ``b = 0`` (Model.py ``FeedForwardLayer`` v2).

    ``trainable=False`` reproduces the reference, where both are frozen during
    pre-training (fine-tuning unfreezes them).
    """

    def __init__(self, dim: int, negative_slope: float = 0.99, trainable: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim), requires_grad=trainable)
        self.bias = nn.Parameter(torch.zeros(1, dim), requires_grad=trainable)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x @ self.weight + self.bias)


class InfluenceEncoder(nn.Module):
    """UnlearnRec's Influence Encoder: request adjacency -> embedding update ``delta``.

    Args mirror the reference's ``params.py``: ``num_layers=gnn_layer=3``,
    ``withdraw_scale=overall_withdraw_rate=0.1``, ``withdraw_init=2*lr=2e-3``,
    ``mlp_layers=layer_mlp=2``, ``negative_slope=leaky=0.99``,
    ``extra_layers=unlearn_layer=0``. ``mlp_trainable=False`` is the reference's frozen
    identity MLP; ``True`` is the paper's description (a trainable MLP).
    ``include_self=False`` drops the layer-0 ``H0`` term (used by the locality test).
    """

    def __init__(
        self,
        num_nodes: int,
        dim: int,
        num_layers: int = 3,
        withdraw_scale: float = 0.1,
        withdraw_init: float = 2e-3,
        mlp_layers: int = 2,
        mlp_trainable: bool = False,
        negative_slope: float = 0.99,
        extra_layers: int = 0,
        include_self: bool = True,
    ) -> None:
        super().__init__()
        for arg, value in (("num_nodes", num_nodes), ("dim", dim), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}")
        for arg, value in (("mlp_layers", mlp_layers), ("extra_layers", extra_layers)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{arg} must be a non-negative int, got {value!r}")
        self.num_nodes, self.dim, self.num_layers = num_nodes, dim, num_layers
        self.withdraw_scale = float(withdraw_scale)
        self.extra_layers = extra_layers
        self.include_self = include_self
        self.edge_embeds = nn.Parameter(torch.zeros(num_nodes, dim))  # H0
        # normalized request adjacency, cached for the last drop_edge_index object seen
        self._adj_cache: tuple[Tensor, Tensor] | None = None
        self.withdraw_rate = nn.Parameter(torch.full((num_nodes, 1), float(withdraw_init)))
        self.mlp = nn.Sequential(
            *[FeedForwardLayer(dim, negative_slope, mlp_trainable) for _ in range(mlp_layers)]
        )

    def encode(
        self,
        drop_edge_index: Tensor,
        final_emb: Tensor,
        remain_edge_index: Tensor | None = None,
        ssl_keep: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """``(delta, clean_layers, noisy_layers)``; the noisy layers (for the SSL loss)
        propagate the same input over ``Ã`` with ``1 - ssl_keep`` of its entries dropped."""
        if drop_edge_index.numel() == 0:
            raise ValueError("drop_edge_index is empty: an unlearning request needs edges")
        if final_emb.shape != (self.num_nodes, self.dim):
            raise ValueError(
                f"final_emb must have shape ({self.num_nodes}, {self.dim}), got "
                f"{tuple(final_emb.shape)}"
            )
        if self._adj_cache is None or self._adj_cache[0] is not drop_edge_index:
            self._adj_cache = (
                drop_edge_index,
                normalized_adjacency(drop_edge_index, self.num_nodes),
            )
        adj = self._adj_cache[1].to(final_emb.dtype)
        lats = [self.edge_embeds]
        clean: list[Tensor] = []
        noisy: list[Tensor] = []
        for _ in range(self.num_layers):
            nxt = symmetric_spmm(adj, lats[-1])
            if ssl_keep is not None:
                noisy.append(
                    torch.sparse.mm(drop_sparse_entries(adj, ssl_keep, generator), lats[-1])
                )
            clean.append(nxt)
            lats.append(nxt)
        h = sum(lats if self.include_self else lats[1:])
        if self.extra_layers:
            if remain_edge_index is None:
                raise ValueError("extra_layers > 0 needs remain_edge_index")
            remain = normalized_adjacency(remain_edge_index, self.num_nodes).to(h.dtype)
            for _ in range(self.extra_layers):
                h = symmetric_spmm(remain, h)
        w = final_emb.detach() * self.withdraw_rate
        for _ in range(self.num_layers):
            w = symmetric_spmm(adj, w)
        delta = self.mlp(h - self.withdraw_scale * w)
        return delta, clean, noisy

    def forward(
        self, drop_edge_index: Tensor, final_emb: Tensor, remain_edge_index: Tensor | None = None
    ) -> Tensor:
        return self.encode(drop_edge_index, final_emb, remain_edge_index)[0]


class UnlearnRecModel(nn.Module):
    """A frozen base recommender plus an Influence Encoder.

    ``init_embeds`` is a frozen copy of the base's ``E0`` (fine-tuning unfreezes it, as
    fineTune.py does); ``final_embeds`` is ``f(E0, Â)`` on the full training graph, the
    target of the alignment loss.
    """

    def __init__(
        self,
        backbone: BaseRecAdapter,
        encoder: InfluenceEncoder,
        num_users: int,
        num_items: int,
        full_edge_index: Tensor,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, BaseRecAdapter) or not isinstance(backbone, nn.Module):
            raise TypeError(
                "backbone must be an nn.Module with init_embeddings() and propagate(), got "
                f"{type(backbone).__name__}"
            )
        if not isinstance(encoder, InfluenceEncoder):
            raise TypeError(f"encoder must be an InfluenceEncoder, got {type(encoder).__name__}")
        if backbone.num_nodes != num_users + num_items or encoder.num_nodes != backbone.num_nodes:
            raise ValueError(
                f"node counts disagree: backbone {backbone.num_nodes}, encoder "
                f"{encoder.num_nodes}, graph {num_users} + {num_items}"
            )
        self.backbone = backbone
        self.encoder = encoder
        self.num_users, self.num_items = num_users, num_items
        for p in backbone.parameters():
            p.requires_grad_(False)
        e0 = backbone.init_embeddings().detach().clone()
        if e0.size(1) != encoder.dim:
            raise ValueError(f"encoder dim {encoder.dim} != backbone dim {e0.size(1)}")
        self.init_embeds = nn.Parameter(e0, requires_grad=False)
        with torch.no_grad():
            self.register_buffer("final_embeds", backbone.propagate(e0, full_edge_index))

    def embeddings(self, remain_edge_index: Tensor, drop_edge_index: Tensor) -> Tensor:
        """Final embeddings of the unlearned model, ``f(E0 + delta, Â')`` (N, d)."""
        delta = self.encoder(drop_edge_index, self.final_embeds, remain_edge_index)
        return self.backbone.propagate(self.init_embeds + delta, remain_edge_index)

    def split(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        return emb[: self.num_users], emb[self.num_users :]

    def scores(
        self, users: Tensor, items: Tensor, remain_edge_index: Tensor, drop_edge_index: Tensor
    ) -> Tensor:
        """Scores of (users[k], items[k]) after unlearning (item ids local)."""
        u, i = self.split(self.embeddings(remain_edge_index, drop_edge_index))
        return (u[users] * i[items]).sum(-1)
