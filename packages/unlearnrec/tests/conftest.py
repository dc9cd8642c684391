import pytest
import torch

from trainforge_unlearnrec import RecGraph, lightgcn


@pytest.fixture
def tiny_graph() -> RecGraph:
    # 4 users, 5 items; every node has a train edge
    train = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3, 3], [0, 1, 1, 2, 2, 3, 3, 4, 0]])
    test = torch.tensor([[0, 1, 2], [2, 3, 4]])
    return RecGraph(4, 5, train, test, name="tiny")


@pytest.fixture
def chain_graph() -> RecGraph:
    # a long chain u0-i0-u1-i1-...: hop distances are easy to read
    n = 8
    users = torch.arange(n)
    train = torch.stack([torch.cat([users, users[1:]]), torch.cat([users, users[:-1]])])
    return RecGraph(n, n, train, train[:, :1], name="chain")


@pytest.fixture
def tiny_backbone(tiny_graph):
    return lightgcn(tiny_graph.num_nodes, dim=8, num_layers=3, seed=0)
