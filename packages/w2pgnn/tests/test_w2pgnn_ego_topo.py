"""EgoNetworks against networkx ego graphs; topological features against direct formulas."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
from torch_geometric.utils import from_networkx

from trainforge_w2pgnn import EgoNetworks, topo_features


def _les_mis():
    g = nx.convert_node_labels_to_integers(nx.les_miserables_graph())
    return g, from_networkx(g)


def test_ego_network_node_counts_match_networkx():
    g, data = _les_mis()
    egos = EgoNetworks(num_hops=2, num_centers=20, max_nodes=None)(data)
    assert len(egos) == 20
    for ego in egos:
        expected = nx.ego_graph(g, ego.center_id, radius=2)
        assert ego.num_nodes == expected.number_of_nodes()
        assert ego.edge_index.shape[1] == 2 * expected.number_of_edges()
        assert int(ego.edge_index.max()) < ego.num_nodes


def test_ego_networks_drop_large_and_use_sample_ratio():
    g, data = _les_mis()
    sizes = {c: nx.ego_graph(g, c, radius=1).number_of_nodes() for c in g}
    egos = EgoNetworks(num_hops=1, sample_ratio=1.0, max_nodes=10)(data)
    assert len(egos) == sum(1 for s in sizes.values() if s <= 10)
    assert all(e.num_nodes <= 10 for e in egos)
    # 0.1% of 77 nodes rounds to 0 in the reference; we keep one centre.
    assert len(EgoNetworks()(data)) == 1


def test_ego_networks_carry_node_features():
    _, data = _les_mis()
    data.x = torch.arange(data.num_nodes, dtype=torch.float32)[:, None]
    for ego in EgoNetworks(num_hops=1, num_centers=5)(data):
        assert ego.x[ego.center, 0].item() == ego.center_id


def test_topo_features_match_direct_formulas():
    g = nx.karate_club_graph()
    f = topo_features(from_networkx(g))
    n, m = g.number_of_nodes(), g.number_of_edges()
    degs = [d for _, d in g.degree()]
    assert torch.isfinite(f).all() and f.shape == (8,)
    assert f[0].item() == pytest.approx(2 * m / n)
    mean = sum(degs) / n
    assert f[1].item() == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in degs) / n))
    assert f[2].item() == pytest.approx(2 * m / (n * (n - 1)))
    assert f[6].item() == pytest.approx(nx.transitivity(g))
    assert f[7].item() == pytest.approx(nx.average_clustering(g))


def test_topo_features_finite_on_regular_graphs():
    f = topo_features(from_networkx(nx.cycle_graph(8)))
    assert torch.isfinite(f).all()
    assert f[4].item() == 0.0 and f[5].item() == 0.0


def test_dense_topo_features_equal_the_networkx_path(monkeypatch):
    import trainforge_w2pgnn.topo as topo
    from trainforge_w2pgnn import sample_graphs, synthetic_graphon

    gen = torch.Generator().manual_seed(0)
    graphs = sample_graphs(synthetic_graphon(0, 30), 8, (3, 25), gen)
    graphs = [g for g in graphs if g.edge_index.numel() > 0]
    graphs += [_les_mis()[1], from_networkx(nx.cycle_graph(6)), from_networkx(nx.path_graph(5))]
    fast = [topo.topo_features(g) for g in graphs]
    monkeypatch.setattr(topo, "DENSE_MAX_NODES", 0)  # force networkx
    for g, f in zip(graphs, fast, strict=True):
        torch.testing.assert_close(f, topo.topo_features(g), atol=1e-12, rtol=0)
