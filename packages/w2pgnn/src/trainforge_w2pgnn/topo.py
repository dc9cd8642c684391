"""The 8 topological statistics of a graph (``caoyxuan/W2PGNN:utils/cal_topo_statistcs.py``)."""

from __future__ import annotations

import math
import warnings

import networkx as nx
import numpy as np
import torch
from torch_geometric.data import Data

__all__ = ["TOPO_NAMES", "to_undirected_networkx", "topo_features"]

TOPO_NAMES = (
    "average_degree",
    "degree_std",
    "density",
    "mean_closeness",
    "degree_pearson",
    "degree_assortativity",
    "transitivity",
    "average_clustering",
)
"""Names of the 8 topological statistics `topo_features` returns, in order."""


def to_undirected_networkx(data: Data) -> nx.Graph:
    """An undirected ``networkx.Graph`` with all ``num_nodes`` nodes (isolated ones included).

    The reference builds graphs from dense adjacency matrices with ``nx.from_numpy_array``,
    which is undirected; self-loops are dropped.
    """
    g = nx.Graph()
    g.add_nodes_from(range(int(data.num_nodes)))
    ei = data.edge_index.cpu().numpy()
    g.add_edges_from((int(a), int(b)) for a, b in zip(ei[0], ei[1], strict=True) if a != b)
    return g


def topo_features(data: Data) -> torch.Tensor:
    """Average degree, degree std, density, mean closeness centrality, degree Pearson r,
    degree assortativity, transitivity, average clustering: a float64 tensor of 8.

    The two correlation coefficients are undefined (NaN in networkx) when all edges join
    nodes of equal degree (regular graphs); they are set to 0 here so the features stay
    finite, where the reference would pass NaN to KMeans.
    """
    if not isinstance(data, Data):
        raise TypeError(f"data must be torch_geometric.data.Data, got {type(data).__name__}")
    if data.edge_index is None or data.num_nodes is None or data.num_nodes < 1:
        raise ValueError("data must have nodes and an edge_index")
    g = to_undirected_networkx(data)
    n = g.number_of_nodes()
    if g.number_of_edges() == 0:
        raise ValueError(
            "data has no edges; the reference skips such graphs (cal_topo_graphs) and so must "
            "the caller"
        )
    deg = np.array([d for _, d in g.degree()], dtype=np.float64)
    avg = deg.mean()
    std = math.sqrt(((deg - avg) ** 2).mean())
    density = nx.density(g)
    closeness = sum(nx.closeness_centrality(g).values()) / n
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        pearson = nx.degree_pearson_correlation_coefficient(g)
        assort = nx.degree_assortativity_coefficient(g)
    pearson = 0.0 if not math.isfinite(pearson) else pearson
    assort = 0.0 if not math.isfinite(assort) else assort
    feats = [
        avg,
        std,
        density,
        closeness,
        pearson,
        assort,
        nx.transitivity(g),
        nx.average_clustering(g),
    ]
    return torch.tensor(feats, dtype=torch.float64)
