"""UnlearnRec's losses, each as the reference computes it (Shuvayu12/UnlearnRec2:Utils/utils.py)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def _same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"embedding batches must have the same shape, got {shapes}")
    for name, value in tensors.items():
        if value.dim() != 2:
            raise ValueError(f"{name} must be a (B, d) batch, got shape {tuple(value.shape)}")


def bpr_loss(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """``-mean log(sigmoid(u.i+ - u.i-) + 1e-10)`` (``cal_bpr``)."""
    _same_shape(user=user, pos=pos, neg=neg)
    diff = (user * pos).sum(-1) - (user * neg).sum(-1)
    return -(diff.sigmoid() + 1e-10).log().mean()


def forget_loss(user: Tensor, item: Tensor, kind: Literal["logsig", "mean"] = "logsig") -> Tensor:
    """The unlearning loss L_u over the request's edges.

    ``"logsig"``: ``-mean log(sigmoid(-u.i) + 1e-10)`` (``cal_neg_aug_v1``, the scripts'
    ``unlearn_type v1``); ``"mean"``: the mean score (``cal_neg_aug_v2``).
    """
    _same_shape(user=user, item=item)
    if user.size(0) == 0:
        raise ValueError("forget_loss needs at least one request edge")
    score = (user * item).sum(-1)
    if kind == "logsig":
        return -((-score).sigmoid() + 1e-10).log().mean()
    if kind == "mean":
        return score.mean()
    raise ValueError(f"kind must be 'logsig' or 'mean', got {kind!r}")


def align_loss(
    user: Tensor, user_target: Tensor, item: Tensor, item_target: Tensor, temp: float = 1.0
) -> Tensor:
    """Preservation loss L_p (``cal_positive_pred_align_v2`` with ``cal_l2_distance``).

    For the batch's positive pairs, ``d_b = log(exp(s_bb) / (sum_b' exp(s_bb' + 1e-8) +
    1e-6) + 1e-6)`` with ``s = u i^T / temp``, for the new and the target embeddings;
    the loss is ``||d - d_target||^2``.
    """
    _same_shape(user=user, user_target=user_target, item=item, item_target=item_target)
    if not temp > 0:
        raise ValueError(f"temp must be > 0, got {temp!r}")

    def dist(u: Tensor, i: Tensor) -> Tensor:
        pos = (u * i).sum(-1) / temp
        deno = u @ i.T / temp + 1e-8
        return torch.log(torch.exp(pos) / (torch.exp(deno).sum(-1) + 1e-6) + 1e-6)

    return (dist(user, item) - dist(user_target, item_target)).norm(2).square()


def ssl_loss(clean: Tensor, noisy: Tensor, nodes: Tensor, temp: float = 1.0) -> Tensor:
    """InfoNCE between a clean and a noisy view on ``nodes`` (``contrastLoss``)."""
    if clean.shape != noisy.shape or clean.dim() != 2:
        raise ValueError(
            f"clean and noisy must be (N, d) of one shape, got {tuple(clean.shape)} and "
            f"{tuple(noisy.shape)}"
        )
    if not temp > 0:
        raise ValueError(f"temp must be > 0, got {temp!r}")
    a = F.normalize(clean + 1e-8, p=2)[nodes]
    b = F.normalize(noisy + 1e-8, p=2)[nodes]
    nume = torch.exp((a * b).sum(-1) / temp)
    deno = torch.exp(a @ b.T / temp).sum(-1) + 1e-8
    return -torch.log(nume / deno).mean()
