"""`TTMConfig`: the Tiny Time Mixer configuration, with the reference's keys and presets.

Every key of granite-tsfm's ``TinyTimeMixerConfig`` is accepted under the same name and
default, so a tsfm ``config.json`` loads verbatim (:meth:`TTMConfig.from_tsfm_dict`).
Defaults: ibm-granite/granite-tsfm:tsfm_public/models/tinytimemixer/configuration_tinytimemixer.py.
Presets: ibm-granite/granite-tsfm:tsfm_public/models/tinytimemixer/utils/ttm_args.py and
notebooks/hfdemo/tinytimemixer/ttm_pretrain_sample.py.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

# DEFAULT_FREQUENCY_MAPPING of
# ibm-granite/granite-tsfm:tsfm_public/toolkit/time_series_preprocessor.py
FREQUENCY_MAPPING: dict[str, int] = {
    "oov": 0,
    "min": 1,
    "2min": 2,
    "5min": 3,
    "10min": 4,
    "15min": 5,
    "30min": 6,
    "h": 7,
    "H": 7,
    "d": 8,
    "D": 8,
    "W": 9,
}
"""Pandas frequency strings to TTM frequency-token ids (granite-tsfm's mapping)."""
# Spellings that mean the same resolution (pandas offset aliases, old and new).
_FREQ_ALIASES: dict[str, str] = {
    "1min": "min",
    "T": "min",
    "1T": "min",
    "2T": "2min",
    "5T": "5min",
    "10T": "10min",
    "15T": "15min",
    "30T": "30min",
    "60min": "h",
    "1h": "h",
    "1H": "h",
    "hourly": "h",
    "1d": "d",
    "1D": "d",
    "daily": "d",
    "24h": "d",
    "1W": "W",
    "W-SUN": "W",
    "7d": "W",
    "7D": "W",
    "weekly": "W",
}

_MODES = ("common_channel", "mix_channel")
_LOSSES = ("mse", "mae", "pinball", "huber", None)
_SCALINGS = ("std", "mean", None, True, False)
# Keys the reference writes into config.json as derived state; recomputed here (and checked
# against what they say, so a config describing another model is refused).
_DERIVED_KEYS = ("num_patches", "init_processing", "masked_context_length", "patch_last")
# granite-tsfm 0.3.11 options this package does not implement, with the value that leaves
# them off: ibm-granite/granite-tsfm:tsfm_public/models/tinytimemixer/
# configuration_tinytimemixer.py (0.3.11) and modeling_tinytimemixer.py (gate_mode, read with
# getattr and "softmax" by default). Every 0.3.11 config.json carries them, so
# `TTMConfig.from_tsfm_dict` drops them at these values and refuses any other value (same
# weights, different outputs otherwise). `TTMConfig(...)` itself refuses them outright.
_TSFM_OFF_VALUES: dict[str, Any] = {
    "gate_mode": "softmax",
    "multi_scale": False,
    "register_tokens": 0,
    "fft_length": 0,
    "use_fft_embedding": True,
    "multi_quantile_head": False,
    "point_extra_weight": 0,
    "residual_context_length": None,
    "trend_patch_length": None,
    "trend_patch_stride": None,
    "trend_d_model": None,
    "trend_decoder_d_model": None,
    "trend_num_layers": None,
    "trend_decoder_num_layers": None,
    "trend_register_tokens": None,
    "trend_fft_length": None,
    "trend_loss_weight": 1,
    "trend_multi_scale": None,
    "trend_adaptive_patching_levels": None,
    "residual_loss_weight": 1,
    "joint_loss_weight": 1,
    "forecast_loss_type": "joint",
    "trend_head_d_model": None,
    "decompose": False,
    "light_mode": False,
    "mq_hidden": 8,
    "mq_kernel_size": 3,
    "mq_eps": 1e-06,
    "mq_use_decoder_pool": False,
    "mq_q50_type": "median",
    "mq_cond_path": "pool",
    "mq_cond_mode": "add",
    "mq_decoder_d_model": 8,
    "mq_use_positional": False,
    "combine_quantiles_via_variance": False,
    "quantile_levels": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "penalize_large_width_ratio": 0.0,
    "width_penalty_mode": "boundary",
    "enable_base_norm_always": False,
}
# Reference defaults that differ from ours (a tsfm dict that omits them means the reference's).
_TSFM_DEFAULTS = {"patch_stride": 8}
# Keys PretrainedConfig itself takes or writes into config.json (any other unknown key is an
# error: granite-tsfm options this package does not implement, like gate_mode="sigmoid",
# would otherwise be stored and ignored, giving different outputs from the same weights).
# PretrainedConfig keys of transformers 4.x that 5.x no longer has (generation and legacy
# options): a config dict written by `to_dict()` under 4.x carries them all (granite-tsfm
# 0.3.11 runs on 4.x). huggingface/transformers:src/transformers/configuration_utils.py (v4.57).
_LEGACY_PRETRAINED_KEYS = frozenset(
    {
        "add_cross_attention",
        "bad_words_ids",
        "begin_suppress_tokens",
        "bos_token_id",
        "cross_attention_hidden_size",
        "decoder_start_token_id",
        "diversity_penalty",
        "do_sample",
        "early_stopping",
        "encoder_no_repeat_ngram_size",
        "eos_token_id",
        "exponential_decay_length_penalty",
        "finetuning_task",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "is_decoder",
        "length_penalty",
        "max_length",
        "min_length",
        "no_repeat_ngram_size",
        "num_beam_groups",
        "num_beams",
        "num_return_sequences",
        "output_scores",
        "pad_token_id",
        "prefix",
        "pruned_heads",
        "remove_invalid_values",
        "repetition_penalty",
        "return_dict_in_generate",
        "sep_token_id",
        "suppress_tokens",
        "task_specific_params",
        "temperature",
        "tf_legacy_loss",
        "tie_encoder_decoder",
        "tokenizer_class",
        "top_k",
        "top_p",
        "torchscript",
        "typical_p",
        "use_bfloat16",
    }
)
_BASE_CONFIG_KEYS = frozenset(
    {
        *_LEGACY_PRETRAINED_KEYS,
        *inspect.signature(PretrainedConfig.__init__).parameters,
        *PretrainedConfig().to_dict(),
        "torch_dtype",
        "auto_map",
        "name_or_path",
        "_commit_hash",
        "_attn_implementation",
        "attn_implementation",
        "num_labels",
        "tie_word_embeddings",
    }
) - {"self"}


def frequency_token(freq: str, mapping: dict[str, int] | None = None) -> int:
    """The resolution-prefix token of a frequency string (``"15min"`` -> 5, ``"h"`` -> 7).

    Unknown frequencies map to the ``"oov"`` token 0, with a log warning, as the reference's
    ``TimeSeriesPreprocessor.get_frequency_token`` does.
    """
    if not isinstance(freq, str) or not freq:
        raise TypeError(f"freq must be a non-empty string such as '15min' or 'h', got {freq!r}")
    table = FREQUENCY_MAPPING if mapping is None else mapping
    if "oov" not in table:
        raise ValueError(f"mapping must contain an 'oov' entry, got keys {sorted(table)}")
    if freq in table:
        return int(table[freq])
    alias = _FREQ_ALIASES.get(freq)
    if alias is not None and alias in table:
        return int(table[alias])
    logger.warning("frequency %r is not in the frequency-token mapping; using 'oov'", freq)
    return int(table["oov"])


class TTMConfig(PretrainedConfig):
    """Configuration of a Tiny Time Mixer (TTM) forecaster.

    The keys and defaults are the reference's; see :meth:`r1_512_96` / :meth:`r2_512_96` for
    the published 512-96 pretraining settings. Validation happens here, at construction, so a
    bad combination fails with a ``ValueError`` naming the key instead of a shape error later.
    """

    model_type = "trainforge_ttm"
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "d_model",
        "num_hidden_layers": "num_layers",
    }

    def __init__(
        self,
        context_length: int = 64,
        patch_length: int = 8,
        num_input_channels: int = 1,
        prediction_length: int = 16,
        patch_stride: int | None = None,
        prediction_channel_indices: Sequence[int] | None = None,
        exogenous_channel_indices: Sequence[int] | None = None,
        d_model: int = 16,
        expansion_factor: int = 2,
        num_layers: int = 3,
        dropout: float = 0.2,
        mode: str = "common_channel",
        gated_attn: bool = True,
        norm_mlp: str = "LayerNorm",
        self_attn: bool = False,
        self_attn_heads: int = 1,
        use_positional_encoding: bool = False,
        positional_encoding_type: str = "sincos",
        scaling: str | bool | None = "std",
        loss: str | None = "mse",
        init_std: float = 0.02,
        post_init: bool = False,
        norm_eps: float = 1e-5,
        adaptive_patching_levels: int = 0,
        resolution_prefix_tuning: bool = False,
        frequency_token_vocab_size: int = 5,
        head_dropout: float = 0.2,
        distribution_output: str = "student_t",
        num_parallel_samples: int = 100,
        decoder_num_layers: int = 8,
        decoder_d_model: int = 8,
        decoder_adaptive_patching_levels: int = 0,
        decoder_raw_residual: bool = False,
        decoder_mode: str = "common_channel",
        use_decoder: bool = True,
        enable_forecast_channel_mixing: bool = False,
        fcm_gated_attn: bool = True,
        fcm_context_length: int = 1,
        fcm_use_mixer: bool = False,
        fcm_mix_layers: int = 2,
        fcm_prepend_past: bool = True,
        fcm_prepend_past_offset: int | None = None,
        categorical_vocab_size_list: Sequence[int] | None = None,
        prediction_filter_length: int | None = None,
        init_linear: str = "pytorch",
        init_embed: str = "pytorch",
        quantile: float = 0.5,
        huber_delta: float = 1.0,
        mask_value: int = 0,
        **kwargs: Any,
    ) -> None:
        derived = {key: kwargs.pop(key) for key in _DERIVED_KEYS if key in kwargs}
        if derived.get("masked_context_length") is not None:
            raise ValueError(
                f"masked_context_length={derived['masked_context_length']!r} is not supported "
                "(granite-tsfm's masked-prediction pretraining); only None is"
            )
        if derived.get("patch_last", True) is not True:
            raise ValueError(f"patch_last={derived['patch_last']!r} is not supported; only True is")
        unknown = sorted(set(kwargs) - _BASE_CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"TTMConfig does not support the key(s) {unknown}: they are not TTM options "
                "this package implements (granite-tsfm options it lacks are refused rather "
                "than silently ignored)"
            )
        if patch_stride is None:  # non-overlapping patches unless asked otherwise
            patch_stride = patch_length
        self.context_length = context_length
        self.patch_length = patch_length
        self.num_input_channels = num_input_channels
        self.prediction_length = prediction_length
        self.patch_stride = patch_stride
        self.prediction_channel_indices = _sorted_or_none(prediction_channel_indices)
        self.exogenous_channel_indices = _sorted_or_none(exogenous_channel_indices)
        self.d_model = d_model
        self.expansion_factor = expansion_factor
        self.num_layers = num_layers
        self.dropout = dropout
        self.mode = mode
        self.gated_attn = gated_attn
        self.norm_mlp = norm_mlp
        self.self_attn = self_attn
        self.self_attn_heads = self_attn_heads
        self.use_positional_encoding = use_positional_encoding
        self.positional_encoding_type = positional_encoding_type
        self.scaling = scaling
        self.loss = loss
        self.init_std = init_std
        self.post_init = post_init
        self.norm_eps = norm_eps
        self.adaptive_patching_levels = adaptive_patching_levels
        self.resolution_prefix_tuning = resolution_prefix_tuning
        self.frequency_token_vocab_size = frequency_token_vocab_size
        self.head_dropout = head_dropout
        self.distribution_output = distribution_output
        self.num_parallel_samples = num_parallel_samples
        self.decoder_num_layers = decoder_num_layers
        self.decoder_d_model = decoder_d_model
        self.decoder_adaptive_patching_levels = decoder_adaptive_patching_levels
        self.decoder_raw_residual = decoder_raw_residual
        self.decoder_mode = decoder_mode
        self.use_decoder = use_decoder
        self.enable_forecast_channel_mixing = enable_forecast_channel_mixing
        self.fcm_gated_attn = fcm_gated_attn
        self.fcm_context_length = fcm_context_length
        self.fcm_use_mixer = fcm_use_mixer
        self.fcm_mix_layers = fcm_mix_layers
        self.fcm_prepend_past = fcm_prepend_past
        self.fcm_prepend_past_offset = fcm_prepend_past_offset
        self.categorical_vocab_size_list = (
            None if categorical_vocab_size_list is None else list(categorical_vocab_size_list)
        )
        self.prediction_filter_length = prediction_filter_length
        self.init_linear = init_linear
        self.init_embed = init_embed
        self.quantile = quantile
        self.huber_delta = huber_delta
        self.mask_value = mask_value
        # Reference rule: exogenous channels given, targets not -> targets are all the others.
        if self.exogenous_channel_indices is not None and self.prediction_channel_indices is None:
            exog = set(self.exogenous_channel_indices)
            self.prediction_channel_indices = [
                i for i in range(int(num_input_channels)) if i not in exog
            ]
        super().__init__(**kwargs)
        self.validate_ttm()

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def r1_512_96(cls, **overrides: Any) -> TTMConfig:
        """The TTM-R1 512-96 pretraining setting (805,280 parameters).

        ibm-granite/granite-tsfm:tsfm_public/models/tinytimemixer/utils/ttm_args.py defaults
        (context 512, forecast 96, patch 64, d_model = 3 * patch, decoder_d_model = 2 * patch,
        adaptive_patching_levels 3, 2 + 2 layers, dropout 0.2, head_dropout 0.2) and
        notebooks/hfdemo/tinytimemixer/ttm_pretrain_sample.py (std scaling, gated attention,
        common_channel encoder and decoder, expansion 2, no raw residual).
        """
        base: dict[str, Any] = {
            "context_length": 512,
            "prediction_length": 96,
            "patch_length": 64,
            "patch_stride": 64,
            "num_input_channels": 1,
            "d_model": 192,
            "decoder_d_model": 128,
            "adaptive_patching_levels": 3,
            "num_layers": 2,
            "decoder_num_layers": 2,
            "decoder_adaptive_patching_levels": 0,
            "expansion_factor": 2,
            "dropout": 0.2,
            "head_dropout": 0.2,
            "scaling": "std",
            "gated_attn": True,
            "mode": "common_channel",
            "decoder_mode": "common_channel",
            "decoder_raw_residual": False,
            "use_decoder": True,
            "resolution_prefix_tuning": False,
            # The reference default (5) is smaller than its own DEFAULT_FREQUENCY_MAPPING
            # (tokens 0..9); 10 covers it, and gives the 855,100 parameters of 512-96 + RPT.
            "frequency_token_vocab_size": len(set(FREQUENCY_MAPPING.values())),
        }
        base.update(overrides)
        return cls(**base)

    @classmethod
    def r2_512_96(cls, **overrides: Any) -> TTMConfig:
        """TTM-R2 512-96: the R1 shape with head_dropout 0.7 (the granite-timeseries-ttm-r2
        512-96 config.json as listed in the granite-tsfm docs)."""
        base: dict[str, Any] = {"head_dropout": 0.7}
        base.update(overrides)
        return cls.r1_512_96(**base)

    @classmethod
    def from_tsfm_dict(cls, config_dict: dict[str, Any]) -> TTMConfig:
        """Build from a granite-tsfm ``TinyTimeMixerConfig`` dict (``config.json``) verbatim.

        Keys the dict omits take the reference's defaults (``patch_stride=8``). granite-tsfm
        0.3.11 options this package lacks (``decompose``, ``multi_quantile_head``,
        ``gate_mode``, ...) are accepted at their off values and refused otherwise; a stored
        ``num_patches`` must agree with the patching keys.
        """
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict must be a dict, got {type(config_dict).__name__}")
        data = dict(config_dict)
        for key in ("model_type", "architectures", "transformers_version", "_name_or_path"):
            data.pop(key, None)
        for key in _LEGACY_PRETRAINED_KEYS - {"pad_token_id", "bos_token_id", "eos_token_id"}:
            data.pop(key, None)  # transformers 4.x generation/legacy keys: no TTM meaning
        for key, default in _TSFM_DEFAULTS.items():
            data.setdefault(key, default)
        switched_on = {}
        for key, off in _TSFM_OFF_VALUES.items():
            if key in data:
                value = data.pop(key)
                if value != off:
                    switched_on[key] = value
        if switched_on:
            raise ValueError(
                f"this granite-tsfm config sets option(s) TTMConfig does not implement: "
                f"{switched_on} (supported only at their off values "
                f"{ {k: _TSFM_OFF_VALUES[k] for k in switched_on} })"
            )
        num_patches = data.pop("num_patches", None)
        cfg = cls(**data)
        if num_patches is not None and num_patches != cfg.num_patches:
            raise ValueError(
                f"the config says num_patches={num_patches} but context_length="
                f"{cfg.context_length}, patch_length={cfg.patch_length}, patch_stride="
                f"{cfg.patch_stride} give {cfg.num_patches}"
            )
        return cfg

    # -- derived values --------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        """Patches the backbone sees: (max(L, pl) - pl) // stride + 1, plus one with RPT."""
        n = (max(self.context_length, self.patch_length) - self.patch_length) // self.patch_stride
        return n + 1 + int(bool(self.resolution_prefix_tuning))

    @property
    def num_output_channels(self) -> int:
        """Channels of the forecast: the prediction channels, or all input channels."""
        if self.prediction_channel_indices is not None:
            return len(self.prediction_channel_indices)
        return int(self.num_input_channels)

    @property
    def output_length(self) -> int:
        """Time steps of the forecast: prediction_filter_length when set."""
        return int(self.prediction_filter_length or self.prediction_length)

    def validate_ttm(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the first invalid key."""
        for name in (
            "context_length",
            "patch_length",
            "patch_stride",
            "prediction_length",
            "num_input_channels",
            "d_model",
            "decoder_d_model",
            "expansion_factor",
            "frequency_token_vocab_size",
            "self_attn_heads",
        ):
            _check_int(name, getattr(self, name), minimum=1)
        for name in (
            "num_layers",
            "decoder_num_layers",
            "adaptive_patching_levels",
            "decoder_adaptive_patching_levels",
            "fcm_context_length",
            "fcm_mix_layers",
        ):
            _check_int(name, getattr(self, name), minimum=0)
        if self.context_length <= self.patch_length:
            raise ValueError(
                f"context_length ({self.context_length}) must be greater than patch_length "
                f"({self.patch_length})"
            )
        if self.patch_stride > self.patch_length:
            raise ValueError(
                f"patch_stride ({self.patch_stride}) must not exceed patch_length "
                f"({self.patch_length}): context steps between patches would be dropped"
            )
        if (self.context_length - self.patch_length) % self.patch_stride != 0:
            raise ValueError(
                f"context_length - patch_length ({self.context_length} - {self.patch_length}) must "
                f"be divisible by patch_stride ({self.patch_stride}) so that every context step "
                "lands in a patch"
            )
        for name in ("mode", "decoder_mode"):
            if getattr(self, name) not in _MODES:
                raise ValueError(f"{name} must be one of {_MODES}, got {getattr(self, name)!r}")
        if self.loss == "nll":
            raise ValueError(
                "loss='nll' (distribution heads) is disabled, as in the reference; "
                f"use one of {_LOSSES}"
            )
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.scaling not in _SCALINGS:
            raise ValueError(f"scaling must be one of ('std', 'mean', None), got {self.scaling!r}")
        if not isinstance(self.norm_mlp, str):
            raise TypeError(f"norm_mlp must be 'LayerNorm' or 'BatchNorm', got {self.norm_mlp!r}")
        if self.positional_encoding_type not in ("sincos", "random"):
            raise ValueError(
                "positional_encoding_type must be 'sincos' or 'random', "
                f"got {self.positional_encoding_type!r}"
            )
        if self.d_model % self.self_attn_heads != 0 and self.self_attn:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by self_attn_heads "
                f"({self.self_attn_heads})"
            )
        for name, levels, width in (
            ("adaptive_patching_levels", self.adaptive_patching_levels, self.d_model),
            (
                "decoder_adaptive_patching_levels",
                self.decoder_adaptive_patching_levels,
                self.decoder_d_model,
            ),
        ):
            for level in range(levels):
                factor = 2**level
                if width // factor > 4 and width % factor != 0:
                    raise ValueError(
                        f"{name}={levels} needs the width {width} divisible by 2^{level}={factor}"
                    )
        if self.prediction_filter_length is not None:
            _check_int("prediction_filter_length", self.prediction_filter_length, minimum=1)
            if self.prediction_filter_length > self.prediction_length:
                raise ValueError(
                    f"prediction_filter_length ({self.prediction_filter_length}) must be at most "
                    f"prediction_length ({self.prediction_length})"
                )
        for name in ("prediction_channel_indices", "exogenous_channel_indices"):
            idx = getattr(self, name)
            if idx is None:
                continue
            if not idx or len(set(idx)) != len(idx):
                raise ValueError(f"{name} must be a non-empty list of distinct indices, got {idx}")
            bad = [i for i in idx if not 0 <= i < self.num_input_channels]
            if bad:
                raise ValueError(
                    f"{name} {idx} has indices {bad} outside 0..{self.num_input_channels - 1} "
                    f"(num_input_channels={self.num_input_channels})"
                )
        if self.exogenous_channel_indices is not None:
            both = set(self.exogenous_channel_indices) & set(self.prediction_channel_indices or [])
            if both:
                raise ValueError(
                    f"channels {sorted(both)} are both prediction and exogenous channels"
                )
            if not self.enable_forecast_channel_mixing:
                logger.warning(
                    "exogenous_channel_indices is set but enable_forecast_channel_mixing is off: "
                    "future exogenous values will not be used"
                )
        if (
            self.enable_forecast_channel_mixing
            and self.fcm_use_mixer
            and self.fcm_context_length == 0
        ):
            raise ValueError("fcm_use_mixer=True needs fcm_context_length >= 1")
        if self.categorical_vocab_size_list is not None:
            if self.decoder_mode != "mix_channel" or not self.use_decoder:
                raise ValueError(
                    "categorical_vocab_size_list needs use_decoder=True and "
                    "decoder_mode='mix_channel'"
                )
            for v in self.categorical_vocab_size_list:
                _check_int("categorical_vocab_size_list entry", v, minimum=1)


def _sorted_or_none(idx: Sequence[int] | None) -> list[int] | None:
    if idx is None:
        return None
    if isinstance(idx, str | bytes) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in idx
    ):
        raise TypeError(f"channel indices must be a sequence of ints, got {idx!r}")
    return sorted(int(i) for i in idx)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
