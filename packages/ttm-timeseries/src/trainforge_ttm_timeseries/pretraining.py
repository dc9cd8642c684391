"""Pretraining and fine-tuning helpers: multi-resolution augmentation, a windowed dataset,
the training loop of the reference recipe (AdamW + OneCycleLR), evaluation and baselines."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from trainforge_ttm_timeseries.config import frequency_token
from trainforge_ttm_timeseries.modeling import TTMForPrediction, _as_series

logger = logging.getLogger(__name__)

_UNIT_MINUTES = {"min": 1, "T": 1, "h": 60, "H": 60, "d": 1440, "D": 1440, "W": 10080}
_AGGS = ("mean", "sum", "last", "max", "min")


class ResolutionView(NamedTuple):
    """One resolution of a series: the values and the frequency token they carry."""

    values: np.ndarray
    freq_token: int


def freq_minutes(freq: str) -> int:
    """Minutes in one step of ``freq`` (``"15min"`` -> 15, ``"h"`` -> 60, ``"2h"`` -> 120)."""
    if not isinstance(freq, str):
        raise TypeError(f"freq must be a string such as '10min' or 'h', got {freq!r}")
    m = re.fullmatch(r"\s*(\d*)\s*(min|T|h|H|d|D|W)\s*", freq)
    if m is None:
        raise ValueError(f"freq must look like '10min', 'h', '2h', 'd' or 'W', got {freq!r}")
    k = int(m.group(1)) if m.group(1) else 1
    if k < 1:
        raise ValueError(f"freq multiple must be positive, got {freq!r}")
    return k * _UNIT_MINUTES[m.group(2)]


def minutes_to_freq(minutes: int) -> str:
    """The canonical frequency string of a step length (60 -> ``"h"``, 30 -> ``"30min"``)."""
    if not isinstance(minutes, int) or minutes < 1:
        raise ValueError(f"minutes must be a positive int, got {minutes!r}")
    for unit, size in (("W", 10080), ("d", 1440), ("h", 60)):
        if minutes % size == 0:
            k = minutes // size
            return unit if k == 1 else f"{k}{unit}"
    return f"{minutes}min" if minutes != 1 else "min"


def downsampled_freq(freq: str, factor: int) -> str:
    """The frequency after aggregating ``factor`` steps of ``freq`` into one."""
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor must be a positive int, got {factor!r}")
    return minutes_to_freq(freq_minutes(freq) * factor)


def resolution_augment(
    series: np.ndarray | torch.Tensor,
    freq: str,
    factors: Sequence[int] = (1, 2, 3, 6),
    agg: str = "mean",
) -> list[ResolutionView]:
    """Lower-resolution copies of a series ("diverse resolution sampling", TTM paper sec. 3).

    For each factor f the series [n] or [n, C] is cut into ⌊n/f⌋ consecutive blocks of f
    steps from the start (a remainder at the end is dropped) and each block is aggregated
    (``agg``: mean, sum, last, max, min). Each view carries the frequency token of its new
    resolution (``"10min"`` x 3 -> ``"30min"`` -> 6); resolutions outside the mapping get the
    oov token 0.
    """
    arr = series.detach().cpu().numpy() if isinstance(series, torch.Tensor) else np.asarray(series)
    if arr.ndim not in (1, 2):
        raise ValueError(f"series must be 1-D [n] or 2-D [n, channels], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"series must be numeric, got dtype {arr.dtype}")
    if agg not in _AGGS:
        raise ValueError(f"agg must be one of {_AGGS}, got {agg!r}")
    freq_minutes(freq)
    if not factors:
        raise ValueError("factors must be a non-empty sequence of positive ints")
    views = []
    for f in factors:
        if not isinstance(f, int | np.integer) or isinstance(f, bool) or f < 1:
            raise ValueError(f"factors must be positive ints, got {f!r}")
        f = int(f)
        n = arr.shape[0] // f
        if n == 0:
            raise ValueError(f"factor {f} is longer than the series ({arr.shape[0]} steps)")
        blocks = arr[: n * f].reshape(n, f, *arr.shape[1:])
        if agg == "mean":
            out = blocks.mean(axis=1)
        elif agg == "sum":
            out = blocks.sum(axis=1)
        elif agg == "last":
            out = blocks[:, -1]
        elif agg == "max":
            out = blocks.max(axis=1)
        else:
            out = blocks.min(axis=1)
        new = downsampled_freq(freq, f)
        token = frequency_token(new) if _known(new) else 0
        views.append(ResolutionView(out.astype(arr.dtype, copy=False), token))
    return views


def _known(freq: str) -> bool:
    from trainforge_ttm_timeseries.config import FREQUENCY_MAPPING

    return freq in FREQUENCY_MAPPING


class ForecastWindows(Dataset):
    """Sliding (context, horizon) windows over one or more multivariate series.

    Each item is a dict with ``past_values`` [context_length, C], ``future_values``
    [prediction_length, C] and ``freq_token`` (a 0-d long tensor). With
    ``channel_independent=True`` every channel becomes its own univariate series (C = 1), the
    way TTM is pretrained (``num_input_channels=1``, common_channel).
    """

    def __init__(
        self,
        series: Sequence[np.ndarray] | np.ndarray,
        context_length: int,
        prediction_length: int,
        *,
        stride: int = 1,
        freq_tokens: Sequence[int] | None = None,
        channel_independent: bool = False,
    ) -> None:
        if isinstance(series, np.ndarray | torch.Tensor):
            series = [series]
        if not isinstance(series, Sequence) or not series:
            raise TypeError("series must be an array or a non-empty sequence of arrays")
        for name, value in (
            ("context_length", context_length),
            ("prediction_length", prediction_length),
            ("stride", stride),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if freq_tokens is not None and len(freq_tokens) != len(series):
            raise ValueError(f"freq_tokens has {len(freq_tokens)} entries for {len(series)} series")
        self.context_length = context_length
        self.prediction_length = prediction_length
        arrays: list[np.ndarray] = []
        tokens: list[int] = []
        for i, s in enumerate(series):
            a = np.asarray(s.detach().cpu() if isinstance(s, torch.Tensor) else s, dtype=np.float32)
            if a.ndim == 1:
                a = a[:, None]
            if a.ndim != 2:
                raise ValueError(f"series[{i}] must be [n] or [n, channels], got shape {a.shape}")
            if np.isnan(a).any():
                raise ValueError(f"series[{i}] contains NaN; fill or drop missing values first")
            parts = [a[:, [c]] for c in range(a.shape[1])] if channel_independent else [a]
            for p in parts:
                arrays.append(p)
                tokens.append(0 if freq_tokens is None else int(freq_tokens[i]))
        widths = {a.shape[1] for a in arrays}
        if len(widths) != 1:
            raise ValueError(
                f"all series must have the same number of channels, got {sorted(widths)}"
            )
        span = context_length + prediction_length
        self._arrays = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        self._tokens = tokens
        self._index: list[tuple[int, int]] = []
        for k, a in enumerate(arrays):
            self._index.extend((k, start) for start in range(0, a.shape[0] - span + 1, stride))
        if not self._index:
            raise ValueError(
                f"no series is long enough for context {context_length} + horizon "
                f"{prediction_length} = {span} steps"
            )

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k, start = self._index[i]
        a = self._arrays[k]
        mid = start + self.context_length
        return {
            "past_values": a[start:mid],
            "future_values": a[mid : mid + self.prediction_length],
            "freq_token": torch.tensor(self._tokens[k], dtype=torch.long),
        }


def train_forecaster(
    model: TTMForPrediction,
    dataset: Dataset,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    use_freq_token: bool | None = None,
    progress: bool = False,
) -> list[float]:
    """Train with AdamW + OneCycleLR (the reference pretraining/fine-tuning recipe,
    notebooks/hfdemo/tinytimemixer/ttm_pretrain_sample.py) for ``steps`` steps; only
    parameters with ``requires_grad`` are optimised. Returns the loss per step."""
    if not isinstance(model, TTMForPrediction):
        raise TypeError(f"model must be a TTMForPrediction, got {type(model).__name__}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if use_freq_token is None:
        use_freq_token = bool(model.config.resolution_prefix_tuning)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=gen, drop_last=False
    )
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    device = next(model.parameters()).device
    model.train()
    losses: list[float] = []
    bar = tqdm(total=steps, disable=not progress, desc="train", leave=False)
    while len(losses) < steps:
        for batch in loader:
            needed = ("past_values", "future_values", *(("freq_token",) if use_freq_token else ()))
            missing = [key for key in needed if key not in batch]
            if missing:
                raise ValueError(
                    f"dataset items lack {missing} (they have {sorted(batch)}); "
                    + ("the model uses resolution prefix tuning, so items need a freq_token"
                       if "freq_token" in missing else "")
                )  # fmt: skip
            out = model(
                batch["past_values"].to(device),
                future_values=batch["future_values"].to(device),
                freq_token=batch["freq_token"].to(device) if use_freq_token else None,
            )
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            sched.step()
            losses.append(out.loss.detach().item())
            bar.update(1)
            if len(losses) >= steps:
                break
    bar.close()
    model.eval()
    return losses


@torch.no_grad()
def predict(
    model: TTMForPrediction,
    past_values: Any,
    *,
    batch_size: int = 256,
    freq_token: int | str | torch.Tensor | None = None,
) -> torch.Tensor:
    """Forecasts [N, F, C_out] for contexts [N, L, C] in eval mode, in batches.

    ``past_values`` is what the model's forward takes: a tensor or numpy array [N, L, C] of
    any floating dtype (cast to the model's), or one series as a pandas DataFrame
    [L, C] / Series [L].
    """
    if not isinstance(model, TTMForPrediction):
        raise TypeError(f"model must be a TTMForPrediction, got {type(model).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    param = next(model.parameters())
    past_values = _as_series("past_values", past_values, param.dtype, param.device)
    if past_values.dim() != 3:
        raise ValueError(
            f"past_values must be a [N, L, C] tensor, got shape {tuple(past_values.shape)}"
        )
    model.eval()
    outs = []
    for i in range(0, past_values.shape[0], batch_size):
        chunk = past_values[i : i + batch_size]
        tok = freq_token
        if isinstance(tok, torch.Tensor) and tok.dim() > 0:
            tok = tok[i : i + batch_size]
        outs.append(model(chunk, freq_token=tok).prediction_outputs)
    return torch.cat(outs)


def seasonal_naive(past_values: torch.Tensor, prediction_length: int, period: int) -> torch.Tensor:
    """Repeat the last ``period`` steps of each context: [N, L, C] -> [N, F, C]."""
    if not isinstance(past_values, torch.Tensor) or past_values.dim() != 3:
        raise ValueError("past_values must be a [N, L, C] tensor")
    if not isinstance(period, int) or not 1 <= period <= past_values.shape[1]:
        raise ValueError(f"period must be an int in 1..{past_values.shape[1]}, got {period!r}")
    if not isinstance(prediction_length, int) or prediction_length < 1:
        raise ValueError(f"prediction_length must be a positive int, got {prediction_length!r}")
    last = past_values[:, -period:]
    reps = math.ceil(prediction_length / period)
    return last.repeat(1, reps, 1)[:, :prediction_length]


class LinearForecaster:
    """A channel-shared ridge regression from the standardised context to the horizon (the
    linear baseline): each window is standardised per channel as TTM does, a single
    [L+1, F] map is fitted in closed form (float64), and the forecast is rescaled."""

    def __init__(self, ridge: float = 100.0) -> None:
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge!r}")
        self.ridge = float(ridge)
        self.weight: torch.Tensor | None = None

    @staticmethod
    def _design(past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = past.double().transpose(1, 2).reshape(-1, past.shape[1])  # [N*C, L]
        loc = x.mean(1, keepdim=True)
        scale = torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
        z = (x - loc) / scale
        return torch.cat((z, torch.ones_like(z[:, :1])), dim=1), loc, scale

    def fit(self, past_values: torch.Tensor, future_values: torch.Tensor) -> LinearForecaster:
        if past_values.dim() != 3 or future_values.dim() != 3:
            raise ValueError("past_values and future_values must be [N, L, C] and [N, F, C]")
        if (
            past_values.shape[0] != future_values.shape[0]
            or past_values.shape[2] != future_values.shape[2]
        ):
            raise ValueError(
                f"past_values {tuple(past_values.shape)} and future_values "
                f"{tuple(future_values.shape)} disagree on N or C"
            )
        x, loc, scale = self._design(past_values)
        y = (
            future_values.double().transpose(1, 2).reshape(-1, future_values.shape[1]) - loc
        ) / scale
        gram = x.T @ x + self.ridge * torch.eye(x.shape[1], dtype=x.dtype)
        self.weight = torch.linalg.solve(gram, x.T @ y)
        return self

    def predict(self, past_values: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            raise ValueError("LinearForecaster.predict called before fit")
        if past_values.dim() != 3 or past_values.shape[1] + 1 != self.weight.shape[0]:
            raise ValueError(
                f"past_values must be [N, {self.weight.shape[0] - 1}, C], "
                f"got {tuple(past_values.shape)}"
            )
        n, _, c = past_values.shape
        x, loc, scale = self._design(past_values)
        y = (x @ self.weight) * scale + loc  # [N*C, F]
        return y.reshape(n, c, -1).transpose(1, 2).to(past_values.dtype)


def stack_windows(dataset: ForecastWindows) -> tuple[torch.Tensor, torch.Tensor]:
    """All windows of a dataset as two tensors ([N, L, C], [N, F, C])."""
    if not isinstance(dataset, ForecastWindows):
        raise TypeError(f"dataset must be a ForecastWindows, got {type(dataset).__name__}")
    items = [dataset[i] for i in range(len(dataset))]
    return (
        torch.stack([it["past_values"] for it in items]),
        torch.stack([it["future_values"] for it in items]),
    )


def finetune_recipe(
    model: TTMForPrediction,
    num_input_channels: int | None = None,
    *,
    decoder_mode: str | None = None,
) -> int:
    """The few-shot recipe's model surgery: freeze the backbone and, only when asked
    (``decoder_mode="mix_channel"``), switch the decoder to channel mixing over
    ``num_input_channels`` channels (granite-tsfm issues #102 / #228). The reference's
    few-shot benchmark freezes the backbone and keeps the pretrained decoder mode; mix_channel
    is its option for multivariate/exogenous fine-tuning. Returns the number of parameters
    left trainable."""
    if not isinstance(model, TTMForPrediction):
        raise TypeError(f"model must be a TTMForPrediction, got {type(model).__name__}")
    if decoder_mode is None and num_input_channels is not None:
        raise ValueError(
            "num_input_channels only applies to a decoder switched to mix_channel: pass "
            "decoder_mode='mix_channel' too (finetune_recipe no longer switches it by default)"
        )
    model.freeze_backbone(True)
    if decoder_mode is not None:
        model.set_decoder_mode(decoder_mode, num_input_channels)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
