from __future__ import annotations

import pytest
import torch

from trainforge_pela.data import tiny_vit


@pytest.fixture
def vit() -> torch.nn.Module:
    """The spec's tiny timm ViT shape (patch 4 on 16px keeps it fast), random weights."""
    return tiny_vit(img_size=16, patch_size=4, embed_dim=64, depth=4, num_heads=4, seed=0).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
