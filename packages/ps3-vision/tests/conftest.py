import pytest
import timm
import torch

from trainforge_ps3_vision import PS3Config, apply_ps3

SCALES = (16, 32, 64)  # patch 4: grids 4x4 (low-res), 8x8, 16x16


def tiny_vit(seed: int = 0, **kw):
    torch.manual_seed(seed)
    args = dict(
        pretrained=False,
        num_classes=0,
        class_token=False,
        global_pool="map",
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=3,
        num_heads=2,
    )
    args.update(kw)
    return timm.create_model("vit_base_patch16_224", **args)


def tiny_encoder(seed: int = 0, cue: bool = False, max_select: int = 40, prompt_dim=None, **vit_kw):
    vit = tiny_vit(seed, **vit_kw)
    torch.manual_seed(seed + 100)
    cfg = PS3Config(
        scales=SCALES,
        max_select=max_select,
        highres_cue=cue,
        cue_hidden=8,
        cue_out=8,
        cue_depth=1,
        prompt_dim=prompt_dim,
    )
    enc = apply_ps3(vit, cfg)
    # the per-scale residuals start at zero (as the reference); perturb them so tests see them
    with torch.no_grad():
        for p in enc.pos_emb_residual:
            p.normal_(0, 0.1)
    return enc.eval()


@pytest.fixture
def enc():
    return tiny_encoder()


@pytest.fixture
def image():
    torch.manual_seed(1)
    return torch.randn(2, 3, 64, 64)
