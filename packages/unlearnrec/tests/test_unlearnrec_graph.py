import importlib.util

import pytest
import torch
from torch_geometric.data import HeteroData

from trainforge_unlearnrec import (
    RandomEdgeRequest,
    bipartite_edge_index,
    inject_random_edges,
    load_movielens_100k,
    planted_communities,
    split_request,
)
from trainforge_unlearnrec.graph import EDGE_TYPE, check_no_isolated


def test_bipartite_edge_index_is_symmetric(tiny_graph):
    ei = bipartite_edge_index(tiny_graph.train, 4, 5)
    assert ei.shape == (2, 18)
    assert set(map(tuple, ei.t().tolist())) == set(map(tuple, ei.flip(0).t().tolist()))
    assert int(ei.max()) == 8 and int(ei[1, :9].min()) >= 4


def test_split_request_removes_exactly_the_request(tiny_graph):
    req = torch.tensor([[1, 3], [2, 4]])
    remain, drop = split_request(tiny_graph.train, req, 4, 5)
    assert remain.size(1) == tiny_graph.train.size(1) - 2
    kept = set(map(tuple, remain.t().tolist()))
    assert (1, 2) not in kept and (3, 4) not in kept and torch.equal(drop, req)


def test_random_edge_request_transform_is_a_pyg_transform(tiny_graph):
    data = tiny_graph.to_hetero()
    assert isinstance(data, HeteroData)
    out = RandomEdgeRequest(0.3, seed=0)(data)
    store = out[EDGE_TYPE]
    assert store.edge_index.size(1) + store.drop_edge_index.size(1) == 9
    assert store.drop_edge_index.size(1) == 9 - int(0.7 * 9)
    both = torch.cat([store.edge_index, store.drop_edge_index], 1)
    assert sorted(map(tuple, both.t().tolist())) == sorted(
        map(tuple, tiny_graph.train.t().tolist())
    )


def test_planted_graph_and_injection():
    g = planted_communities(60, 80, 4, 10, seed=0)
    check_no_isolated(g.train, g.num_users, g.num_items)
    g2, fake = inject_random_edges(g, 20, seed=1)
    assert fake.shape == (2, 20) and g2.train.size(1) == g.train.size(1) + 20
    keys = set((g.train[0] * g.num_items + g.train[1]).tolist())
    assert not keys & set((fake[0] * g.num_items + fake[1]).tolist())


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None, reason="needs recbole")
def test_movielens_100k_loads():
    g = load_movielens_100k(seed=0)
    assert g.num_users == 943 and 1500 < g.num_items <= 1682
    assert 75_000 < g.train.size(1) < 82_000 and g.train.size(1) + g.test.size(1) <= 100_000
    check_no_isolated(g.train, g.num_users, g.num_items)
    again = load_movielens_100k(seed=0)
    assert torch.equal(g.train, again.train)


def test_movielens_without_recbole_names_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"trainforge-unlearnrec\[ml100k\]"):
        load_movielens_100k()
