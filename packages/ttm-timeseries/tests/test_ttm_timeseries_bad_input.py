"""Clear errors for the inputs the issue lists: divisibility, channel counts, frequency
tokens, NaN, config keys."""

from __future__ import annotations

import pytest
import torch

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction, forecast_loss
from trainforge_ttm_timeseries.pretraining import predict, train_forecaster


def _cfg(**kw) -> TTMConfig:
    base = dict(context_length=64, patch_length=8, prediction_length=8, d_model=16)
    base.update(kw)
    return TTMConfig(**base)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(context_length=60, patch_length=8), "divisible by patch_stride"),
        (dict(context_length=8, patch_length=8), "greater than patch_length"),
        (dict(patch_length=0), "patch_length must be >= 1"),
        (dict(mode="mixed"), "mode must be one of"),
        (dict(decoder_mode="x"), "decoder_mode must be one of"),
        (dict(loss="nll"), "nll"),
        (dict(loss="rmse"), "loss must be one of"),
        (dict(scaling="minmax"), "scaling"),
        (dict(prediction_filter_length=9), "at most prediction_length"),
        (dict(num_input_channels=2, prediction_channel_indices=[2]), "outside 0..1"),
        (
            dict(
                num_input_channels=3, prediction_channel_indices=[0], exogenous_channel_indices=[0]
            ),
            "both prediction and exogenous",
        ),
        (
            dict(enable_forecast_channel_mixing=True, fcm_use_mixer=True, fcm_context_length=0),
            "fcm_context_length",
        ),
        (dict(categorical_vocab_size_list=[3]), "mix_channel"),
        (dict(positional_encoding_type="learned"), "positional_encoding_type"),
        # granite-tsfm options this package lacks used to be stored and ignored.
        (dict(gate_mode="sigmoid"), r"does not support the key\(s\) \['gate_mode'\]"),
        (dict(patch_length=8, patch_stride=16), "must not exceed patch_length"),
    ],
)
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_patch_stride_defaults_to_patch_length():
    # It used to default to 8 whatever the patch length: 57 overlapping patches at 64.
    cfg = TTMConfig(context_length=512, patch_length=64, prediction_length=96)
    assert cfg.patch_stride == 64 and cfg.num_patches == 8


def test_config_type_errors():
    with pytest.raises(TypeError, match="context_length must be an int"):
        _cfg(context_length=64.0)
    with pytest.raises(TypeError, match="channel indices"):
        _cfg(num_input_channels=2, prediction_channel_indices="01")
    with pytest.raises(TypeError):
        TTMConfig.from_tsfm_dict([("context_length", 64)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TTMConfig"):
        TTMForPrediction({"context_length": 64})  # type: ignore[arg-type]


def test_tsfm_config_dict_loads_verbatim_with_derived_keys():
    d = _cfg().to_dict()
    d.update(
        model_type="tinytimemixer", num_patches=8, init_processing=True, masked_context_length=None
    )
    cfg = TTMConfig.from_tsfm_dict(d)
    assert cfg.num_patches == 8 and cfg.context_length == 64


def test_tsfm_0_3_11_dict_options_off_load_on_refused():
    # A granite-tsfm 0.3.11 config.json carries ~40 options this package lacks, at their off
    # values; they used to make every such dict fail as "unknown keys".
    from trainforge_ttm_timeseries.config import _TSFM_OFF_VALUES

    d = {**_cfg().to_dict(), **_TSFM_OFF_VALUES, "model_type": "tinytimemixer"}
    # ... and a transformers 4.x to_dict() carries generation keys 5.x no longer has.
    d.update(num_beams=1, torchscript=False, use_bfloat16=False, pad_token_id=None)
    d.update(num_patches=8, patch_last=True, init_processing=True, masked_context_length=None)
    assert TTMConfig.from_tsfm_dict(d).num_patches == 8
    for key, value in [("gate_mode", "sigmoid"), ("decompose", True), ("register_tokens", 2)]:
        with pytest.raises(ValueError, match=f"does not implement: {{'{key}'"):
            TTMConfig.from_tsfm_dict({**d, key: value})
    with pytest.raises(ValueError, match="num_patches=9"):
        TTMConfig.from_tsfm_dict({**d, "num_patches": 9})
    with pytest.raises(ValueError, match="masked_context_length"):
        TTMConfig.from_tsfm_dict({**d, "masked_context_length": 48})
    with pytest.raises(ValueError, match="patch_last"):
        TTMConfig.from_tsfm_dict({**d, "patch_last": False})
    with pytest.raises(ValueError, match="does not support"):
        _cfg(decompose=False)  # the constructor itself takes only what it implements
    # A dict without patch_stride means the reference's default 8, not our patch_length.
    d16 = {k: v for k, v in d.items() if k not in ("patch_stride", "num_patches")}
    d16["patch_length"] = 16
    cfg = TTMConfig.from_tsfm_dict(d16)
    assert cfg.patch_stride == 8 and cfg.num_patches == 7


def test_forward_rejects_bad_shapes_and_nan():
    model = TTMForPrediction(_cfg()).eval()
    with pytest.raises(ValueError, match="shape \\[batch, context_length, channels\\]"):
        model(torch.randn(64, 2))
    with pytest.raises(ValueError, match="needs context_length=64"):
        model(torch.randn(2, 32, 1))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(2, 64, 1, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        model([[0.0] * 64])
    x = torch.randn(2, 64, 1)
    x[0, 5, 0] = float("nan")
    with pytest.raises(ValueError, match="past_observed_mask"):
        model(x)
    with pytest.raises(ValueError, match="future_values contains NaN"):
        model(torch.randn(2, 64, 1), future_values=torch.full((2, 8, 1), float("nan")))
    with pytest.raises(ValueError, match="future_values"):
        model(torch.randn(2, 64, 1), future_values=torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match="past_observed_mask has shape"):
        model(torch.randn(2, 64, 1), past_observed_mask=torch.ones(2, 64, 3))


def test_everyday_inputs_float64_numpy_pandas_and_inf():
    pd = pytest.importorskip("pandas")
    torch.manual_seed(0)
    model = TTMForPrediction(_cfg(num_input_channels=2)).eval()
    x = torch.randn(1, 64, 2, dtype=torch.float64)
    with torch.no_grad():
        want = model(x.float()).prediction_outputs
        # float64 used to raise a dtype mismatch deep inside a Linear.
        torch.testing.assert_close(model(x).prediction_outputs, want)
        torch.testing.assert_close(model(x.numpy()).prediction_outputs, want)
        frame = pd.DataFrame(x[0].numpy(), columns=["ghi", "temp_air"])
        torch.testing.assert_close(model(frame).prediction_outputs, want)
    with pytest.raises(TypeError, match="must all be numeric"):
        model(pd.DataFrame({"a": ["x"] * 64, "b": [0.0] * 64}))
    # predict() used to refuse all but a float tensor ("must be a [N, L, C] tensor").
    torch.testing.assert_close(predict(model, x.numpy()), want)
    torch.testing.assert_close(predict(model, frame), want)
    uni = TTMForPrediction(_cfg()).eval()
    with torch.no_grad():  # a pandas Series is one channel (it used to be refused)
        torch.testing.assert_close(
            uni(pd.Series(x[0, :, 0].numpy())).prediction_outputs,
            uni(x[:, :, :1].float()).prediction_outputs,
        )
    with pytest.raises(TypeError, match="Series' values must all be numeric"):
        uni(pd.Series(["a"] * 64))
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, x, batch_size=0)
    x = torch.randn(2, 64, 2)
    x[1, 3, 1] = float("inf")  # used to give NaN forecasts silently
    with pytest.raises(ValueError, match="NaN or inf"):
        model(x)


def test_wrong_channel_count_in_mix_channel_mode():
    model = TTMForPrediction(_cfg(num_input_channels=3, mode="mix_channel")).eval()
    with pytest.raises(ValueError, match="num_input_channels=3"):
        model(torch.randn(2, 64, 4))


def test_missing_or_bad_frequency_token_with_prefix_tuning():
    model = TTMForPrediction(_cfg(resolution_prefix_tuning=True)).eval()
    x = torch.randn(2, 64, 1)
    with pytest.raises(ValueError, match="Expecting freq_token"):
        model(x)
    hourly = TTMForPrediction(
        _cfg(resolution_prefix_tuning=True, frequency_token_vocab_size=10)
    ).eval()
    with torch.no_grad():  # a frequency string is accepted (it used to raise a TypeError)
        torch.testing.assert_close(
            hourly(x, freq_token="h").prediction_outputs,
            hourly(x, freq_token=torch.tensor([7, 7])).prediction_outputs,
        )
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(x, freq_token=torch.tensor([7, 1]))  # default vocab is 5, as in the reference
    with pytest.raises(ValueError, match="entries for a batch of 2"):
        model(x, freq_token=torch.tensor([1, 1, 1]))
    assert model(x, freq_token=3).prediction_outputs.shape == (2, 8, 1)


def test_forecast_loss_and_helpers_bad_input():
    with pytest.raises(ValueError, match="loss must be one of"):
        forecast_loss("rmse", torch.zeros(1), torch.zeros(1))
    assert forecast_loss(None, torch.zeros(1), torch.zeros(1)) is None
    model = TTMForPrediction(_cfg())
    with pytest.raises(TypeError):
        train_forecaster(torch.nn.Linear(1, 1), [], steps=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        train_forecaster(model, [], steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        train_forecaster(model, [], steps=1, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        train_forecaster(model, [], steps=1, lr=0.0)
    items = [{"past_values": torch.randn(64, 1), "future_values": torch.randn(8, 1)}] * 2
    prefixed = TTMForPrediction(_cfg(resolution_prefix_tuning=True))
    with pytest.raises(ValueError, match=r"lack \['freq_token'\]"):  # was a bare KeyError
        train_forecaster(prefixed, items, steps=1)
    with pytest.raises(ValueError, match="past_values"):
        predict(model, torch.randn(64, 1))
    with pytest.raises(TypeError):
        predict(torch.nn.Linear(1, 1), torch.randn(2, 64, 1))  # type: ignore[arg-type]
