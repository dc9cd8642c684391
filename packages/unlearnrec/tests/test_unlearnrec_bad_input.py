import pytest
import torch

from trainforge_unlearnrec import (
    DenseLightGCN,
    FinetuneConfig,
    InfluenceEncoder,
    PretrainConfig,
    PyGLightGCNAdapter,
    RandomEdgeRequest,
    RecGraph,
    Request,
    UnlearnRecModel,
    align_loss,
    bipartite_edge_index,
    bpr_loss,
    edge_scores,
    forget_loss,
    forget_score_gap,
    inject_random_edges,
    lightgcn,
    load_movielens_100k,
    ndcg_at_k,
    normalized_adjacency,
    planted_communities,
    pretrain,
    recall_at_k,
    sample_negatives,
    sample_non_edges,
    split_request,
    ssl_loss,
    train_lightgcn,
    unlearn,
    unlearning_loss,
    zero_shot,
)


@pytest.fixture
def model(tiny_graph, tiny_backbone):
    enc = InfluenceEncoder(tiny_graph.num_nodes, 8)
    return UnlearnRecModel(tiny_backbone, enc, 4, 5, tiny_graph.edge_index())


def test_requests_are_checked(tiny_graph, model):
    t = tiny_graph.train
    with pytest.raises(ValueError, match="not in the graph"):
        split_request(t, torch.tensor([[0], [4]]), 4, 5)
    with pytest.raises(ValueError, match="empty"):
        split_request(t, torch.zeros(2, 0, dtype=torch.long), 4, 5)
    with pytest.raises(ValueError, match="item ids"):
        split_request(t, torch.tensor([[0], [7]]), 4, 5)
    with pytest.raises(ValueError, match="user ids"):
        split_request(t, torch.tensor([[-1], [0]]), 4, 5)
    with pytest.raises(ValueError, match="duplicate"):
        split_request(t, torch.tensor([[0, 0], [1, 1]]), 4, 5)
    with pytest.raises(TypeError, match="integer"):
        split_request(t, torch.tensor([[0.0], [1.0]]), 4, 5)
    with pytest.raises(ValueError, match=r"shape \(2, E\)"):
        Request.build(model, t, torch.tensor([0, 1]))
    for fn in (zero_shot, unlearn):
        with pytest.raises(ValueError, match="not in the graph"):
            fn(model, t, torch.tensor([[0], [4]]))
        with pytest.raises(TypeError, match="UnlearnRecModel"):
            fn(object(), t, torch.tensor([[0], [1]]))


def test_graph_builders_reject_bad_input(tiny_graph):
    with pytest.raises(ValueError, match="num_users"):
        bipartite_edge_index(tiny_graph.train, 0, 5)
    with pytest.raises(ValueError, match="item ids"):
        RecGraph(4, 2, tiny_graph.train, tiny_graph.test)
    with pytest.raises(ValueError, match="drop_rate"):
        RandomEdgeRequest(1.5)
    with pytest.raises(TypeError, match="HeteroData"):
        RandomEdgeRequest(0.2)(tiny_graph.train)
    with pytest.raises(ValueError, match="num_edges"):
        inject_random_edges(tiny_graph, 0)
    with pytest.raises(ValueError, match="half"):
        inject_random_edges(tiny_graph, 10)
    with pytest.raises(ValueError, match="interactions_per_user"):
        planted_communities(10, 12, 3, 50)
    with pytest.raises(ValueError, match="p_in"):
        planted_communities(p_in=2.0)
    with pytest.raises(ValueError, match="test_ratio"):
        load_movielens_100k(test_ratio=1.0)
    with pytest.raises(ValueError, match="num_users"):
        sample_non_edges(tiny_graph.train, 0, 5, 3)
    with pytest.raises(ValueError, match="num must"):
        sample_non_edges(tiny_graph.train, 4, 5, 100)
    with pytest.raises(ValueError, match="node ids outside"):
        normalized_adjacency(torch.tensor([[0], [9]]), 4)


def test_backbones_reject_bad_input(tiny_graph):
    with pytest.raises(TypeError, match="LightGCN"):
        PyGLightGCNAdapter(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="agg"):
        lightgcn(9, 4, 2, agg="max")
    with pytest.raises(ValueError, match="agg"):
        DenseLightGCN(9, 4, 2, agg="max")
    with pytest.raises(ValueError, match="dim"):
        lightgcn(9, 0)
    bb = lightgcn(9, 4, 2)
    with pytest.raises(ValueError, match="x0 must have shape"):
        bb.propagate(torch.zeros(3, 4), tiny_graph.edge_index())
    with pytest.raises(ValueError, match="item ids"):
        sample_negatives(tiny_graph.train, 3, torch.tensor([0]))
    isolated = torch.tensor([[0, 1, 2], [0, 1, 2]])  # user 3 and items 3, 4 have no edge
    with pytest.raises(ValueError, match="isolated"):
        train_lightgcn(bb, isolated, 4, 5, epochs=1)
    with pytest.raises(TypeError, match="backbone"):
        train_lightgcn(torch.nn.Linear(2, 2), tiny_graph.train, 4, 5)
    with pytest.raises(ValueError, match="epochs"):
        train_lightgcn(bb, tiny_graph.train, 4, 5, epochs=0)
    with pytest.raises(ValueError, match="nodes"):
        train_lightgcn(lightgcn(5, 4, 2), tiny_graph.train, 4, 5)


def test_encoder_and_model_reject_bad_input(tiny_graph, tiny_backbone, model):
    with pytest.raises(ValueError, match="num_layers"):
        InfluenceEncoder(9, 8, num_layers=0)
    with pytest.raises(ValueError, match="mlp_layers"):
        InfluenceEncoder(9, 8, mlp_layers=-1)
    enc = InfluenceEncoder(9, 8)
    with pytest.raises(ValueError, match="empty"):
        enc(torch.zeros(2, 0, dtype=torch.long), torch.zeros(9, 8))
    with pytest.raises(ValueError, match="final_emb"):
        enc(tiny_graph.edge_index(), torch.zeros(9, 3))
    with pytest.raises(ValueError, match="remain_edge_index"):
        InfluenceEncoder(9, 8, extra_layers=1)(tiny_graph.edge_index(), torch.zeros(9, 8))
    with pytest.raises(TypeError, match="encoder"):
        UnlearnRecModel(tiny_backbone, torch.nn.Linear(2, 2), 4, 5, tiny_graph.edge_index())
    with pytest.raises(ValueError, match="node counts"):
        UnlearnRecModel(tiny_backbone, InfluenceEncoder(10, 8), 4, 5, tiny_graph.edge_index())
    with pytest.raises(ValueError, match="dim"):
        UnlearnRecModel(tiny_backbone, InfluenceEncoder(9, 4), 4, 5, tiny_graph.edge_index())


def test_losses_and_metrics_reject_bad_input():
    a, b = torch.zeros(3, 4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="same shape"):
        bpr_loss(a, a, b)
    with pytest.raises(ValueError, match="kind"):
        forget_loss(a, a, "hinge")
    with pytest.raises(ValueError, match="at least one"):
        forget_loss(torch.zeros(0, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="temp"):
        align_loss(a, a, a, a, temp=0.0)
    with pytest.raises(ValueError, match="one shape"):
        ssl_loss(a, b, torch.tensor([0]))
    u, i = torch.zeros(3, 4), torch.zeros(5, 4)
    pairs = torch.tensor([[0], [1]])
    for fn in (recall_at_k, ndcg_at_k):
        with pytest.raises(ValueError, match="larger than the item count"):
            fn(u, i, pairs, pairs, k=6)
        with pytest.raises(ValueError, match="positive int"):
            fn(u, i, pairs, pairs, k=0)
        with pytest.raises(ValueError, match="empty"):
            fn(u, i, pairs, torch.zeros(2, 0, dtype=torch.long), k=2)
        with pytest.raises(ValueError, match=r"\(U, d\)"):
            fn(u, torch.zeros(5, 3), pairs, pairs, k=2)
    with pytest.raises(ValueError, match="item ids"):
        edge_scores(u, i, torch.tensor([[0], [5]]))
    with pytest.raises(ValueError, match="at least one"):
        forget_score_gap(u, i, torch.zeros(2, 0, dtype=torch.long), pairs)
    with pytest.raises(FloatingPointError):
        forget_score_gap(u, torch.full((5, 4), float("nan")), pairs, pairs)


def test_configs_and_loops_reject_bad_input(tiny_graph, model):
    with pytest.raises(ValueError, match="epochs"):
        PretrainConfig(epochs=0)
    with pytest.raises(ValueError, match="drop_rate"):
        PretrainConfig(drop_rate=1.0)
    with pytest.raises(ValueError, match="ssl_keep"):
        PretrainConfig(ssl_keep=0.0)
    with pytest.raises(ValueError, match="lr"):
        FinetuneConfig(lr=0.0)
    with pytest.raises(ValueError, match="align_target"):
        FinetuneConfig(align_target="new")
    with pytest.raises(ValueError, match="forget_weight"):
        FinetuneConfig(forget_weight=-1.0)
    with pytest.raises(TypeError, match="UnlearnRecModel"):
        pretrain(object(), tiny_graph.train)
    with pytest.raises(ValueError, match="item ids"):
        pretrain(model, torch.tensor([[0], [9]]))
    req = Request.build(model, tiny_graph.train, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="temp"):
        unlearning_loss(model, req, req.remain_pairs[0], req.remain_pairs[1], req.remain_pairs[1],
                        1.0, 1.0, 0.0)  # fmt: skip
