"""The inference fast path: patch-major storage, in-place ops without autograd, and the
fallbacks that keep replaced or hooked layers working."""

from __future__ import annotations

import torch
from torch import nn

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction
from trainforge_ttm_timeseries.modeling import AdaptivePatchingLevel, _patch_major, std_scale


def _small(**overrides) -> TTMForPrediction:
    torch.manual_seed(0)
    cfg = TTMConfig(
        context_length=64,
        patch_length=8,
        d_model=32,
        decoder_d_model=16,
        adaptive_patching_levels=2,
        prediction_length=8,
        **overrides,
    )
    return TTMForPrediction(cfg).eval()


def test_inference_mode_equals_the_autograd_path_exactly():
    # Without autograd the mixers overwrite their own intermediates (gelu_, mul_, add_);
    # these are the same operations, so the values are bit-identical.
    model = _small(num_input_channels=3)
    x = torch.randn(4, 64, 3) * 2 + 1
    recorded = model(x).prediction_outputs
    with torch.inference_mode():
        lean = model(x).prediction_outputs
    with torch.no_grad():
        nograd = model(x).prediction_outputs
    torch.testing.assert_close(lean, recorded.detach(), rtol=0, atol=0)
    torch.testing.assert_close(nograd, recorded.detach(), rtol=0, atol=0)


def test_training_step_reaches_every_mixer_weight():
    model = _small(num_input_channels=2).train()
    x, y = torch.randn(3, 64, 2), torch.randn(3, 8, 2)
    model(x, future_values=y).loss.backward()
    layer = model.backbone.encoder.mlp_mixer_encoder.mixers[0].mixer_layers[0]
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_layers_accept_inputs_in_any_memory_layout():
    model = _small(num_input_channels=2)
    level = next(m for m in model.modules() if isinstance(m, AdaptivePatchingLevel))
    layer = level.mixer_layers[0]
    x = torch.randn(2, 2, layer.dims.num_patches, layer.dims.d_model)
    with torch.no_grad():
        a = layer(x.contiguous())  # the usual [B, C, P, D] layout: copied internally
        b = layer(_patch_major(x))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_hooked_or_replaced_patch_mixer_linear_is_still_called():
    model = _small(num_input_channels=2)
    x = torch.randn(2, 64, 2)
    with torch.no_grad():
        base = model(x).prediction_outputs
    mlp = model.backbone.encoder.mlp_mixer_encoder.mixers[0].mixer_layers[0].patch_mixer.mlp
    calls = []
    handle = mlp.fc1.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    with torch.no_grad():
        hooked = model(x).prediction_outputs
    handle.remove()
    assert len(calls) == 1
    torch.testing.assert_close(hooked, base, rtol=1e-6, atol=1e-6)

    class Shifted(nn.Linear):
        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return super().forward(inp) + 1.0

    shifted = Shifted(mlp.fc1.in_features, mlp.fc1.out_features)
    shifted.load_state_dict(mlp.fc1.state_dict())
    plain_shift = nn.Linear(mlp.fc1.in_features, mlp.fc1.out_features)
    plain_shift.load_state_dict({"weight": mlp.fc1.weight, "bias": mlp.fc1.bias + 1.0})
    mlp.fc1 = shifted
    with torch.no_grad():
        a = model(x).prediction_outputs
    mlp.fc1 = plain_shift  # the same function as a plain Linear: the fast path
    with torch.no_grad():
        b = model(x).prediction_outputs
    assert not torch.allclose(a, base)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_std_scale_without_mask_equals_an_all_ones_mask_exactly():
    x = torch.randn(3, 50, 4) * 5 + 2
    for got, want in zip(std_scale(x, None), std_scale(x, torch.ones_like(x)), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
