"""Ego-networks of a large graph as a PyG transform
(``caoyxuan/W2PGNN:node_classification/pre_data_process.py:get_subgraphs``)."""

from __future__ import annotations

import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import k_hop_subgraph

__all__ = ["EgoNetworks"]


class EgoNetworks(BaseTransform):
    """Turn one graph into a list of ``num_hops``-hop ego-networks around sampled centres.

    Defaults are the reference's: 2 hops, ``sample_ratio=1e-3`` of the nodes drawn without
    replacement, subgraphs with more than ``max_nodes=1000`` nodes dropped
    (pre_data_process.py, ``--node_threshold 1000``). Unlike a usual PyG transform, calling it
    returns ``list[Data]``: each ego-network with relabelled ``edge_index``, ``num_nodes``,
    the sliced node attributes (``x``, ``y`` when node-level) and ``center`` (the centre's
    index inside the ego-network) and ``center_id`` (its index in the source graph).

    Args:
        num_hops: radius of the ego-network.
        sample_ratio: share of nodes used as centres (ignored when ``num_centers`` is set);
            at least one centre is drawn (the reference's ``int(n * ratio)`` can give zero).
        max_nodes: ego-networks larger than this are dropped (``None``: keep all).
        num_centers: an explicit number of centres.
        drop_edgeless: drop ego-networks without edges (an isolated centre); graphon
            estimation cannot use them.
        seed: seed of the centre sampling.
    """

    def __init__(
        self,
        num_hops: int = 2,
        sample_ratio: float = 1e-3,
        max_nodes: int | None = 1000,
        num_centers: int | None = None,
        drop_edgeless: bool = True,
        seed: int = 0,
    ) -> None:
        if isinstance(num_hops, bool) or not isinstance(num_hops, int) or num_hops < 1:
            raise ValueError(f"num_hops must be an int >= 1, got {num_hops!r}")
        if not isinstance(sample_ratio, int | float) or not 0 < sample_ratio <= 1:
            raise ValueError(f"sample_ratio must be in (0, 1], got {sample_ratio!r}")
        if max_nodes is not None and (not isinstance(max_nodes, int) or max_nodes < 1):
            raise ValueError(f"max_nodes must be a positive int or None, got {max_nodes!r}")
        if num_centers is not None and (not isinstance(num_centers, int) or num_centers < 1):
            raise ValueError(f"num_centers must be a positive int or None, got {num_centers!r}")
        self.num_hops = num_hops
        self.sample_ratio = float(sample_ratio)
        self.max_nodes = max_nodes
        self.num_centers = num_centers
        self.drop_edgeless = drop_edgeless
        self.seed = seed

    def forward(self, data: Data) -> list[Data]:  # type: ignore[override]
        if not isinstance(data, Data):
            raise TypeError(f"data must be torch_geometric.data.Data, got {type(data).__name__}")
        if data.edge_index is None or data.num_nodes is None or data.num_nodes < 1:
            raise ValueError("data must have nodes and an edge_index")
        n = int(data.num_nodes)
        k = self.num_centers if self.num_centers is not None else int(n * self.sample_ratio)
        k = min(max(k, 1), n)
        gen = torch.Generator().manual_seed(self.seed)
        centers = torch.randperm(n, generator=gen)[:k]
        out: list[Data] = []
        for c in centers.tolist():
            subset, edge_index, mapping, _ = k_hop_subgraph(
                c, self.num_hops, data.edge_index, relabel_nodes=True, num_nodes=n
            )
            if self.max_nodes is not None and subset.numel() > self.max_nodes:
                continue
            if self.drop_edgeless and edge_index.numel() == 0:
                continue
            ego = Data(edge_index=edge_index, num_nodes=int(subset.numel()))
            if data.x is not None:
                ego.x = data.x[subset]
            y = getattr(data, "y", None)
            if isinstance(y, torch.Tensor) and y.dim() >= 1 and y.shape[0] == n:
                ego.y = y[subset]
            ego.center = int(mapping[0])
            ego.center_id = c
            out.append(ego)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_hops={self.num_hops}, sample_ratio={self.sample_ratio}, "
            f"max_nodes={self.max_nodes}, num_centers={self.num_centers})"
        )
