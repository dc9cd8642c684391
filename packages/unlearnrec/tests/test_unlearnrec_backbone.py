import torch

from trainforge_unlearnrec import DenseLightGCN, PyGLightGCNAdapter, lightgcn, train_lightgcn
from trainforge_unlearnrec.backbone import dense_normalized_adjacency


def _independent_lightgcn(x0, edge_index, n, layers, agg):
    """Loops over an explicit degree table: no shared code with the package."""
    x0 = x0.double()
    nbrs = {v: [] for v in range(n)}
    for s, t in edge_index.t().tolist():
        nbrs[t].append(s)
    deg = {v: len(nbrs[v]) for v in range(n)}
    out, x = x0.clone(), x0
    for _ in range(layers):
        nxt = torch.zeros_like(x)
        for t in range(n):
            for s in nbrs[t]:
                nxt[t] += x[s] / (deg[s] ** 0.5 * deg[t] ** 0.5)
        x = nxt
        out = out + x
    return out / (layers + 1) if agg == "mean" else out


def test_pyg_lightgcn_equals_dense_reference(tiny_graph):
    ei = tiny_graph.edge_index()
    for agg in ("sum", "mean"):
        pyg = lightgcn(tiny_graph.num_nodes, 6, 3, agg=agg, seed=1)
        dense = DenseLightGCN(tiny_graph.num_nodes, 6, 3, agg=agg)
        with torch.no_grad():
            dense.embedding.copy_(pyg.init_embeddings())
        ref = _independent_lightgcn(
            pyg.init_embeddings().detach(), ei, tiny_graph.num_nodes, 3, agg
        )
        got = pyg(ei).detach().double()
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dense(ei).detach().double(), ref, atol=1e-5, rtol=1e-5)


def test_mean_adapter_equals_pyg_get_embedding(tiny_graph):
    pyg = lightgcn(tiny_graph.num_nodes, 6, 3, agg="mean", seed=2)
    ei = tiny_graph.edge_index()
    torch.testing.assert_close(pyg(ei), pyg.model.get_embedding(ei), atol=1e-6, rtol=1e-5)


def test_sum_is_mean_times_layers_plus_one(tiny_graph):
    pyg = lightgcn(tiny_graph.num_nodes, 4, 3, agg="sum", seed=0)
    mean = PyGLightGCNAdapter(pyg.model, agg="mean")
    ei = tiny_graph.edge_index()
    torch.testing.assert_close(pyg(ei), 4 * mean(ei))


def test_dense_adjacency_is_symmetric_normalized(tiny_graph):
    a = dense_normalized_adjacency(tiny_graph.edge_index(), tiny_graph.num_nodes)
    torch.testing.assert_close(a, a.T)
    # D^-1/2 A D^-1/2 has spectral radius 1 on a graph without isolated nodes
    assert abs(torch.linalg.eigvalsh(a).abs().max().item() - 1.0) < 1e-9


def test_adapter_survives_state_dict_round_trip(tiny_graph, tiny_backbone):
    other = lightgcn(tiny_graph.num_nodes, 8, 3, seed=5)
    other.load_state_dict(tiny_backbone.state_dict())
    ei = tiny_graph.edge_index()
    torch.testing.assert_close(other(ei), tiny_backbone(ei))


def test_bpr_training_separates_positives(tiny_graph):
    bb = lightgcn(tiny_graph.num_nodes, 8, 2, seed=0)
    log = train_lightgcn(bb, tiny_graph.train, 4, 5, epochs=60, batch_size=9, lr=0.05)
    assert log.losses[-1] < log.losses[0]


def test_gradients_match_dense_reference(tiny_graph):
    pyg = lightgcn(tiny_graph.num_nodes, 4, 3, seed=3)
    dense = DenseLightGCN(tiny_graph.num_nodes, 4, 3)
    with torch.no_grad():
        dense.embedding.copy_(pyg.init_embeddings())
    ei = tiny_graph.edge_index()
    w = torch.randn(tiny_graph.num_nodes, 4)
    (pyg(ei) * w).sum().backward()
    (dense(ei) * w).sum().backward()
    torch.testing.assert_close(
        pyg.init_embeddings().grad, dense.embedding.grad, atol=1e-5, rtol=1e-5
    )


def test_retraining_handles_nodes_isolated_by_the_request(tiny_graph):
    # removing (0, 0), (0, 1) and (3, 4) leaves user 0 and item 4 without any edge: they
    # still exist and are ranked (the reference's _normalize_adj zeroes their rows)
    import pytest

    from trainforge_unlearnrec import recall_at_k, retrain_without

    request = torch.tensor([[0, 0, 3], [0, 1, 4]])
    bb = lightgcn(tiny_graph.num_nodes, 8, 3, seed=0)
    remain, log = retrain_without(
        bb, tiny_graph.train, request, 4, 5, epochs=3, batch_size=4, lr=1e-2
    )
    assert remain.size(1) == tiny_graph.train.size(1) - 3
    assert len(log.losses) == 3 and all(torch.isfinite(torch.tensor(log.losses)))
    with torch.no_grad():
        emb = bb(tiny_graph.edge_index(remain))
        e0 = bb.init_embeddings()
    assert torch.isfinite(emb).all()
    # an isolated node keeps its layer-0 term only
    torch.testing.assert_close(emb[0], e0[0])
    torch.testing.assert_close(emb[4 + 4], e0[4 + 4])
    assert not torch.equal(emb[1], e0[1])
    # user 0 (a test user with no remaining train edge) is ranked like any other
    r = recall_at_k(emb[:4], emb[4:], remain, tiny_graph.test, k=5)
    assert r == 1.0  # k = all items: every test item is found
    # the same call on the graph itself: train_lightgcn allows it only when asked
    bb2 = lightgcn(tiny_graph.num_nodes, 8, 3, seed=0)
    train_lightgcn(bb2, remain, 4, 5, epochs=1, allow_isolated=True)
    with pytest.raises(ValueError, match="isolated"):
        train_lightgcn(bb2, remain, 4, 5, epochs=1)
    # a user-supplied graph with isolated nodes is still bad input
    with pytest.raises(ValueError, match="isolated"):
        retrain_without(bb2, remain, torch.tensor([[1], [1]]), 4, 5, epochs=1)
    with pytest.raises(ValueError, match="every edge"):
        retrain_without(bb2, tiny_graph.train, tiny_graph.train, 4, 5, epochs=1)


def test_sorted_membership_equals_isin():
    from trainforge_unlearnrec.backbone import _in_sorted

    gen = torch.Generator().manual_seed(0)
    keys = torch.sort(torch.randint(0, 500, (300,), generator=gen)).values
    query = torch.randint(-5, 510, (1000,), generator=gen)
    assert torch.equal(_in_sorted(query, keys), torch.isin(query, keys))
    assert not _in_sorted(query, keys[:0]).any()
