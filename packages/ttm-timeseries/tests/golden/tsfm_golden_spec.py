"""The golden cases shared by ``make_tsfm_golden.py`` and ``test_ttm_timeseries_golden.py``:
tiny TinyTimeMixer configs, seeded inputs and seeded weights (no granite-tsfm needed)."""

from __future__ import annotations

import torch

# Tiny shapes: context 32 in 8 patches of 4, forecast 8; d_model 16, 2 + 2 layers.
BASE = dict(
    context_length=32,
    patch_length=4,
    patch_stride=4,
    prediction_length=8,
    num_input_channels=1,
    d_model=16,
    decoder_d_model=8,
    expansion_factor=2,
    num_layers=2,
    decoder_num_layers=2,
    adaptive_patching_levels=2,
    dropout=0.2,
    head_dropout=0.2,
    scaling="std",
    gated_attn=True,
    mode="common_channel",
    decoder_mode="common_channel",
    use_decoder=True,
)
CASES: dict[str, dict] = {
    "base_masked": {},
    "rpt": {"resolution_prefix_tuning": True, "frequency_token_vocab_size": 10},
    "mix_decoder_raw_residual_categorical_mae": {
        "num_input_channels": 3,
        "decoder_mode": "mix_channel",
        "decoder_raw_residual": True,
        "categorical_vocab_size_list": [3, 2],
        "loss": "mae",
    },
    "fcm_exog_filter": {
        "num_input_channels": 4,
        "prediction_channel_indices": [0, 2],
        "exogenous_channel_indices": [1, 3],
        "enable_forecast_channel_mixing": True,
        "fcm_use_mixer": True,
        "fcm_context_length": 2,
        "prediction_filter_length": 6,
    },
    "mix_selfattn_posenc_mean_huber": {
        "num_input_channels": 2,
        "mode": "mix_channel",
        "self_attn": True,
        "self_attn_heads": 2,
        "use_positional_encoding": True,
        "scaling": "mean",
        "adaptive_patching_levels": 0,
        "decoder_adaptive_patching_levels": 1,
        "loss": "huber",
        "huber_delta": 0.5,
    },
    "no_decoder_no_scaling_pinball": {
        "num_input_channels": 2,
        "use_decoder": False,
        "scaling": None,
        "gated_attn": False,
        "loss": "pinball",
        "quantile": 0.3,
    },
}


def case_inputs(name: str, cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """The forward inputs of a case (batch of 3), from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    c = cfg["num_input_channels"]
    x = torch.randn(3, cfg["context_length"], c, generator=g) * 3 + 1
    fut = torch.randn(3, cfg["prediction_length"], c, generator=g)
    out = {"past_values": x, "future_values": fut}
    if name == "base_masked":  # observed mask with missing steps (values there are junk)
        mask = torch.ones_like(x)
        mask[0, 5:9] = 0
        mask[2, -3:] = 0
        out["past_observed_mask"] = mask
    if cfg.get("resolution_prefix_tuning"):
        out["freq_token"] = torch.tensor([7, 3, 0])
    if cfg.get("categorical_vocab_size_list"):
        out["static_categorical_values"] = torch.tensor([[0, 1], [2, 0], [1, 1]])
    return out


def golden_weights(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights for the parameter names and shapes of the reference's
    state_dict (so the fixture needs no weights): matrices ~ N(0, 1/fan_in), vectors
    ~ N(0, 0.2^2), norm weights around one. CPU ``torch.randn`` with a seeded generator is
    stable across torch versions; the fixture records a checksum to prove it."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        w = torch.randn(shape, generator=g, dtype=torch.float64)
        if len(shape) >= 2:
            w /= shape[-1] ** 0.5
        else:
            w *= 0.2
            if "norm" in name and name.endswith("weight"):
                w += 1.0
        out[name] = w.float()
    return out
