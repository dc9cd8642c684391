"""Models that take variable input shapes, and a check for those that cannot.

Multigrid feeds one model clips of several frame counts and crops, so the model must end in
global (adaptive) pooling, as SlowFast's heads do with ``pool_size=None`` under multigrid
(``facebookresearch/SlowFast:slowfast/models/video_model_builder.py``). timm ViTs need
``dynamic_img_size=True`` (the position embedding is resampled per input size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def tiny_video_cnn(
    num_classes: int, width: int = 16, in_chans: int = 3, seed: int = 0
) -> nn.Module:
    """A small 3D CNN (3 conv-BN-ReLU blocks, global average pool, linear head) that takes
    any ``(N, C, T, H, W)`` with ``T >= 1`` and ``H, W >= 4``."""
    for name, v in (("num_classes", num_classes), ("width", width), ("in_chans", in_chans)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(seed)

        def block(cin: int, cout: int, stride: tuple[int, int, int]) -> list[nn.Module]:
            return [
                nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(cout),
                nn.ReLU(inplace=True),
            ]

        model = nn.Sequential(
            *block(in_chans, width, (1, 2, 2)),
            *block(width, 2 * width, (2, 2, 2)),
            *block(2 * width, 4 * width, (2, 2, 2)),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(4 * width, num_classes),
        )
    return model


def check_variable_shape(
    model: nn.Module,
    shapes: Sequence[tuple[int, ...]],
    in_chans: int = 3,
) -> None:
    """Raise ``ValueError`` unless ``model`` accepts every input shape in ``shapes`` (each
    ``(T, H, W)`` for video or ``(H, W)`` for images, batch 2) and gives the same output
    shape for all of them. Runs in eval mode without gradients; restores the mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shapes = list(shapes)
    if not shapes or any(
        not isinstance(s, tuple | list)
        or len(s) not in (2, 3)
        or any(not isinstance(v, int) or v < 1 for v in s)
        for s in shapes
    ):
        raise ValueError(f"shapes must be a non-empty list of (T, H, W) or (H, W), got {shapes!r}")
    _check_timm_vit(model)
    was_training = model.training
    model.eval()
    outs = []
    try:
        ref = next(iter(model.parameters()), None)
        kw = {"device": ref.device, "dtype": ref.dtype} if ref is not None else {}
        with torch.no_grad():
            for s in shapes:
                x = torch.randn(2, in_chans, *s, **kw)
                try:
                    y = model(x)
                except Exception as exc:  # any failure means: cannot take this shape
                    raise ValueError(
                        f"{type(model).__name__} cannot take input shape {tuple(x.shape)} "
                        f"({type(exc).__name__}: {exc}); multigrid needs a model with global "
                        "(adaptive) pooling, or a timm ViT created with dynamic_img_size=True (and "
                        "dynamic_img_pad=True when a crop does not divide by the patch size)"
                    ) from exc
                outs.append(tuple(y.shape))
    finally:
        model.train(was_training)
    if len(set(outs)) != 1:
        raise ValueError(
            f"{type(model).__name__} gives different output shapes {outs} for input shapes "
            f"{shapes}; multigrid needs global pooling before the head"
        )


def _check_timm_vit(model: nn.Module) -> None:
    """timm ViTs without ``dynamic_img_size`` fail on other sizes with an assertion deep in
    the patch embedding; say what to do instead."""
    if (
        hasattr(model, "patch_embed")
        and hasattr(model, "dynamic_img_size")
        and not model.dynamic_img_size
    ):
        raise ValueError(
            f"{type(model).__name__} was created with dynamic_img_size=False; create it "
            "with timm.create_model(..., dynamic_img_size=True) so multigrid's crops work"
        )
