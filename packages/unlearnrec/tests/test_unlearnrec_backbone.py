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
