import torch
import torch.nn.functional as F
from torch_geometric.utils import k_hop_subgraph

from trainforge_unlearnrec import (
    InfluenceEncoder,
    Request,
    UnlearnRecModel,
    lightgcn,
)
from trainforge_unlearnrec.backbone import dense_normalized_adjacency


def _model(graph, backbone, **kw):
    enc = InfluenceEncoder(graph.num_nodes, 8, num_layers=3, **kw)
    return UnlearnRecModel(backbone, enc, graph.num_users, graph.num_items, graph.edge_index())


def test_zero_encoder_is_identity(tiny_graph, tiny_backbone):
    m = _model(tiny_graph, tiny_backbone)
    with torch.no_grad():
        m.encoder.withdraw_rate.zero_()
    req = Request.build(m, tiny_graph.train, torch.tensor([[0, 3], [1, 4]]))
    got = m.embeddings(req.remain_edge_index, req.drop_edge_index)
    want = tiny_backbone.propagate(tiny_backbone.init_embeddings(), req.remain_edge_index)
    assert torch.equal(got, want)


def test_encoder_matches_dense_float64_formula(tiny_graph, tiny_backbone):
    m = _model(tiny_graph, tiny_backbone)
    torch.manual_seed(0)
    with torch.no_grad():
        m.encoder.edge_embeds.normal_()
        m.encoder.withdraw_rate.uniform_(0.0, 0.5)
    req = Request.build(m, tiny_graph.train, torch.tensor([[0, 2, 3], [1, 3, 0]]))
    delta = m.encoder(req.drop_edge_index, m.final_embeds).double()
    a = dense_normalized_adjacency(req.drop_edge_index, tiny_graph.num_nodes)
    h0 = m.encoder.edge_embeds.detach().double()
    h = h0 + a @ h0 + a @ a @ h0 + a @ a @ a @ h0
    w = a @ a @ a @ (m.final_embeds.double() * m.encoder.withdraw_rate.detach().double())
    want = F.leaky_relu(F.leaky_relu(h - 0.1 * w, 0.99), 0.99)
    torch.testing.assert_close(delta, want, atol=1e-5, rtol=1e-5)


def test_locality_beyond_l_hops(chain_graph):
    g = chain_graph
    bb = lightgcn(g.num_nodes, 8, 3, seed=0)
    m = UnlearnRecModel(
        bb, InfluenceEncoder(g.num_nodes, 8, 3, include_self=False), g.num_users, g.num_items,
        g.edge_index(),
    )  # fmt: skip
    with torch.no_grad():
        m.encoder.edge_embeds.normal_()
    req = Request.build(m, g.train, torch.tensor([[0], [0]]))  # the chain's first edge
    delta = m.encoder(req.drop_edge_index, m.final_embeds)
    touched = {0, g.num_users}
    nonzero = set(torch.nonzero(delta.abs().sum(1)).flatten().tolist())
    assert nonzero and nonzero <= touched
    # after the frozen base propagates over the remaining graph, only nodes within L hops of
    # the request's nodes differ from plain edge removal
    got = m.embeddings(req.remain_edge_index, req.drop_edge_index)
    removal = bb.propagate(bb.init_embeddings(), req.remain_edge_index)
    near, _, _, _ = k_hop_subgraph(sorted(touched), 3, req.remain_edge_index, num_nodes=g.num_nodes)
    far = torch.ones(g.num_nodes, dtype=torch.bool)
    far[near] = False
    assert far.sum() > 0
    assert torch.equal(got[far], removal[far])
    assert not torch.allclose(got[~far], removal[~far])


def test_only_h0_and_eta_train_by_default(tiny_graph, tiny_backbone):
    m = _model(tiny_graph, tiny_backbone)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"encoder.edge_embeds", "encoder.withdraw_rate"}
    m2 = _model(tiny_graph, lightgcn(tiny_graph.num_nodes, 8, 3), mlp_trainable=True)
    assert {n for n, p in m2.named_parameters() if p.requires_grad} >= {
        "encoder.mlp.0.weight",
        "encoder.mlp.1.bias",
    }


def test_model_state_dict_round_trip(tiny_graph, tiny_backbone):
    m = _model(tiny_graph, tiny_backbone)
    with torch.no_grad():
        m.encoder.edge_embeds.normal_()
        m.init_embeds.add_(0.1)
    fresh = _model(tiny_graph, lightgcn(tiny_graph.num_nodes, 8, 3, seed=9))
    fresh.load_state_dict(m.state_dict())
    req = Request.build(m, tiny_graph.train, torch.tensor([[1], [2]]))
    torch.testing.assert_close(
        fresh.embeddings(req.remain_edge_index, req.drop_edge_index),
        m.embeddings(req.remain_edge_index, req.drop_edge_index),
    )
