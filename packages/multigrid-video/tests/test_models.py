"""Variable-shape models: timm image models, torchvision video models, a clear error otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge_multigrid_video import (
    MultigridSchedule,
    SubBatchNorm2d,
    SubBatchNorm3d,
    check_variable_shape,
    convert_to_sub_bn,
    set_num_splits,
    tiny_video_cnn,
)

timm = pytest.importorskip("timm")
tv_video = pytest.importorskip("torchvision.models.video")


@pytest.fixture(autouse=True)
def _one_thread():
    # The CPU convolutions of these models are dominated by thread start-up on a shared
    # 2-core machine; one thread is several times faster here.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny_vit(dynamic: bool, pad: bool = True):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
        num_classes=5,
        dynamic_img_size=dynamic,
        dynamic_img_pad=pad,
    )


def test_timm_vit_with_dynamic_img_size_takes_every_crop():
    model = _tiny_vit(True)
    sched = MultigridSchedule(8, 1, 32, [0, 4, 6], 8, temporal=False)
    crops = sorted({c for p in sched.phases for _, c in sched.short_cycle_crops(p.start)})
    check_variable_shape(model, [(c, c) for c in crops])
    assert crops[0] < 32
    # Crops that do not divide by the patch size need dynamic_img_pad; the error says so.
    with pytest.raises(ValueError, match="dynamic_img_pad=True"):
        check_variable_shape(_tiny_vit(True, pad=False), [(23, 23)])


def test_timm_vit_without_dynamic_img_size_is_a_clear_error():
    with pytest.raises(ValueError, match="dynamic_img_size=True"):
        check_variable_shape(_tiny_vit(False), [(16, 16), (32, 32)])


def test_timm_cnn_with_global_pool_and_sub_bn():
    from timm.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4)
    check_variable_shape(model, [(32, 32), (45, 45), (64, 64)])
    done = convert_to_sub_bn(model, num_splits=2)
    assert done and all(r.new == "SubBatchNorm2d" for r in done)
    model.train()
    y = model(torch.randn(4, 3, 32, 32))
    y.sum().backward()
    assert set_num_splits(model, 4) == len(done)
    model(torch.randn(8, 3, 23, 23))
    assert all(m.num_splits == 4 for m in model.modules() if isinstance(m, SubBatchNorm2d))


@pytest.mark.parametrize("builder", ["r3d_18", "mc3_18"])
def test_torchvision_video_models_built_without_weights(builder):
    model = getattr(tv_video, builder)(weights=None, num_classes=6)
    check_variable_shape(model, [(2, 16, 16), (4, 23, 23)])
    convert_to_sub_bn(model, num_splits=2)
    assert any(isinstance(m, SubBatchNorm3d) for m in model.modules())
    model.train()
    out = model(torch.randn(4, 3, 2, 12, 12))
    assert out.shape == (4, 6) and torch.isfinite(out).all()


def test_model_without_global_pool_is_a_clear_error():
    fixed = nn.Sequential(
        nn.Conv3d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 4 * 16 * 16, 3)
    )
    with pytest.raises(ValueError, match="cannot take input shape"):
        check_variable_shape(fixed, [(4, 16, 16), (2, 11, 11)])
    flat = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="different output shapes"):
        check_variable_shape(flat, [(8, 8), (16, 16)])


def test_tiny_video_cnn_takes_every_multigrid_shape():
    sched = MultigridSchedule(8, 16, 32, [0, 12, 18], 24)
    shapes = {
        (p.num_frames, c, c) for p in sched.phases for _, c in sched.short_cycle_crops(p.start)
    }
    check_variable_shape(tiny_video_cnn(6), sorted(shapes))
