"""Full-ranking Recall@K / NDCG@K and the forgetting score monitors.

As the reference's evaluation (Shuvayu12/UnlearnRec2:main_drop.py ``tst_epoch`` /
``cal_metrics``): every item is ranked for every test user, the user's training items are
pushed down by ``-1e8``, and the metrics are averaged over users with test items.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from trainforge_unlearnrec.graph import check_pairs


def _check(user_emb: Tensor, item_emb: Tensor, k: int) -> None:
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.size(1) != item_emb.size(1):
        raise ValueError(
            "user_emb and item_emb must be (U, d) and (I, d), got "
            f"{tuple(user_emb.shape)} and {tuple(item_emb.shape)}"
        )
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > item_emb.size(0):
        raise ValueError(f"k={k} is larger than the item count {item_emb.size(0)}")


@torch.no_grad()
def topk_hits(
    user_emb: Tensor, item_emb: Tensor, train_pairs: Tensor, test_pairs: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """``(hits, n_test)``: a (T, k) 0/1 matrix of hits at each rank for the T users with
    test items, and how many test items each has."""
    _check(user_emb, item_emb, k)
    num_users, num_items = user_emb.size(0), item_emb.size(0)
    train_pairs = check_pairs(train_pairs, num_users, num_items, "train_pairs")
    test_pairs = check_pairs(test_pairs, num_users, num_items, "test_pairs")
    if test_pairs.size(1) == 0:
        raise ValueError("test_pairs is empty")
    users = torch.unique(test_pairs[0])
    row = torch.full((num_users,), -1, dtype=torch.long)
    row[users] = torch.arange(users.numel())
    scores = user_emb[users].double() @ item_emb.double().T
    mask = torch.zeros_like(scores)
    tr = row[train_pairs[0]] >= 0
    mask[row[train_pairs[0, tr]], train_pairs[1, tr]] = 1.0
    scores = scores * (1 - mask) - mask * 1e8
    top = scores.topk(k, dim=1).indices
    truth = torch.zeros(users.numel(), num_items, dtype=torch.bool)
    truth[row[test_pairs[0]], test_pairs[1]] = True
    hits = truth.gather(1, top).double()
    return hits, truth.sum(1).double()


def recall_at_k(
    user_emb: Tensor, item_emb: Tensor, train_pairs: Tensor, test_pairs: Tensor, k: int = 20
) -> float:
    """Mean over test users of (test items in the top k) / (number of test items)."""
    hits, n = topk_hits(user_emb, item_emb, train_pairs, test_pairs, k)
    return float((hits.sum(1) / n).mean())


def ndcg_at_k(
    user_emb: Tensor, item_emb: Tensor, train_pairs: Tensor, test_pairs: Tensor, k: int = 20
) -> float:
    """Mean NDCG@k: DCG with gains 1/log2(rank+2) over the ideal DCG of min(n_test, k) hits."""
    hits, n = topk_hits(user_emb, item_emb, train_pairs, test_pairs, k)
    disc = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)
    dcg = (hits * disc).sum(1)
    ideal = torch.cumsum(disc, 0)[(n.clamp(max=k) - 1).long()]
    return float((dcg / ideal).mean())


def edge_scores(user_emb: Tensor, item_emb: Tensor, pairs: Tensor) -> Tensor:
    """Inner-product scores of (user, item) pairs."""
    pairs = check_pairs(pairs, user_emb.size(0), item_emb.size(0), "pairs")
    return (user_emb[pairs[0]] * item_emb[pairs[1]]).sum(-1)


def forget_score_gap(
    user_emb: Tensor, item_emb: Tensor, request: Tensor, negatives: Tensor
) -> float:
    """``mean(score of random non-edges) - mean(score of the request)``: the reference's
    checkpoint criterion (main_drop.py ``test_unlearn``). Larger is better forgotten."""
    if request.numel() == 0 or negatives.numel() == 0:
        raise ValueError("request and negatives must both hold at least one edge")
    gap = float(edge_scores(user_emb, item_emb, negatives).mean()) - float(
        edge_scores(user_emb, item_emb, request).mean()
    )
    if not math.isfinite(gap):
        raise FloatingPointError(f"forget_score_gap is {gap}: the embeddings hold inf/NaN")
    return gap
