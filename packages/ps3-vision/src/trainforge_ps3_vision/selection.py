"""Token budget, selection probabilities and top-k patch selection (PS3, framework-free torch).

Every rule here follows ``NVlabs/PS3:ps3/modeling_ps3.py`` (``PS3VisionEncoder``): the
budget split over scales (``__init__`` and ``get_selection_maps``), the probability formula
(``_calculate_select_probs``), and the top-k with carry-over of a scale's shortfall
(``get_selection_maps``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def selection_budget(scales: Sequence[int], budget: int) -> list[int]:
    """Split ``budget`` tokens over the high-resolution scales in proportion to pixel count.

    ``scales`` are square side lengths, lowest first (``scales[0]`` is the low-res view and
    gets nothing); the remainder of the integer split goes to the last scale.
    ``NVlabs/PS3:ps3/modeling_ps3.py`` (``max_select_num_each_scale``): 1.5K [378, 756, 1512]
    with 2560 tokens -> [512, 2048]; 4K [378, 756, 1512, 3780] -> [85, 341, 2134].
    """
    if len(scales) < 2:
        raise ValueError(f"scales must hold a low-res scale and >= 1 high-res scale, got {scales}")
    for s in scales:
        _check_positive_int("scales[i]", s)
    _check_positive_int("budget", budget)
    pixels = [s * s for s in scales[1:]]
    split = [int(budget * p / sum(pixels)) for p in pixels]
    split[-1] += budget - sum(split)
    return split


def rescale_budget(split: Sequence[int], budget: int) -> list[int]:
    """Rescale a per-scale split to a smaller total, as ``get_selection_maps`` does for
    ``num_select_token``: ``int(x * budget / sum)`` per scale, remainder to the last."""
    _check_positive_int("budget", budget)
    total = sum(split)
    if budget > total:
        raise ValueError(f"budget must be <= sum(split) = {total}, got {budget}")
    out = [int(x * budget / total) for x in split]
    out[-1] += budget - sum(out)
    return out


def selection_logits_to_probs(
    cos: torch.Tensor, logit_scale: float = 5.0, clamp: float = 10.0
) -> torch.Tensor:
    """``sigmoid(clamp(logit_scale * cos, -clamp, clamp))``.

    The reference writes this as ``softmax([z, 0])[0]``, which is the same number
    (``NVlabs/PS3:ps3/modeling_ps3.py`` ``_calculate_select_probs``: x5, clamp +-10).
    """
    return torch.sigmoid((cos * logit_scale).clamp(-clamp, clamp))


def topk_select(
    probs: Sequence[torch.Tensor],
    budget: Sequence[int],
    exclude: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Pick the ``budget[k]`` most probable patches of each scale ``k``; returns bool maps.

    ``probs[k]`` is (B, h_k, w_k); ``exclude[k]`` (bool, same shape) marks patches taken by an
    earlier look. As the reference, a scale that has fewer free patches than its budget takes
    them all and hands the shortfall to the next scale. Ties are broken by raster order
    (lower row, then lower column first): the reference's ``torch.topk`` leaves tie order
    unspecified, and nearest upsampling of the shared low-res map makes ties common, so a
    stable sort is used here to make the choice deterministic. Runs batched (every instance
    gets the same count per scale), without the reference's per-instance Python loop.
    """
    if len(probs) != len(budget):
        raise ValueError(f"budget must have one entry per scale ({len(probs)}), got {budget}")
    if exclude is not None and len(exclude) != len(probs):
        raise ValueError(f"exclude must have one map per scale ({len(probs)}), got {len(exclude)}")
    for k, n in enumerate(budget):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"budget[{k}] must be an int >= 0, got {n!r}")
    counts = list(budget)
    maps: list[torch.Tensor] = []
    for k, p in enumerate(probs):
        if p.dim() != 3:
            raise ValueError(f"probs[{k}] must be (B, h, w), got shape {tuple(p.shape)}")
        flat = p.detach().reshape(p.shape[0], -1)
        free_mask = torch.ones_like(flat, dtype=torch.bool)
        if exclude is not None:
            if exclude[k].shape != p.shape:
                raise ValueError(
                    f"exclude[{k}] must have shape {tuple(p.shape)}, got {tuple(exclude[k].shape)}"
                )
            free_mask = ~exclude[k].reshape(p.shape[0], -1).bool()
            # probabilities lie in (0, 1), so -1 sorts taken patches last (as the reference)
            flat = torch.where(free_mask, flat, torch.full_like(flat, -1.0))
        free = int(free_mask.sum(dim=1).min()) if flat.numel() else 0
        if free < counts[k]:
            if k + 1 < len(counts):
                counts[k + 1] += counts[k] - free
            counts[k] = free
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, : counts[k]]
        m = torch.zeros_like(flat, dtype=torch.bool)
        m.scatter_(1, order, True)
        maps.append(m.view_as(p))
    return maps


def boxes_to_map(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rasterise one box per image, (B, 4) as (x0, y0, x1, y1) pixels, into a (B, H, W)
    float map of ones inside ``[x0, x1) x [y0, y1)``: the reference's ``gt_selection_map``."""
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be (B, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    _check_positive_int("height", height)
    _check_positive_int("width", width)
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype).view(1, -1, 1)
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype).view(1, 1, -1)
    b = boxes.view(-1, 4, 1, 1)
    inside = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    return inside.float()


def map_to_grid(gt_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Area-downsample a (B, H, W) pixel map to a patch grid and binarise (> 0), as the
    box-supervision loss and ``pool_gt_token_only`` do in the reference."""
    if gt_map.dim() != 3:
        raise ValueError(f"gt_map must be (B, H, W), got shape {tuple(gt_map.shape)}")
    out = F.interpolate(gt_map.unsqueeze(1).float(), size=grid, mode="area").squeeze(1)
    return (out > 0).to(gt_map.dtype if gt_map.is_floating_point() else torch.float32)
