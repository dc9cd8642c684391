"""PS3 pre-training objectives.

``localized_contrastive_loss``: the SigLIP sigmoid loss between box-pooled high-res image
embeddings (global captions: low-res pooled embeddings) and caption embeddings
(``NVlabs/PS3:train/src/open_clip/loss.py`` ``SigLipLoss._loss``, logit bias initialised
at -10 in ``train/src/open_clip/model.py``). ``box_supervision_loss``: binary cross-entropy
between a selection-probability map and the box map area-downsampled to its grid, averaged
over scales, local-caption samples only (``SigLipLossPS3.forward``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from trainforge_ps3_vision.selection import map_to_grid


def localized_contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float = -10.0,
) -> torch.Tensor:
    """SigLIP loss ``-sum(log sigmoid(y_ij * (t * <x_i, y_j> + b))) / B`` with ``y_ij = +1``
    on the diagonal, ``-1`` elsewhere; embeddings are L2-normalised here. ``logit_scale``
    is ``t`` itself (the reference passes ``exp`` of its learned log-scale)."""
    if image_emb.dim() != 2 or text_emb.dim() != 2:
        raise ValueError(
            f"image_emb and text_emb must be (B, D), got {tuple(image_emb.shape)} and "
            f"{tuple(text_emb.shape)}"
        )
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb {tuple(image_emb.shape)} and text_emb {tuple(text_emb.shape)} must match"
        )
    x, y = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    logits = logit_scale * x @ y.t() + logit_bias
    n = logits.shape[0]
    labels = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / n


def box_supervision_loss(
    probs: Sequence[torch.Tensor],
    gt_map: torch.Tensor,
    is_local: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over scales of ``BCE(probs[k], (area_downsample(gt_map) > 0))`` over local-caption
    samples (``is_local`` (B,) bool; all by default). Zero (with a graph) when none is local,
    as the reference's dummy loss."""
    if not probs:
        raise ValueError("probs must hold at least one (B, h, w) map")
    if gt_map.dim() != 3 or gt_map.shape[0] != probs[0].shape[0]:
        raise ValueError(
            f"gt_map must be (B, H, W) with B={probs[0].shape[0]}, got {tuple(gt_map.shape)}"
        )
    if is_local is None:
        is_local = torch.ones(gt_map.shape[0], dtype=torch.bool, device=gt_map.device)
    is_local = is_local.bool().reshape(-1)
    if is_local.shape[0] != gt_map.shape[0]:
        raise ValueError(
            f"is_local must be (B,) with B={gt_map.shape[0]}, got {tuple(is_local.shape)}"
        )
    if not bool(is_local.any()):
        return probs[0].sum() * 0.0
    losses = []
    for p in probs:
        if p.dim() != 3:
            raise ValueError(f"each probs map must be (B, h, w), got {tuple(p.shape)}")
        gt = map_to_grid(gt_map.float(), tuple(p.shape[1:])).to(p.dtype)
        losses.append(F.binary_cross_entropy(p[is_local], gt[is_local]))
    return sum(losses) / len(losses)
