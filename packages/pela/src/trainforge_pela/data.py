"""Offline images and tiny timm ViTs for tests, the demo and the benchmark."""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn


@lru_cache(maxsize=1)
def _digits_array() -> np.ndarray:
    """The 1,797 x 65 table (64 pixels 0..16, label) that scikit-learn's ``load_digits``
    reads, loaded from its wheel without importing scikit-learn (which takes seconds)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the digits images ship inside scikit-learn: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",", dtype=np.float64)


def digits(seed: int = 0, test_fraction: float = 0.25) -> tuple[torch.Tensor, ...]:
    """scikit-learn's 1,797 real 8x8 handwritten digits (UCI optdigits), shipped offline.

    Returns ``(x_train, y_train, x_test, y_test)``; images are ``(N, 1, 8, 8)`` float32
    scaled to mean 0 / std 1 with the training set's statistics; the split is stratified by
    a seeded permutation inside each class.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    raw = _digits_array()
    x = raw[:, :64].astype(np.float32).reshape(-1, 8, 8)
    y = raw[:, 64].astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.append(idx[: round(len(idx) * test_fraction)])
    test = np.zeros(len(y), dtype=bool)
    test[np.concatenate(test_idx)] = True
    mean, std = x[~test].mean(), x[~test].std()
    x = (x - mean) / std
    xt = torch.from_numpy(x)[:, None]
    yt = torch.from_numpy(y)
    tr, te = torch.from_numpy(~test), torch.from_numpy(test)
    return xt[tr], yt[tr], xt[te], yt[te]


def tiny_vit(
    img_size: int = 8,
    patch_size: int = 2,
    in_chans: int = 1,
    num_classes: int = 10,
    embed_dim: int = 64,
    depth: int = 4,
    num_heads: int = 4,
    seed: int = 0,
) -> nn.Module:
    """A timm ``VisionTransformer`` built from its config (no pretrained weights)."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
    )
