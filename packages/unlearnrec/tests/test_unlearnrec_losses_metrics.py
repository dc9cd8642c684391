import math

import torch

from trainforge_unlearnrec import (
    align_loss,
    bpr_loss,
    forget_loss,
    forget_score_gap,
    ndcg_at_k,
    recall_at_k,
    ssl_loss,
)


def _batch(seed=0, b=3, d=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(4)]


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _dot(a, b):
    return sum(x * y for x, y in zip(a.tolist(), b.tolist(), strict=True))


def test_bpr_and_forget_by_hand():
    u, p, n, _ = _batch()
    want = -sum(math.log(_sig(_dot(u[k], p[k]) - _dot(u[k], n[k])) + 1e-10) for k in range(3)) / 3
    assert abs(bpr_loss(u, p, n).item() - want) < 1e-12
    want = -sum(math.log(_sig(-_dot(u[k], p[k])) + 1e-10) for k in range(3)) / 3
    assert abs(forget_loss(u, p).item() - want) < 1e-12
    assert (
        abs(forget_loss(u, p, "mean").item() - sum(_dot(u[k], p[k]) for k in range(3)) / 3) < 1e-12
    )


def test_align_loss_by_hand():
    u, i, tu, ti = _batch(1)
    temp = 2.0

    def dist(uu, ii):
        out = []
        for b in range(3):
            deno = sum(math.exp(_dot(uu[b], ii[c]) / temp + 1e-8) for c in range(3))
            out.append(math.log(math.exp(_dot(uu[b], ii[b]) / temp) / (deno + 1e-6) + 1e-6))
        return out

    want = sum((a - b) ** 2 for a, b in zip(dist(u, i), dist(tu, ti), strict=True))
    assert abs(align_loss(u, tu, i, ti, temp).item() - want) < 1e-10
    assert align_loss(u, u, i, i, temp).item() == 0.0


def test_ssl_loss_by_hand():
    c, n, _, _ = _batch(2, b=4, d=3)
    nodes = torch.tensor([0, 2])
    cn = [x / x.norm() for x in c + 1e-8]
    nn_ = [x / x.norm() for x in n + 1e-8]
    want = 0.0
    for a in nodes.tolist():
        pos = math.exp(_dot(cn[a], nn_[a]) / 0.5)
        deno = sum(math.exp(_dot(cn[a], nn_[b]) / 0.5) for b in nodes.tolist()) + 1e-8
        want += -math.log(pos / deno)
    assert abs(ssl_loss(c, n, nodes, 0.5).item() - want / 2) < 1e-10


def test_recall_and_ndcg_by_hand():
    # 3 users, 5 items, scores = user row (items ranked by the row's values)
    user = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0], [0, 0, 9, 8, 0.0]])
    item = torch.eye(5)
    train = torch.tensor([[0, 1], [0, 4]])  # user 0 saw item 0, user 1 saw item 4: masked
    test = torch.tensor([[0, 0, 1, 2], [2, 4, 0, 3]])
    # user 0 ranks (item 0 masked) 1,2,3,4 -> top2 = [1, 2]: hits {2} at rank 1 of {2, 4}
    # user 1 ranks (item 4 masked) 3,2,1,0 -> top2 = [3, 2]: test {0}: no hit
    # user 2 ranks 2,3,...   -> top2 = [2, 3]: test {3} hit at rank 1
    r = recall_at_k(user, item, train, test, k=2)
    assert abs(r - (0.5 + 0.0 + 1.0) / 3) < 1e-12
    l2 = 1 / math.log2(3)
    ndcg = ((l2 / (1 + l2)) + 0.0 + l2 / 1.0) / 3
    assert abs(ndcg_at_k(user, item, train, test, k=2) - ndcg) < 1e-12


def test_forget_score_gap():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    i = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    gap = forget_score_gap(u, i, torch.tensor([[0], [0]]), torch.tensor([[1], [1]]))
    assert gap == -1.0 - 2.0
