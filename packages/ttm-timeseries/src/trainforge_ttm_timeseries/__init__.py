"""Tiny Time Mixers (Ekambaram et al., NeurIPS 2024): small pretrained mixers for
zero/few-shot multivariate forecasting, as a transformers ``PreTrainedModel``."""

from __future__ import annotations

from importlib import metadata

from trainforge_ttm_timeseries.config import FREQUENCY_MAPPING, TTMConfig, frequency_token
from trainforge_ttm_timeseries.modeling import (
    TTMForPrediction,
    TTMForPredictionOutput,
    TTMModel,
    forecast_loss,
    load_patchtsmixer_state_dict,
    load_tsfm_state_dict,
)

try:
    __version__ = metadata.version("trainforge-ttm-timeseries")
except metadata.PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

__all__ = [
    "FREQUENCY_MAPPING",
    "TTMConfig",
    "TTMForPrediction",
    "TTMForPredictionOutput",
    "TTMModel",
    "__version__",
    "forecast_loss",
    "frequency_token",
    "load_patchtsmixer_state_dict",
    "load_tsfm_state_dict",
]
