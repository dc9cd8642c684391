"""GW-barycenter graphon estimators (gwb, sgwb, fgwb, sfgwb of utils/learner.py)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components
from torch_geometric.utils import from_networkx

from trainforge_w2pgnn import BarycenterConfig, estimate_graphon, sample_graphs

BARY = ("gwb", "sgwb", "fgwb", "sfgwb")


@pytest.fixture(scope="module")
def two_cliques():
    return from_networkx(nx.disjoint_union(nx.complete_graph(36), nx.complete_graph(24)))


@pytest.mark.parametrize("method", BARY)
def test_barycenter_of_identical_graphs_is_the_graphs_structure(two_cliques, method):
    many = estimate_graphon([two_cliques] * 4, method, resolution=20).step_function.numpy()
    one = estimate_graphon([two_cliques], method, resolution=20).step_function.numpy()
    np.testing.assert_allclose(many, one, atol=1e-12)  # identical inputs: one graph's answer
    np.testing.assert_allclose(many, many.T, atol=1e-12)
    # 10 barycenter nodes (60 // 6): two dense blocks holding 36/60 and 24/60 of the mass,
    # nothing across, i.e. the two cliques up to a permutation of the barycenter nodes.
    dense = many > 0.5
    n_comp, labels = connected_components(dense, directed=False)
    sizes = sorted(np.bincount(labels).tolist())
    assert n_comp == 2 and sizes == [4, 6]
    same = labels[:, None] == labels[None, :]
    assert (many[same] > 0.85).all() and (many[~same] < 0.05).all()


def test_gw_barycenter_recovers_sbm_blocks(gen):
    w = torch.full((40, 40), 0.1, dtype=torch.float64)
    w[:20, :20], w[20:, 20:] = 0.8, 0.3
    g = estimate_graphon(sample_graphs(w, 10, 40, gen), "gwb", resolution=40).values
    assert abs(g[:12, :12].mean().item() - 0.8) < 0.1
    assert abs(g[28:, 28:].mean().item() - 0.3) < 0.1
    assert abs(g[:12, 28:].mean().item() - 0.1) < 0.1
    assert torch.allclose(g, g.T)


def test_barycenter_bad_input(two_cliques, gen):
    with pytest.raises(ValueError, match="beta"):
        BarycenterConfig(beta=0)
    with pytest.raises(ValueError, match="gamma"):
        BarycenterConfig(gamma=1.5)
    with pytest.raises(ValueError, match="outer_iters"):
        BarycenterConfig(outer_iters=0)
    with pytest.raises(TypeError, match="BarycenterConfig"):
        estimate_graphon([two_cliques], "gwb", barycenter={"beta": 1})
    tiny = sample_graphs(torch.full((4, 4), 0.9, dtype=torch.float64), 3, 6, gen)
    with pytest.raises(ValueError, match="barycenter nodes"):
        estimate_graphon(tiny, "sgwb")  # 6 nodes: 6 // 3 = 2 < 3 for the smoothing matrix
