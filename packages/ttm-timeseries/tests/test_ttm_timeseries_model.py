"""Architecture facts: parameter counts, shapes, adaptive patching, and the forward contract."""

from __future__ import annotations

import logging

import pytest
import torch

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction
from trainforge_ttm_timeseries.modeling import AdaptivePatchingLevel


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_preset_512_96_parameter_count_matches_reference():
    # granite-tsfm 0.3.11, random init, counted (spec section 6, table 10).
    model = TTMForPrediction(TTMConfig.r1_512_96())
    assert _count(model) == 805_280
    assert _count(model.backbone) == 515_584
    assert _count(TTMForPrediction(TTMConfig.r2_512_96())) == 805_280


def test_preset_512_96_with_prefix_tuning_parameter_count():
    model = TTMForPrediction(TTMConfig.r1_512_96(resolution_prefix_tuning=True))
    assert _count(model) == 855_100


def test_other_reference_counts():
    # 1024-96 and 1536-96 shapes (pl=128, D=384) from the same table.
    cfg = TTMConfig.r1_512_96(
        context_length=1024, patch_length=128, patch_stride=128, d_model=384, decoder_d_model=256
    )
    assert _count(TTMForPrediction(cfg)) == 2_964_960
    cfg = TTMConfig.r1_512_96(
        context_length=1536, patch_length=128, patch_stride=128, d_model=384, decoder_d_model=256
    )
    assert _count(TTMForPrediction(cfg)) == 3_081_120
    # 7 channels: 1 target + 6 exogenous, forecast channel mixing with its mini mixer.
    cfg = TTMConfig.r1_512_96(
        num_input_channels=7,
        prediction_channel_indices=[0],
        exogenous_channel_indices=[1, 2, 3, 4, 5, 6],
        enable_forecast_channel_mixing=True,
        fcm_use_mixer=True,
    )
    assert _count(TTMForPrediction(cfg)) == 808_155


@pytest.mark.parametrize("rpt, patches", [(False, 8), (True, 9)])
def test_backbone_hidden_shape(rpt, patches):
    model = TTMForPrediction(TTMConfig.r1_512_96(resolution_prefix_tuning=rpt)).eval()
    x = torch.randn(2, 512, 3)
    out = model(x, freq_token=torch.tensor([7, 7]) if rpt else None)
    assert out.backbone_hidden_state.shape == (2, 3, patches, 192)
    assert out.decoder_hidden_state.shape == (2, 3, patches, 128)
    assert out.prediction_outputs.shape == (2, 96, 3)


def test_adaptive_patching_levels_reshape_coarse_index_first():
    model = TTMForPrediction(TTMConfig.r1_512_96()).eval()
    seen = []
    levels = [m for m in model.backbone.modules() if isinstance(m, AdaptivePatchingLevel)]
    assert [lv.level for lv in levels] == [2, 1, 0]
    for lv in levels:
        lv.mixer_layers[0].register_forward_hook(
            lambda mod, args, out, lv=lv: seen.append((lv.level, tuple(args[0].shape[2:])))
        )
    model(torch.randn(1, 512, 1))
    assert seen == [(2, (32, 48)), (1, (16, 96)), (0, (8, 192))]


def test_adaptive_level_disabled_when_width_too_small(caplog):
    with caplog.at_level(logging.WARNING):
        model = TTMForPrediction(
            TTMConfig(
                context_length=64,
                patch_length=8,
                d_model=16,
                adaptive_patching_levels=3,
                decoder_d_model=8,
            )
        )
    factors = [
        m.adaptive_patch_factor for m in model.modules() if isinstance(m, AdaptivePatchingLevel)
    ]
    assert factors == [1, 2, 1]  # level 2: 16 // 4 = 4 <= 4 -> disabled
    assert "adaptive patching level 2 disabled" in caplog.text


def test_d_model_not_divisible_by_level_factor_raises():
    with pytest.raises(ValueError, match="divisible by 2"):
        TTMConfig(context_length=64, patch_length=8, d_model=22, adaptive_patching_levels=3)


def test_prediction_filter_length_and_channel_selection_slice_the_forecast():
    torch.manual_seed(0)
    full = TTMForPrediction(TTMConfig.r1_512_96(num_input_channels=4)).eval()
    cut = TTMForPrediction(
        TTMConfig.r1_512_96(
            num_input_channels=4, prediction_filter_length=24, prediction_channel_indices=[3, 1]
        )
    ).eval()
    cut.load_state_dict(full.state_dict())
    x = torch.randn(3, 512, 4) * 2 + 1
    a = full(x).prediction_outputs
    b = cut(x).prediction_outputs
    assert b.shape == (3, 24, 2)
    torch.testing.assert_close(b, a[:, :24][..., [1, 3]], rtol=0, atol=0)


def test_longer_context_is_cut_to_the_last_context_length_steps():
    model = TTMForPrediction(TTMConfig.r1_512_96()).eval()
    x = torch.randn(2, 600, 2)
    torch.testing.assert_close(model(x).prediction_outputs, model(x[:, -512:]).prediction_outputs)


@pytest.mark.parametrize("loss", ["mse", "mae", "pinball", "huber"])
def test_losses_match_their_definitions(loss):
    cfg = TTMConfig(
        context_length=32,
        patch_length=8,
        prediction_length=8,
        loss=loss,
        quantile=0.8,
        huber_delta=0.5,
    )
    model = TTMForPrediction(cfg).eval()
    x, y = torch.randn(4, 32, 2), torch.randn(4, 8, 2)
    out = model(x, future_values=y)
    err = y - out.prediction_outputs
    expected = {
        "mse": (err**2).mean(),
        "mae": err.abs().mean(),
        "pinball": torch.maximum(0.8 * err, -0.2 * err).mean(),
        "huber": torch.where(err.abs() < 0.5, 0.5 * err**2, 0.5 * (err.abs() - 0.25)).mean(),
    }[loss]
    torch.testing.assert_close(out.loss, expected)


def test_future_observed_mask_drops_points_from_the_loss():
    model = TTMForPrediction(
        TTMConfig(context_length=32, patch_length=8, prediction_length=8)
    ).eval()
    x, y = torch.randn(2, 32, 1), torch.randn(2, 8, 1)
    mask = torch.ones_like(y)
    mask[:, 4:] = 0
    y_bad = y.clone()
    y_bad[:, 4:] = 1e6
    a = model(x, future_values=y_bad, future_observed_mask=mask).loss
    pred = model(x).prediction_outputs
    torch.testing.assert_close(a, ((pred[:, :4] - y[:, :4]) ** 2).mean())


def test_past_observed_mask_excludes_missing_steps_from_the_scaler():
    model = TTMForPrediction(
        TTMConfig(context_length=32, patch_length=8, prediction_length=8)
    ).eval()
    x = torch.randn(1, 32, 1) * 3 + 5
    mask = torch.ones_like(x)
    mask[:, :10] = 0
    x[:, :10] = 0.0
    out = model(x, past_observed_mask=mask)
    obs = x[:, 10:]
    torch.testing.assert_close(out.loc, obs.mean(1, keepdim=True))
    torch.testing.assert_close(
        out.scale, torch.sqrt(obs.var(1, unbiased=False, keepdim=True) + 1e-5)
    )


def test_self_attention_and_positional_encoding_and_batchnorm_run():
    cfg = TTMConfig(
        context_length=64,
        patch_length=8,
        d_model=16,
        self_attn=True,
        self_attn_heads=2,
        use_positional_encoding=True,
        norm_mlp="BatchNorm",
        adaptive_patching_levels=1,
    )
    model = TTMForPrediction(cfg).eval()
    out = model(torch.randn(3, 64, 2))
    assert torch.isfinite(out.prediction_outputs).all()


def test_static_categorical_values_enter_the_mix_channel_decoder():
    cfg = TTMConfig(
        context_length=32,
        patch_length=8,
        prediction_length=8,
        num_input_channels=2,
        decoder_mode="mix_channel",
        categorical_vocab_size_list=[3, 4],
    )
    model = TTMForPrediction(cfg).eval()
    x = torch.randn(2, 32, 2)
    a = model(x, static_categorical_values=torch.tensor([[0, 1], [0, 1]])).prediction_outputs
    b = model(x, static_categorical_values=torch.tensor([[2, 3], [2, 3]])).prediction_outputs
    assert a.shape == (2, 8, 2) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="static_categorical_values"):
        model(x)


def test_save_pretrained_round_trip_is_exact(tmp_path):
    cfg = TTMConfig.r1_512_96(
        resolution_prefix_tuning=True, num_input_channels=3, decoder_mode="mix_channel"
    )
    model = TTMForPrediction(cfg).eval()
    model.save_pretrained(tmp_path)
    again = TTMForPrediction.from_pretrained(tmp_path).eval()
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2), k
    x = torch.randn(2, 512, 3)
    tok = torch.tensor([7, 3])
    torch.testing.assert_close(
        model(x, freq_token=tok).prediction_outputs,
        again(x, freq_token=tok).prediction_outputs,
        rtol=0,
        atol=0,
    )
    assert again.config.num_patches == 9 and again.config.decoder_mode == "mix_channel"
