"""Invariants: affine equivariance, channel independence, exogenous infusion, fine-tune recipe."""

from __future__ import annotations

import pytest
import torch

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction
from trainforge_ttm_timeseries.pretraining import finetune_recipe


def _small(**kw) -> TTMConfig:
    base = dict(
        context_length=128,
        patch_length=16,
        patch_stride=16,
        prediction_length=24,
        d_model=48,
        decoder_d_model=32,
        adaptive_patching_levels=2,
        num_layers=2,
        decoder_num_layers=2,
    )
    base.update(kw)
    return TTMConfig(**base)


def test_affine_equivariance_under_std_scaling():
    torch.manual_seed(0)
    model = TTMForPrediction(TTMConfig.r1_512_96()).eval()
    x = torch.randn(3, 512, 4).cumsum(1)
    with torch.no_grad():
        base = model(x).prediction_outputs.double()
        moved = model(5 * x + 3).prediction_outputs.double()
    err = (moved - (5 * base + 3)).abs().max() / (5 * base + 3).abs().max()
    assert err < 1e-5


def test_common_channel_mode_is_channel_independent():
    torch.manual_seed(0)
    model = TTMForPrediction(TTMConfig.r1_512_96()).eval()
    x = torch.randn(2, 512, 5).cumsum(1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        out = model(x).prediction_outputs
        out_p = model(x[..., perm]).prediction_outputs
        single = model(x[..., 2:3]).prediction_outputs
    torch.testing.assert_close(out_p, out[..., perm], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(single, out[..., 2:3], rtol=1e-5, atol=1e-5)


def test_exogenous_future_values_change_only_through_fcm_and_output_has_targets_only():
    torch.manual_seed(0)
    cfg = _small(
        num_input_channels=4,
        exogenous_channel_indices=[1, 3],
        enable_forecast_channel_mixing=True,
        fcm_use_mixer=True,
    )
    assert cfg.prediction_channel_indices == [0, 2]
    model = TTMForPrediction(cfg).eval()
    x = torch.randn(2, 128, 4)
    fut = torch.randn(2, 24, 4, requires_grad=True)
    y = model(x, future_values=fut).prediction_outputs
    assert y.shape == (2, 24, 2)
    y.sum().backward()
    grad = fut.grad
    assert grad[..., [1, 3]].abs().sum() > 0  # d forecast / d future exogenous != 0
    assert grad[..., [0, 2]].abs().sum() == 0  # future targets are never read
    with pytest.raises(ValueError, match="future_values is required"):
        model(x)


def test_finetune_recipe_freezes_backbone_and_mixes_channels():
    torch.manual_seed(0)
    model = TTMForPrediction(_small()).eval()
    dec_w = model.decoder.decoder_block.mixers[0].feature_mixer.mlp.fc1.weight.clone()
    trainable = finetune_recipe(model, num_input_channels=3, decoder_mode="mix_channel")
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert model.config.decoder_mode == "mix_channel"
    assert torch.equal(model.decoder.decoder_block.mixers[0].feature_mixer.mlp.fc1.weight, dec_w)
    # Channel mixing: changing channel 0 now moves the forecast of channel 1.
    model.eval()
    x = torch.randn(2, 128, 3)
    x2 = x.clone()
    x2[..., 0] = torch.randn(2, 128)
    with torch.no_grad():
        a, b = model(x).prediction_outputs, model(x2).prediction_outputs
    assert (a[..., 1] - b[..., 1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(2, 128, 2))
    loss = model(x, future_values=torch.randn(2, 24, 3)).loss
    loss.backward()
    assert model.backbone.encoder.patcher.weight.grad is None


def test_finetune_recipe_keeps_the_decoder_mode_unless_asked():
    # The reference's few-shot recipe freezes the backbone only; mix_channel used to be forced.
    model = TTMForPrediction(_small()).eval()
    before = sum(p.numel() for p in model.parameters())
    trainable = finetune_recipe(model)
    assert model.config.decoder_mode == "common_channel"
    assert sum(p.numel() for p in model.parameters()) == before  # no fresh channel mixers
    assert trainable == before - sum(p.numel() for p in model.backbone.parameters())
    with pytest.raises(ValueError, match="decoder_mode='mix_channel'"):
        finetune_recipe(model, num_input_channels=3)  # the old call now says what changed


def test_freeze_and_mode_bad_input():
    model = TTMForPrediction(_small())
    with pytest.raises(TypeError):
        model.freeze_backbone("yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be"):
        model.set_decoder_mode("mixed")
    with pytest.raises(ValueError, match="num_input_channels"):
        model.set_decoder_mode("mix_channel", 0)
    with pytest.raises(TypeError):
        finetune_recipe(torch.nn.Linear(2, 2), 3)  # type: ignore[arg-type]
    no_dec = TTMForPrediction(_small(use_decoder=False))
    with pytest.raises(ValueError, match="no decoder"):
        no_dec.set_decoder_mode("mix_channel")
