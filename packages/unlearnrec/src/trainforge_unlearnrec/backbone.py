"""Base recommenders behind a two-method protocol, and their BPR training.

UnlearnRec needs two things from the frozen recommender ``f``: its initial embeddings
``E0`` and a propagation ``f(E0', A')`` that it can run on other initial embeddings and on
another graph. :class:`PyGLightGCNAdapter` provides both for
``torch_geometric.nn.models.LightGCN`` (whose ``get_embedding`` has no hook for external
embeddings, so the adapter calls ``model.convs`` itself); :class:`DenseLightGCN` is an
independent dense-matrix implementation used as the reference in tests and benchmarks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.nn.models import LightGCN

from trainforge_unlearnrec._sparse import symmetric_spmm
from trainforge_unlearnrec.graph import (
    bipartite_edge_index,
    check_no_isolated,
    check_pairs,
    pair_keys,
    split_request,
)
from trainforge_unlearnrec.losses import bpr_loss

log = logging.getLogger(__name__)

Agg = Literal["sum", "mean"]


@runtime_checkable
class BaseRecAdapter(Protocol):
    """What UnlearnRec needs from a base recommender."""

    num_nodes: int

    def init_embeddings(self) -> Tensor:
        """The initial embeddings ``E0`` (N, d)."""
        ...

    def propagate(self, x0: Tensor, edge_index: Tensor) -> Tensor:
        """Final embeddings ``f(x0, A)`` for the graph ``edge_index``."""
        ...


def _check_agg(agg: object) -> Agg:
    if agg not in ("sum", "mean"):
        raise ValueError(f"agg must be 'sum' or 'mean', got {agg!r}")
    return agg  # type: ignore[return-value]


class PyGLightGCNAdapter(nn.Module):
    """Wraps ``torch_geometric.nn.models.LightGCN`` as a :class:`BaseRecAdapter`.

    ``agg="sum"`` is the reference's ``E = sum_{l=0..L} A^l E0``
    (Shuvayu12/UnlearnRec2:Model.py ``LightGCN.forward``); ``agg="mean"`` uses the model's
    own ``alpha`` (PyG's default 1/(L+1), the LightGCN paper's mean).
    """

    def __init__(self, model: LightGCN, agg: Agg = "sum") -> None:
        super().__init__()
        if not isinstance(model, LightGCN):
            raise TypeError(
                f"model must be a torch_geometric.nn.models.LightGCN, got {type(model).__name__}"
            )
        self.model = model
        self.agg = _check_agg(agg)
        self.num_nodes = int(model.num_nodes)
        self._cache: tuple[Tensor, Tensor] | None = None

    def init_embeddings(self) -> Tensor:
        return self.model.embedding.weight

    def adjacency(self, edge_index: Tensor) -> Tensor:
        """``D^-1/2 A D^-1/2`` as a sparse COO matrix (rows = targets), normalized with
        LGConv's own ``gcn_norm`` call and cached for the last ``edge_index`` object seen
        (LGConv re-normalizes, a scatter over all edges, at every layer of every step)."""
        if self._cache is None or self._cache[0] is not edge_index:
            ei, w = gcn_norm(edge_index, None, self.num_nodes, add_self_loops=False)
            adj = torch.sparse_coo_tensor(
                ei.flip(0), w, (self.num_nodes, self.num_nodes), check_invariants=False
            )
            self._cache = (edge_index, adj.coalesce())
        return self._cache[1]

    def propagate(self, x0: Tensor, edge_index: Tensor) -> Tensor:
        if x0.dim() != 2 or x0.size(0) != self.num_nodes:
            raise ValueError(f"x0 must have shape ({self.num_nodes}, d), got {tuple(x0.shape)}")
        adj_t = self.adjacency(edge_index).to(x0.dtype)
        alpha = self.model.alpha if self.agg == "mean" else None
        x = x0
        out = x0 if alpha is None else x0 * alpha[0]
        for i in range(len(self.model.convs)):
            # what LGConv computes (sum aggregation of gcn_norm-weighted neighbours), as one
            # COO SpMM: PyG's spmm path for a sparse adj_t converts formats on every call
            # and measured several times slower on CPU
            x = symmetric_spmm(adj_t, x)
            out = out + (x if alpha is None else x * alpha[i + 1])
        return out

    def forward(self, edge_index: Tensor) -> Tensor:
        return self.propagate(self.init_embeddings(), edge_index)


def lightgcn(
    num_nodes: int, dim: int = 64, num_layers: int = 3, agg: Agg = "sum", seed: int = 0
) -> PyGLightGCNAdapter:
    """A fresh PyG LightGCN (xavier-uniform init, as the reference) behind the adapter."""
    for arg, value in (("num_nodes", num_nodes), ("dim", dim), ("num_layers", num_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    torch.manual_seed(seed)
    return PyGLightGCNAdapter(LightGCN(num_nodes, dim, num_layers), agg=agg)


def dense_normalized_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Dense ``D^-1/2 A D^-1/2`` (isolated nodes get zero rows)."""
    a = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    a[edge_index[1], edge_index[0]] = 1.0
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    return inv[:, None] * a * inv[None, :]


class DenseLightGCN(nn.Module):
    """LightGCN on a dense normalized adjacency matrix: an independent reference."""

    def __init__(self, num_nodes: int, dim: int, num_layers: int = 3, agg: Agg = "sum") -> None:
        super().__init__()
        self.num_nodes = num_nodes
        self.num_layers = num_layers
        self.agg = _check_agg(agg)
        self.embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_nodes, dim)))
        self._cache: tuple[Tensor, Tensor] | None = None

    def init_embeddings(self) -> Tensor:
        return self.embedding

    def adjacency(self, edge_index: Tensor, dtype: torch.dtype) -> Tensor:
        if self._cache is None or not torch.equal(self._cache[0], edge_index):
            self._cache = (edge_index, dense_normalized_adjacency(edge_index, self.num_nodes))
        return self._cache[1].to(dtype)

    def propagate(self, x0: Tensor, edge_index: Tensor) -> Tensor:
        a = self.adjacency(edge_index, x0.dtype)
        layers = [x0]
        for _ in range(self.num_layers):
            layers.append(a @ layers[-1])
        out = torch.stack(layers).sum(0)
        return out / (self.num_layers + 1) if self.agg == "mean" else out

    def forward(self, edge_index: Tensor) -> Tensor:
        return self.propagate(self.init_embeddings(), edge_index)


def _in_sorted(query: Tensor, sorted_keys: Tensor) -> Tensor:
    """``torch.isin(query, sorted_keys)`` for sorted keys by binary search: a batch of
    queries against all edges of ML-100K was a third of a training epoch with isin."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == query


def sample_negatives(
    pairs: Tensor, num_items: int, users: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """One uniform negative item per user in ``users``, not interacted with in ``pairs``
    (the reference's rejection sampling, data_handler.py ``TrnData.neg_sampling``)."""
    if not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"num_items must be a positive int, got {num_items!r}")
    if pairs.numel() and int(pairs[1].max()) >= num_items:
        raise ValueError(f"pairs has item ids >= num_items={num_items}")
    keys = torch.sort(pair_keys(pairs, num_items)).values
    negs = torch.randint(num_items, users.shape, generator=generator)
    for _ in range(100):
        bad = _in_sorted(users * num_items + negs, keys)
        if not bool(bad.any()):
            break
        negs[bad] = torch.randint(num_items, (int(bad.sum()),), generator=generator)
    return negs


def parameter_l2(module: nn.Module) -> Tensor:
    """``sum ||theta||^2`` over a module's parameters (Utils/utils.py ``cal_reg``)."""
    total = torch.zeros(())
    for p in module.parameters():
        total = total + p.square().sum()
    return total


@dataclass
class TrainLog:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_lightgcn(
    backbone: nn.Module,
    train_pairs: Tensor,
    num_users: int,
    num_items: int,
    epochs: int = 20,
    batch_size: int = 4096,
    lr: float = 1e-3,
    reg: float = 1e-7,
    seed: int = 0,
    allow_isolated: bool = False,
) -> TrainLog:
    """BPR training of a base recommender on the full graph (reference base models:
    batch 4096, lr 1e-3, reg 1e-7 on all parameters; Model.py ``LightGCN.cal_loss``).

    A graph with isolated users or items is rejected unless ``allow_isolated=True``: a
    graph left by an unlearning request may have them (use :func:`retrain_without`).
    Isolated nodes get a zero row in the normalized adjacency, so their final embedding is
    their layer-0 term, and they are still ranked (Shuvayu12/UnlearnRec2:data_handler.py
    ``_normalize_adj`` sets the inf of ``degree ** -0.5`` to 0)."""
    if not isinstance(backbone, BaseRecAdapter):
        raise TypeError(
            "backbone must provide init_embeddings() and propagate(x0, edge_index), got "
            f"{type(backbone).__name__}"
        )
    train_pairs = check_pairs(train_pairs, num_users, num_items, "train_pairs")
    if not allow_isolated:
        check_no_isolated(train_pairs, num_users, num_items)
    if train_pairs.size(1) == 0:
        raise ValueError("train_pairs is empty: BPR training needs at least one edge")
    if backbone.num_nodes != num_users + num_items:
        raise ValueError(
            f"backbone has {backbone.num_nodes} nodes but the graph has "
            f"{num_users} + {num_items} = {num_users + num_items}"
        )
    for arg, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    gen = torch.Generator().manual_seed(seed)
    edge_index = bipartite_edge_index(train_pairs, num_users, num_items)
    opt = torch.optim.Adam(backbone.parameters(), lr=lr)
    out = TrainLog()
    start = time.perf_counter()
    n = train_pairs.size(1)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            u, i = train_pairs[0, idx], train_pairs[1, idx]
            j = sample_negatives(train_pairs, num_items, u, gen)
            emb = backbone.propagate(backbone.init_embeddings(), edge_index)
            ue, ie = emb[:num_users], emb[num_users:]
            loss = bpr_loss(ue[u], ie[i], ie[j]) + reg * parameter_l2(backbone)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        out.losses.append(total / n)
        log.debug("base epoch %d: loss %.4f", epoch, out.losses[-1])
    out.seconds = time.perf_counter() - start
    return out


def retrain_without(
    backbone: nn.Module,
    train_pairs: Tensor,
    request: Tensor,
    num_users: int,
    num_items: int,
    **train_kwargs: object,
) -> tuple[Tensor, TrainLog]:
    """Full retraining baseline: train ``backbone`` from scratch on ``train_pairs`` minus
    ``request``. Returns ``(remaining_pairs, log)``.

    ``train_pairs`` itself must have no isolated node (bad input, as for
    :func:`train_lightgcn`); users and items that only the request connected remain in the
    model, keep their layer-0 embedding in propagation and are still ranked, as when the
    reference retrains on its dropped matrix. ``train_kwargs`` go to :func:`train_lightgcn`.
    """
    train_pairs = check_pairs(train_pairs, num_users, num_items, "train_pairs")
    check_no_isolated(train_pairs, num_users, num_items)
    remain, _ = split_request(train_pairs, request, num_users, num_items)
    if remain.size(1) == 0:
        raise ValueError("request holds every edge of train_pairs: nothing is left to train on")
    users = int((torch.bincount(remain[0], minlength=num_users) == 0).sum())
    items = int((torch.bincount(remain[1], minlength=num_items) == 0).sum())
    if users or items:
        log.info(
            "the request leaves %d users and %d items without interactions; they keep their "
            "layer-0 embeddings",
            users,
            items,
        )
    if "allow_isolated" in train_kwargs:
        raise TypeError("retrain_without sets allow_isolated itself; do not pass it")
    out = train_lightgcn(
        backbone,
        remain,
        num_users,
        num_items,
        allow_isolated=True,
        **train_kwargs,  # type: ignore[arg-type]
    )
    return remain, out
