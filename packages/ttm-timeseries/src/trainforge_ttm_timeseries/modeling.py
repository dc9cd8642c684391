"""The Tiny Time Mixer network: scaling, patching, resolution prefix, mixer blocks with
adaptive patching, decoder, head with forecast-channel mixing, and losses.

Written from the description in Ekambaram et al. (2024) and a reading of
ibm-granite/granite-tsfm:tsfm_public/models/tinytimemixer/modeling_tinytimemixer.py. Parameter
names (``backbone.encoder.patcher``, ``...mixers.0.mixer_layers.1.patch_mixer.mlp.fc1``, ...)
follow the reference so its state_dicts load unchanged (:func:`load_tsfm_state_dict`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from trainforge_ttm_timeseries.config import TTMConfig, frequency_token

logger = logging.getLogger(__name__)


# -- memory layout ---------------------------------------------------------------------------
# The mixers keep their activations "patch-major": a logical [B, C, P, D] tensor is stored as a
# contiguous [P, B, C, D] one (``x.permute(2, 0, 1, 3)`` is contiguous). Mixing over patches is
# then one left GEMM ``W @ X`` on the [P, B*C*D] view, with no transposed copies, and the
# patch gate's softmax runs over dim 0, where torch's kernel is fast (over a short last axis
# of 8 patches it is ~30x slower); mixing over features stays a row GEMM on the same storage.
# Modules take and return logical [B, C, P, D] tensors; other layouts are accepted (copied).
def _pm(x: torch.Tensor) -> torch.Tensor:
    """Logical [B, C, P, D] -> its [P, B, C, D] view (contiguous when patch-major)."""
    return x.permute(2, 0, 1, 3)


def _logical(xp: torch.Tensor) -> torch.Tensor:
    """[P, B, C, D] -> the logical [B, C, P, D] view."""
    return xp.permute(1, 2, 0, 3)


def _patch_major(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when already patch-major, else a patch-major copy (same values)."""
    return _logical(_pm(x).contiguous())


def _lean() -> bool:
    """No autograd graph is being recorded (``torch.no_grad``/``torch.inference_mode``): the
    forward may then overwrite its own fresh intermediates in place."""
    return not torch.is_grad_enabled()


def _gelu(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    return torch.ops.aten.gelu_(x) if inplace else F.gelu(x)


def _dropout(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    return module(x) if module.training and module.p > 0 else x


def _plain(module: nn.Module, cls: type) -> bool:
    """``module`` is exactly ``cls`` (not a replacement or subclass) and has no hooks, so
    calling its functional form directly is the same as calling the module."""
    return type(module) is cls and not (
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _rows(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``linear`` applied to the rows of a 2-D x [M, in] (one ``addmm`` when plain)."""
    if _plain(linear, nn.Linear):
        bias = linear.bias
        if bias is not None:
            return torch.addmm(bias, x, linear.weight.t())
    return linear(x)


def _columns(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``linear`` applied to every column of a 2-D x [in, M] -> [out, M].

    A plain ``nn.Linear`` without hooks is one left GEMM ``W @ x + b``; anything else (a
    replaced or hooked module, e.g. an adapter or a quantized layer) is called as a module on
    the transposed view, so it keeps working.
    """
    if _plain(linear, nn.Linear):
        bias = linear.bias
        if bias is None:
            return torch.mm(linear.weight, x)
        return torch.addmm(bias.unsqueeze(1), linear.weight, x)
    return linear(x.t()).t()


# -- small blocks -------------------------------------------------------------------------
class GatedAttention(nn.Module):
    """x * softmax(W x + b) over the last axis."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.attn_layer = nn.Linear(in_size, out_size)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        logits = _rows(self.attn_layer, x) if x.dim() == 2 else self.attn_layer(x)
        w = torch.softmax(logits, dim=-1)
        return x.mul_(w) if inplace else x * w

    def forward_columns(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The same gate on every column of a 2-D x [in, M]: x * softmax(W x + b, dim 0)."""
        w = torch.softmax(_columns(self.attn_layer, x), dim=0)
        return x.mul_(w) if inplace else x * w


class MLP(nn.Module):
    """Linear(in, in*expansion) -> GELU -> dropout -> Linear(., out) -> dropout."""

    def __init__(self, in_features: int, out_features: int, expansion: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(in_features, in_features * expansion)
        self.dropout1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(in_features * expansion, out_features)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            h = _dropout(self.dropout1, _gelu(_rows(self.fc1, x), _lean()))
            return _dropout(self.dropout2, _rows(self.fc2, h))
        h = _dropout(self.dropout1, _gelu(self.fc1(x), _lean()))
        return _dropout(self.dropout2, self.fc2(h))

    def forward_columns(self, x: torch.Tensor) -> torch.Tensor:
        """The same MLP on every column of a 2-D x [in, M] (left GEMMs, W @ x + b)."""
        h = _dropout(self.dropout1, _gelu(_columns(self.fc1, x), _lean()))
        return _dropout(self.dropout2, _columns(self.fc2, h))


class NormLayer(nn.Module):
    """LayerNorm over the last (feature) axis, or BatchNorm when ``norm_mlp`` contains "batch"
    (statistics per feature over all other axes, as the reference's BatchNorm1d over the
    transposed [B*C, D, P])."""

    def __init__(self, width: int, norm_mlp: str, eps: float) -> None:
        super().__init__()
        self.batch = "batch" in norm_mlp.lower()
        self.norm: nn.Module = (
            _BatchNorm(width, eps) if self.batch else nn.LayerNorm(width, eps=eps)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch:
            return self.norm(x.contiguous())
        norm = self.norm
        if _plain(norm, nn.LayerNorm):
            return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return norm(x)


class _BatchNorm(nn.Module):
    """BatchNorm1d over the last axis of a contiguous [..., D] tensor, seen as [N, D]."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(width, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batchnorm(x.view(-1, x.shape[-1])).view(x.shape)


class TinyAttention(nn.Module):
    """Plain multi-head self-attention over patches (the optional ``self_attn``)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        h = self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, h, d // h).transpose(1, 2)

        q = split(self.q_proj(x)) * (d // h) ** -0.5
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        w = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        w = F.dropout(w, p=self.dropout, training=self.training)
        return self.out_proj((w @ v).transpose(1, 2).reshape(n, t, d))


@dataclass(frozen=True)
class _Dims:
    """The widths one mixer stack is built with (the reference derives them by copying
    and editing its config; here they are explicit)."""

    num_patches: int
    d_model: int
    num_channels: int
    num_layers: int
    mode: str
    dropout: float
    expansion: int
    gated_attn: bool
    norm_mlp: str
    norm_eps: float
    self_attn: bool = False
    self_attn_heads: int = 1


class ChannelFeatureMixer(nn.Module):
    """Mixes across channels (``mix_channel`` mode): norm -> gate -> MLP over the channel axis."""

    def __init__(self, dims: _Dims) -> None:
        super().__init__()
        c = dims.num_channels
        self.norm = NormLayer(dims.d_model, dims.norm_mlp, dims.norm_eps)
        self.mlp = MLP(c, c, dims.expansion, dims.dropout)
        self.gating_block = GatedAttention(c, c) if dims.gated_attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.mlp.fc1.in_features:
            raise ValueError(
                f"mix_channel mode was built for {self.mlp.fc1.in_features} channels but the "
                f"input has {x.shape[1]}"
            )
        xp = _pm(x)  # [P, B, C, D]
        y = self.norm(xp).transpose(2, 3)  # [P, B, D, C]
        if self.gating_block is not None:
            y = self.gating_block(y)
        return _logical((self.mlp(y).transpose(2, 3) + xp).contiguous())


class PatchMixer(nn.Module):
    """Mixes across patches: norm -> MLP over the patch axis -> gate -> residual.

    The reference transposes to [B, C, D, P] and applies row Linears; here the same weights
    multiply the patch-major [P, B*C*D] storage from the left (``W @ X + b``), and the gate's
    softmax runs over dim 0: the same sums, in another order (equal up to float rounding).
    """

    def __init__(self, dims: _Dims) -> None:
        super().__init__()
        p = dims.num_patches
        self.norm = NormLayer(dims.d_model, dims.norm_mlp, dims.norm_eps)
        self.mlp = MLP(p, p, dims.expansion, dims.dropout)
        self.gating_block = GatedAttention(p, p) if dims.gated_attn else None
        self.self_attn_layer: TinyAttention | None = None
        if dims.self_attn:
            self.self_attn_layer = TinyAttention(dims.d_model, dims.self_attn_heads, dims.dropout)
            self.norm_attn = NormLayer(dims.d_model, dims.norm_mlp, dims.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lean = _lean()
        xp = _pm(x)  # [P, B, C, D]
        y = self.norm(xp)  # contiguous [P, B, C, D]
        attn = None
        if self.self_attn_layer is not None:
            b, c, p, d = x.shape
            attn = self.self_attn_layer(_logical(y).reshape(b * c, p, d))
            attn = _pm(attn.view(b, c, p, d))
        z = self.mlp.forward_columns(y.view(y.shape[0], -1))  # [P, B*C*D]
        if self.gating_block is not None:
            z = self.gating_block.forward_columns(z, inplace=lean)
        z = z.view(y.shape)
        if attn is not None:
            z = self.norm_attn((z + attn).contiguous())
        return _logical(z.add_(xp) if lean else z + xp)


class FeatureMixer(nn.Module):
    """Mixes across hidden features: norm -> MLP -> gate -> residual."""

    def __init__(self, dims: _Dims) -> None:
        super().__init__()
        d = dims.d_model
        self.norm = NormLayer(d, dims.norm_mlp, dims.norm_eps)
        self.mlp = MLP(d, d, dims.expansion, dims.dropout)
        self.gating_block = GatedAttention(d, d) if dims.gated_attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lean = _lean()
        xp = _pm(x)  # [P, B, C, D]: row GEMMs over D on the patch-major storage
        y = self.norm(xp)
        shape = y.shape
        y = self.mlp(y.view(-1, shape[-1]))
        if self.gating_block is not None:
            y = self.gating_block(y, inplace=lean)
        y = y.view(shape)
        return _logical(y.add_(xp) if lean else y + xp)


class TTMLayer(nn.Module):
    """[channel mixer if mix_channel] -> patch mixer (if more than one patch) -> feature mixer."""

    def __init__(self, dims: _Dims) -> None:
        super().__init__()
        self.dims = dims
        self.patch_mixer = PatchMixer(dims) if dims.num_patches > 1 else None
        self.feature_mixer = FeatureMixer(dims)
        self.channel_feature_mixer = (
            ChannelFeatureMixer(dims) if dims.mode == "mix_channel" else None
        )

    def set_mode(self, mode: str, num_channels: int) -> None:
        """Add (fresh) or drop the channel mixer; the patch and feature mixers are kept."""
        self.dims = _replace(self.dims, mode=mode, num_channels=num_channels)
        if mode == "mix_channel":
            ref = next(self.feature_mixer.parameters())
            cfm = ChannelFeatureMixer(self.dims).to(device=ref.device, dtype=ref.dtype)
            self.channel_feature_mixer = cfm
        else:
            self.channel_feature_mixer = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_feature_mixer is not None:
            x = self.channel_feature_mixer(x)
        if self.patch_mixer is not None:
            x = self.patch_mixer(x)
        return self.feature_mixer(x)


class AdaptivePatchingLevel(nn.Module):
    """One adaptive-patching level: view [P, D] as [P*f, D/f] (f = 2^level), run the layers,
    view back. The factor falls back to 1 (with a warning) when D/f <= 4, as in the reference."""

    def __init__(self, dims: _Dims, level: int) -> None:
        super().__init__()
        factor = 2**level
        if dims.d_model // factor <= 4:
            logger.warning(
                "adaptive patching level %d disabled: d_model %d // %d <= 4",
                level,
                dims.d_model,
                factor,
            )
            factor = 1
        if dims.d_model % factor != 0:
            raise ValueError(f"d_model ({dims.d_model}) must be divisible by 2^{level} = {factor}")
        self.level = level
        self.adaptive_patch_factor = factor
        inner = _replace(
            dims, num_patches=dims.num_patches * factor, d_model=dims.d_model // factor
        )
        self.mixer_layers = nn.ModuleList(TTMLayer(inner) for _ in range(dims.num_layers))

    def forward(self, x: torch.Tensor, hidden: list[torch.Tensor] | None) -> torch.Tensor:
        b, c, p, d = x.shape
        f = self.adaptive_patch_factor
        # Logical x.reshape(b, c, p * f, d // f), written for patch-major storage:
        # y[p * f + i, ..., e] = x[p, ..., i * d // f + e].
        y = _pm(x).reshape(p, b, c, f, d // f).permute(0, 3, 1, 2, 4).reshape(p * f, b, c, -1)
        y = _logical(y)
        if hidden is not None:
            hidden += [x, y]
        for layer in self.mixer_layers:
            y = layer(y)
            if hidden is not None:
                hidden.append(y)
        y = _pm(y).reshape(p, f, b, c, d // f).permute(0, 2, 3, 1, 4).reshape(p, b, c, d)
        y = _logical(y)
        if hidden is not None:
            hidden.append(y)
        return y


class MixerStack(nn.Module):
    """``num_layers`` TTM layers, or ``levels`` adaptive-patching levels run coarse-index first
    (level levels-1 ... 0), each with ``num_layers`` layers."""

    def __init__(self, dims: _Dims, levels: int) -> None:
        super().__init__()
        self.levels = levels
        if levels > 0:
            self.mixers = nn.ModuleList(
                AdaptivePatchingLevel(dims, i) for i in reversed(range(levels))
            )
        else:
            self.mixers = nn.ModuleList(TTMLayer(dims) for _ in range(dims.num_layers))

    def layers(self) -> list[TTMLayer]:
        out: list[TTMLayer] = []
        for m in self.mixers:
            out.extend(m.mixer_layers if isinstance(m, AdaptivePatchingLevel) else [m])
        return out

    def forward(
        self, x: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        hidden: list[torch.Tensor] | None = [] if output_hidden_states else None
        x = _patch_major(x)
        for m in self.mixers:
            if isinstance(m, AdaptivePatchingLevel):
                x = m(x, hidden)
            else:
                x = m(x)
                if hidden is not None:
                    hidden.append(x)
        return x, hidden


def _replace(dims: _Dims, **changes: Any) -> _Dims:
    from dataclasses import replace

    return replace(dims, **changes)


def _backbone_dims(cfg: TTMConfig) -> _Dims:
    return _Dims(
        num_patches=cfg.num_patches,
        d_model=cfg.d_model,
        num_channels=cfg.num_input_channels,
        num_layers=cfg.num_layers,
        mode=cfg.mode,
        dropout=cfg.dropout,
        expansion=cfg.expansion_factor,
        gated_attn=cfg.gated_attn,
        norm_mlp=cfg.norm_mlp,
        norm_eps=cfg.norm_eps,
        self_attn=cfg.self_attn,
        self_attn_heads=cfg.self_attn_heads,
    )


# -- scaling and patching -------------------------------------------------------------------
def std_scale(
    x: torch.Tensor, observed: torch.Tensor | None, minimum_scale: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel standardisation over time using only observed steps
    (``observed=None``: all steps; the same values as an all-ones mask, fewer operations).

    scale = sqrt(var + 1e-5) (the reference's ``TinyTimeMixerStdScaler`` minimum_scale).
    """
    if observed is None:
        loc = x.sum(1, keepdim=True) / x.shape[1]
        var = ((x - loc) ** 2).sum(1, keepdim=True) / x.shape[1]
        scale = torch.sqrt(var + minimum_scale)
        return (x - loc) / scale, loc, scale
    n = observed.sum(1, keepdim=True).clamp_min(1)
    loc = (x * observed).sum(1, keepdim=True) / n
    var = (((x - loc) * observed) ** 2).sum(1, keepdim=True) / n
    scale = torch.sqrt(var + minimum_scale)
    return (x - loc) / scale, loc, scale


def mean_scale(
    x: torch.Tensor, observed: torch.Tensor, minimum_scale: float = 1e-10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean-absolute scaling; series with no observation fall back to the batch's scale."""
    total = (x * observed).abs().sum(1, keepdim=True)
    n = observed.sum(1, keepdim=True)
    scale = total / n.clamp_min(1)
    fallback = (total.sum(0) / n.sum(0).clamp_min(1)).squeeze()
    scale = torch.where(n > 0, scale, fallback).clamp_min(minimum_scale)
    return x / scale, torch.zeros_like(scale), scale


def patchify(x: torch.Tensor, patch_length: int, stride: int) -> torch.Tensor:
    """[B, L, C] -> [B, C, P, patch_length]; drops the oldest steps that do not fill a patch.

    The result is stored patch-major (see ``_pm``): a [B, C, P, patch_length] view of a
    contiguous [P, B, C, patch_length] tensor.
    """
    length = x.shape[1]
    p = (max(length, patch_length) - patch_length) // stride + 1
    start = length - (patch_length + stride * (p - 1))
    win = x[:, start:].unfold(1, patch_length, stride)  # [B, P, C, patch_length]
    return _logical(win.permute(1, 0, 2, 3).contiguous())


# -- model outputs ------------------------------------------------------------------------------
@dataclass
class TTMModelOutput(ModelOutput):
    """Backbone output: last hidden state [B, C, P, D], hidden states, patches, loc, scale."""

    last_hidden_state: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None
    patch_input: torch.Tensor | None = None
    loc: torch.Tensor | None = None
    scale: torch.Tensor | None = None


@dataclass
class TTMForPredictionOutput(ModelOutput):
    """Forecast output, field names as the reference's ``TinyTimeMixerForPredictionOutput``."""

    loss: torch.Tensor | None = None
    prediction_outputs: torch.Tensor | None = None
    backbone_hidden_state: torch.Tensor | None = None
    decoder_hidden_state: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None
    loc: torch.Tensor | None = None
    scale: torch.Tensor | None = None


# -- modules ---------------------------------------------------------------------------------
class TTMPreTrainedModel(PreTrainedModel):
    config_class = TTMConfig
    base_model_prefix = "model"
    main_input_name = "past_values"
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        # init_linear / init_embed "pytorch" (the reference default) = torch's own init.
        cfg = self.config
        if isinstance(module, nn.LayerNorm | nn.BatchNorm1d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if cfg.init_linear == "normal":
                nn.init.normal_(module.weight, std=cfg.init_std)
                nn.init.zeros_(module.bias)
            elif cfg.init_linear == "uniform":
                nn.init.uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif cfg.init_linear == "xavier_uniform":
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            else:
                module.reset_parameters()
        elif isinstance(module, nn.Embedding):
            if cfg.init_embed == "uniform":
                nn.init.uniform_(module.weight)
            elif cfg.init_embed == "xavier_uniform":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.normal_(module.weight)
        elif isinstance(module, PositionalEncoding) and cfg.positional_encoding_type == "random":
            nn.init.normal_(module.position_enc, std=0.1)


class PositionalEncoding(nn.Module):
    """Added to the patch embeddings when ``use_positional_encoding`` (sincos or learned)."""

    def __init__(self, cfg: TTMConfig) -> None:
        super().__init__()
        p, d = cfg.num_patches, cfg.d_model
        if cfg.positional_encoding_type == "random":
            self.position_enc = nn.Parameter(torch.randn(p, d))
            return
        pos = torch.arange(p, dtype=torch.float32).unsqueeze(1)
        inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * -(math.log(10000.0) / d))
        pe = torch.zeros(p, d)
        pe[:, 0::2] = torch.sin(pos * inv)
        pe[:, 1::2] = torch.cos(pos * inv)[:, : d // 2]
        pe = (pe - pe.mean()) / (pe.std() * 10)
        self.position_enc = nn.Parameter(pe, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, P, D] + the [P, D] encoding (computed on the patch-major storage)."""
        return _logical(_pm(x) + self.position_enc.unsqueeze(1).unsqueeze(1))


class TTMEncoder(nn.Module):
    """Patch embedding, optional resolution prefix, and the (adaptive-patching) mixer stack."""

    def __init__(self, cfg: TTMConfig) -> None:
        super().__init__()
        self.d_model = cfg.d_model
        self.patcher = nn.Linear(cfg.patch_length, cfg.d_model)
        self.positional_encoder = PositionalEncoding(cfg) if cfg.use_positional_encoding else None
        self.mlp_mixer_encoder = MixerStack(_backbone_dims(cfg), cfg.adaptive_patching_levels)
        self.resolution_prefix_tuning = bool(cfg.resolution_prefix_tuning)
        self.vocab = cfg.frequency_token_vocab_size
        if self.resolution_prefix_tuning:
            mid = (cfg.patch_length + cfg.d_model) // 2
            self.freq_mod = nn.Sequential(
                nn.Embedding(cfg.frequency_token_vocab_size, cfg.patch_length),
                nn.Linear(cfg.patch_length, mid),
                nn.GELU(),
                nn.Linear(mid, cfg.d_model),
            )

    def forward(
        self,
        patches: torch.Tensor,
        freq_token: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        h = self.patcher(_pm(patches))  # [P, B, C, D]
        b, c = patches.shape[:2]
        if self.resolution_prefix_tuning:
            tokens = _check_freq_token(freq_token, b, self.vocab, h.device)
            prefix = self.freq_mod(tokens).view(1, b, 1, self.d_model)
            h = torch.cat((prefix.expand(-1, -1, c, -1), h), dim=0)
        h = _logical(h)
        if self.positional_encoder is not None:
            h = self.positional_encoder(h)
        return self.mlp_mixer_encoder(h, output_hidden_states)


def _as_series(name: str, values: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A [batch, time, channels] tensor in the model's dtype from what users pass: a tensor
    of any floating dtype, a numpy array, a pandas DataFrame [time, channels] (one series;
    a batch of one) or a pandas Series [time] (one series of one channel)."""
    is_frame = hasattr(values, "to_numpy") and hasattr(values, "columns")
    is_pd_series = type(values).__name__ == "Series" and type(values).__module__.startswith(
        "pandas"
    )
    if is_frame or is_pd_series:
        try:
            array = values.to_numpy(dtype="float64")
        except (TypeError, ValueError) as exc:
            what = "DataFrame's columns" if is_frame else "Series' values"
            raise TypeError(f"{name}: the {what} must all be numeric ({exc})") from None
        values = torch.tensor(array)  # a copy: pandas may hand out read-only views
        values = values.unsqueeze(0) if is_frame else values.view(1, -1, 1)
    elif type(values).__module__ == "numpy" and hasattr(values, "dtype"):
        values = torch.from_numpy(values)
    if not isinstance(values, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, numpy array, pandas DataFrame or Series, got "
            f"{type(values).__name__}"
        )
    if values.is_floating_point() and values.dtype != dtype:
        values = values.to(dtype)  # float64 data into a float32 model, as users pass it
    return values.to(device)


def _check_freq_token(
    freq_token: torch.Tensor | int | None, batch: int, vocab: int, device: torch.device
) -> torch.Tensor:
    if freq_token is None:
        raise ValueError(
            "Expecting freq_token in forward: this model uses resolution prefix tuning; pass "
            "freq_token (shape [batch], e.g. frequency_token('h') = 7 for hourly data)"
        )
    tokens = torch.as_tensor(freq_token, device=device)
    if tokens.dim() == 0:
        tokens = tokens.expand(batch)
    tokens = tokens.reshape(-1).long()
    if tokens.numel() != batch:
        raise ValueError(f"freq_token has {tokens.numel()} entries for a batch of {batch}")
    if bool(((tokens < 0) | (tokens >= vocab)).any()):
        raise ValueError(
            f"freq_token values {sorted(set(tokens.tolist()))} outside the vocabulary "
            f"0..{vocab - 1} "
            "(frequency_token_vocab_size)"
        )
    return tokens


class TTMModel(TTMPreTrainedModel):
    """The TTM backbone: scaler -> patching -> encoder. Returns :class:`TTMModelOutput`."""

    def __init__(self, config: TTMConfig) -> None:
        super().__init__(config)
        self.encoder = TTMEncoder(config)
        self.post_init()

    def forward(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = False,
        return_dict: bool | None = None,
        freq_token: torch.Tensor | None = None,
    ) -> TTMModelOutput:
        cfg = self.config
        observed = None if past_observed_mask is None else past_observed_mask.to(past_values.dtype)
        if cfg.scaling in ("std", True):
            scaled, loc, scale = std_scale(past_values, observed)
        elif cfg.scaling == "mean":
            if observed is None:
                observed = torch.ones_like(past_values)
            scaled, loc, scale = mean_scale(past_values, observed)
        else:
            scaled = past_values
            loc = torch.zeros_like(past_values[:, :1])
            scale = torch.ones_like(past_values[:, :1])
        patches = patchify(scaled, cfg.patch_length, cfg.patch_stride)
        last, hidden = self.encoder(patches, freq_token, bool(output_hidden_states))
        return TTMModelOutput(
            last_hidden_state=last, hidden_states=hidden, patch_input=patches, loc=loc, scale=scale
        )


class CategoricalEmbedding(nn.Module):
    """Static categorical values -> one extra decoder "channel" each, repeated over patches."""

    def __init__(self, vocab_sizes: list[int], d_model: int, num_patches: int) -> None:
        super().__init__()
        self.embedding_layers = nn.ModuleList(nn.Embedding(v, d_model) for v in vocab_sizes)
        self.num_patches = num_patches

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if values.dim() != 2 or values.shape[1] != len(self.embedding_layers):
            raise ValueError(
                f"static_categorical_values must be [batch, {len(self.embedding_layers)}], "
                f"got {tuple(values.shape)}"
            )
        emb = torch.stack(
            [layer(values[:, i].long()) for i, layer in enumerate(self.embedding_layers)], dim=1
        )
        return emb.unsqueeze(2).expand(-1, -1, self.num_patches, -1)


class TTMDecoder(nn.Module):
    """Adapter D -> decoder_d_model, optional raw-patch residual, then a small mixer stack in
    ``decoder_mode`` (common_channel for pretraining, mix_channel for fine-tuning)."""

    def __init__(self, cfg: TTMConfig) -> None:
        super().__init__()
        self.num_input_channels = cfg.num_input_channels
        self.prefix = bool(cfg.resolution_prefix_tuning)
        self.adapter = (
            nn.Linear(cfg.d_model, cfg.decoder_d_model)
            if cfg.d_model != cfg.decoder_d_model
            else None
        )
        self.decoder_raw_residual = bool(cfg.decoder_raw_residual)
        if self.decoder_raw_residual:
            self.decoder_raw_embedding = nn.Linear(cfg.patch_length, cfg.decoder_d_model)
        n_cat = len(cfg.categorical_vocab_size_list or [])
        dims = _replace(
            _backbone_dims(cfg),
            d_model=cfg.decoder_d_model,
            num_layers=cfg.decoder_num_layers,
            dropout=cfg.head_dropout,
            mode=cfg.decoder_mode,
            num_channels=cfg.num_input_channels + n_cat,
        )
        self.decoder_cat_embedding_layer = (
            CategoricalEmbedding(
                cfg.categorical_vocab_size_list, cfg.decoder_d_model, cfg.num_patches
            )
            if cfg.categorical_vocab_size_list
            else None
        )
        self.decoder_block = MixerStack(dims, cfg.decoder_adaptive_patching_levels)

    def forward(
        self,
        hidden: torch.Tensor,
        patch_input: torch.Tensor,
        output_hidden_states: bool = False,
        static_categorical_values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        states: list[torch.Tensor] | None = [] if output_hidden_states else None
        x = hidden
        if self.adapter is not None:
            x = _logical(self.adapter(_pm(x)))  # on the patch-major storage, no copy
            if states is not None:
                states.append(x)
        if self.decoder_raw_residual:
            raw = patch_input
            if self.prefix and raw.shape[-2] == x.shape[-2] - 1:
                raw = F.pad(raw, (0, 0, 1, 0))  # a zero patch in the prefix slot
            x = _logical(_pm(x) + self.decoder_raw_embedding(_pm(raw)))
            if states is not None:
                states.append(x)
        if self.decoder_cat_embedding_layer is not None:
            if static_categorical_values is None:
                raise ValueError(
                    "static_categorical_values is required: the config sets "
                    "categorical_vocab_size_list"
                )
            x = torch.cat((x, self.decoder_cat_embedding_layer(static_categorical_values)), dim=1)
        x, inner = self.decoder_block(x, output_hidden_states)
        if states is not None and inner is not None:
            states.extend(inner)
        if self.decoder_cat_embedding_layer is not None:
            x = x[:, : self.num_input_channels]
            if states is not None:
                states.append(x)
        return x, states


class ForecastChannelMixer(nn.Module):
    """Exogenous infusion and forecast reconciliation (``enable_forecast_channel_mixing``).

    The base forecasts of the target channels are joined with the known future exogenous
    values; every forecast step sees a window of +-``fcm_context_length`` steps (the last
    context values prepended, zeros appended), optionally passes a mini mixer, a gate, and a
    Linear back to the target channels, added to the base forecast (residual).
    """

    def __init__(self, cfg: TTMConfig, prediction_length: int) -> None:
        super().__init__()
        self.ctx = cfg.fcm_context_length
        self.scl = 2 * self.ctx + 1
        self.prediction_length = prediction_length
        self.prediction_channel_indices = cfg.prediction_channel_indices
        self.exogenous_channel_indices = cfg.exogenous_channel_indices
        n_pred = cfg.num_output_channels
        n_exog = len(cfg.exogenous_channel_indices or [])
        total = n_pred + n_exog
        self.use_mixer = bool(cfg.fcm_use_mixer)
        features = self.scl
        if self.use_mixer:
            features = 2 * self.scl
            # The mixer treats channels as patches and forecast steps as its "channels".
            dims = _Dims(
                num_patches=total,
                d_model=features,
                num_channels=prediction_length,
                num_layers=cfg.fcm_mix_layers,
                mode="common_channel",
                dropout=cfg.head_dropout,
                expansion=cfg.expansion_factor,
                gated_attn=cfg.fcm_gated_attn,
                norm_mlp=cfg.norm_mlp,
                norm_eps=cfg.norm_eps,
                self_attn=cfg.self_attn,
                self_attn_heads=cfg.self_attn_heads,
            )
            self.exog_mixer = MixerStack(dims, 0)
            self.fcm_embedding = nn.Linear(self.scl, features)
        self.mlp = nn.Linear(total * features, n_pred)
        self.fcm_gating_block = (
            GatedAttention(total * features, total * features) if cfg.fcm_gated_attn else None
        )
        self.prepend_past = bool(cfg.fcm_prepend_past)
        off = cfg.fcm_prepend_past_offset
        self.past_slice = slice(-self.ctx, None) if off is None else slice(-(off + self.ctx), -off)

    def forward(
        self,
        base: torch.Tensor,
        past_values: torch.Tensor,
        future_values: torch.Tensor | None,
    ) -> torch.Tensor:
        pred_idx, exog_idx = self.prediction_channel_indices, self.exogenous_channel_indices
        past = past_values[:, self.past_slice]
        prepend = past if pred_idx is None else past[..., pred_idx]
        x = base
        if exog_idx:
            if future_values is None:
                raise ValueError(
                    "future_values is required: the model has exogenous channels "
                    f"{exog_idx} whose future values must be given (targets may be zeros)"
                )
            x = torch.cat((base, future_values[:, : base.shape[1], exog_idx]), dim=-1)
            prepend = torch.cat((prepend, past[..., exog_idx]), dim=-1)
        if self.ctx > 0:
            pad = torch.zeros(x.shape[0], self.ctx, x.shape[2], device=x.device, dtype=x.dtype)
            head = prepend if self.prepend_past else pad
            ext = torch.cat((head, x, pad), dim=1)  # [B, F + 2ctx, n]
            win = ext.unfold(1, self.scl, 1)  # [B, F, n, scl]
            if win.shape[1] != self.prediction_length:
                raise ValueError(
                    f"forecast has {win.shape[1]} steps, the channel mixer expects "
                    f"{self.prediction_length}"
                )
            if self.use_mixer:
                win, _ = self.exog_mixer(self.fcm_embedding(win))
            y = win.flatten(start_dim=2)
        else:
            y = x
        if self.fcm_gating_block is not None:
            y = self.fcm_gating_block(y)
        return self.mlp(y) + base


class TTMHead(nn.Module):
    """flatten(P * D) -> dropout -> Linear -> prediction_length; channel selection, length
    filter, then forecast channel mixing."""

    def __init__(self, cfg: TTMConfig) -> None:
        super().__init__()
        width = cfg.decoder_d_model if cfg.use_decoder else cfg.d_model
        self.prediction_channel_indices = cfg.prediction_channel_indices
        self.prediction_filter_length = cfg.prediction_filter_length
        self.dropout_layer = nn.Dropout(cfg.head_dropout)
        self.base_forecast_block = nn.Linear(cfg.num_patches * width, cfg.prediction_length)
        self.fcm_block = (
            ForecastChannelMixer(cfg, cfg.output_length)
            if cfg.enable_forecast_channel_mixing
            else None
        )

    def forward(
        self,
        hidden: torch.Tensor,
        past_values: torch.Tensor,
        future_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        y = self.base_forecast_block(self.dropout_layer(hidden.flatten(start_dim=-2)))
        y = y.transpose(-1, -2)  # [B, F, C]
        if self.prediction_channel_indices is not None:
            y = y[..., self.prediction_channel_indices]
        if self.prediction_filter_length is not None:
            y = y[:, : self.prediction_filter_length]
        if self.fcm_block is not None:
            y = self.fcm_block(y, past_values, future_values)
        return y


def _pinball(pred: torch.Tensor, target: torch.Tensor, q: float) -> torch.Tensor:
    err = target - pred
    return torch.maximum(q * err, (q - 1) * err).mean()


def forecast_loss(
    name: str | None,
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    quantile: float = 0.5,
    huber_delta: float = 1.0,
) -> torch.Tensor | None:
    """The reference's losses: "mse" (default), "mae", "pinball" (quantile), "huber"."""
    if name is None:
        return None
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "mae":
        return F.l1_loss(pred, target)
    if name == "pinball":
        return _pinball(pred, target, quantile)
    if name == "huber":
        return F.huber_loss(pred, target, delta=huber_delta)
    raise ValueError(f"loss must be one of 'mse', 'mae', 'pinball', 'huber' or None, got {name!r}")


class TTMForPrediction(TTMPreTrainedModel):
    """Tiny Time Mixer forecaster: ``model(past_values).prediction_outputs`` is [B, F, C_out].

    The forward signature and output names follow the reference's
    ``TinyTimeMixerForPrediction``. In ``common_channel`` mode (encoder and decoder) any number
    of input channels is accepted, since weights are shared across channels.
    """

    def __init__(self, config: TTMConfig) -> None:
        if not isinstance(config, TTMConfig):
            raise TypeError(f"config must be a TTMConfig, got {type(config).__name__}")
        super().__init__(config)
        self.backbone = TTMModel(config)
        self.decoder = TTMDecoder(config) if config.use_decoder else None
        self.head = TTMHead(config)
        self.post_init()

    # -- fine-tuning recipe -----------------------------------------------------------------
    def freeze_backbone(self, freeze: bool = True) -> int:
        """Stop (or restart) gradients into the backbone; returns the parameters affected."""
        if not isinstance(freeze, bool):
            raise TypeError(f"freeze must be a bool, got {freeze!r}")
        n = 0
        for p in self.backbone.parameters():
            p.requires_grad_(not freeze)
            n += p.numel()
        return n

    def set_decoder_mode(self, mode: str, num_input_channels: int | None = None) -> None:
        """Switch the decoder to ``"mix_channel"`` (adds fresh channel mixers before each
        decoder layer, as the reference does when a checkpoint is loaded with
        ``decoder_mode="mix_channel"``) or back to ``"common_channel"``.

        The pretrained patch and feature mixers of the decoder are kept.
        """
        if mode not in ("common_channel", "mix_channel"):
            raise ValueError(f"mode must be 'common_channel' or 'mix_channel', got {mode!r}")
        if self.decoder is None:
            raise ValueError("this model has no decoder (use_decoder=False)")
        channels = (
            self.config.num_input_channels if num_input_channels is None else num_input_channels
        )
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"num_input_channels must be a positive int, got {channels!r}")
        n_cat = len(self.config.categorical_vocab_size_list or [])
        for layer in self.decoder.decoder_block.layers():
            layer.set_mode(mode, channels + n_cat)
        self.config.decoder_mode = mode
        self.config.num_input_channels = channels
        self.decoder.num_input_channels = channels

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        past_values: torch.Tensor,
        future_values: torch.Tensor | None = None,
        past_observed_mask: torch.Tensor | None = None,
        future_observed_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = False,
        return_loss: bool = True,
        return_dict: bool | None = None,
        freq_token: torch.Tensor | None = None,
        static_categorical_values: torch.Tensor | None = None,
        metadata: Any = None,
    ) -> TTMForPredictionOutput:
        cfg = self.config
        dtype = next(self.parameters()).dtype
        past_values = _as_series("past_values", past_values, dtype, self.device)
        if future_values is not None:
            future_values = _as_series("future_values", future_values, dtype, self.device)
        if isinstance(freq_token, str):  # a frequency string such as "h" or "15min"
            freq_token = torch.tensor(frequency_token(freq_token))
        past_values = self._check_inputs(past_values, past_observed_mask, future_values)
        if past_observed_mask is not None:
            past_observed_mask = past_observed_mask[:, -cfg.context_length :]
        out = self.backbone(
            past_values,
            past_observed_mask=past_observed_mask,
            output_hidden_states=output_hidden_states,
            freq_token=freq_token,
        )
        hidden_states = out.hidden_states
        dec = out.last_hidden_state
        if self.decoder is not None:
            dec, dec_states = self.decoder(
                dec, out.patch_input, bool(output_hidden_states), static_categorical_values
            )
            if hidden_states is not None and dec_states:
                hidden_states.extend(dec_states)
        y_hat = self.head(dec, past_values=past_values, future_values=future_values)

        idx = cfg.prediction_channel_indices
        loc = out.loc if idx is None else out.loc[..., idx]
        scale = out.scale if idx is None else out.scale[..., idx]
        y_hat = y_hat * scale + loc

        loss = None
        if future_values is not None and return_loss and cfg.loss is not None:
            target = future_values[:, : y_hat.shape[1]]
            mask = (
                None if future_observed_mask is None else future_observed_mask[:, : y_hat.shape[1]]
            )
            if idx is not None and target.shape[2] == cfg.num_input_channels != len(idx):
                target = target[..., idx]
                mask = None if mask is None else mask[..., idx]
            if target.shape != y_hat.shape:
                raise ValueError(
                    f"future_values has shape {tuple(future_values.shape)}; the forecast is "
                    f"{tuple(y_hat.shape)} (all input channels or only the prediction channels)"
                )
            if mask is not None:
                keep = mask.bool()
                loss = forecast_loss(
                    cfg.loss,
                    y_hat[keep],
                    target[keep],
                    quantile=cfg.quantile,
                    huber_delta=cfg.huber_delta,
                )
            else:
                loss = forecast_loss(
                    cfg.loss, y_hat, target, quantile=cfg.quantile, huber_delta=cfg.huber_delta
                )
        return TTMForPredictionOutput(
            loss=loss,
            prediction_outputs=y_hat,
            backbone_hidden_state=out.last_hidden_state,
            decoder_hidden_state=dec,
            hidden_states=hidden_states,
            loc=loc,
            scale=scale,
        )

    def _check_inputs(
        self,
        past_values: torch.Tensor,
        past_observed_mask: torch.Tensor | None,
        future_values: torch.Tensor | None,
    ) -> torch.Tensor:
        cfg = self.config
        if not isinstance(past_values, torch.Tensor):
            raise TypeError(f"past_values must be a torch.Tensor, got {type(past_values).__name__}")
        if past_values.dim() != 3:
            raise ValueError(
                "past_values must have shape [batch, context_length, channels], got "
                f"{tuple(past_values.shape)}"
            )
        if not past_values.is_floating_point():
            raise TypeError(f"past_values must be a floating tensor, got {past_values.dtype}")
        if past_values.shape[1] < cfg.context_length:
            raise ValueError(
                f"past_values has {past_values.shape[1]} time steps; the model needs "
                f"context_length={cfg.context_length} (it is fixed by the weights)"
            )
        past_values = past_values[:, -cfg.context_length :]
        c = past_values.shape[2]
        if self._needs_exact_channels() and c != cfg.num_input_channels:
            raise ValueError(
                f"past_values has {c} channels but the model was configured with "
                f"num_input_channels={cfg.num_input_channels} (needed by mix_channel mode, channel "
                "indices or forecast channel mixing)"
            )
        if not bool(torch.isfinite(past_values).all()):
            raise ValueError(
                "past_values contains NaN or inf: replace missing values (e.g. with 0) and mark "
                "them with past_observed_mask=0 so the scaler ignores them"
            )
        if (
            past_observed_mask is not None
            and past_observed_mask.shape[:1] + past_observed_mask.shape[2:]
            != past_values.shape[:1] + past_values.shape[2:]
        ):
            raise ValueError(
                f"past_observed_mask has shape {tuple(past_observed_mask.shape)}, past_values "
                f"{tuple(past_values.shape)}"
            )
        if future_values is not None:
            if future_values.dim() != 3 or future_values.shape[0] != past_values.shape[0]:
                raise ValueError(
                    "future_values must have shape [batch, prediction_length, channels], got "
                    f"{tuple(future_values.shape)}"
                )
            if future_values.shape[1] < cfg.output_length:
                raise ValueError(
                    f"future_values has {future_values.shape[1]} steps, fewer than the forecast's "
                    f"{cfg.output_length}"
                )
            if cfg.exogenous_channel_indices and future_values.shape[2] != cfg.num_input_channels:
                raise ValueError(
                    f"future_values must carry all {cfg.num_input_channels} channels (exogenous "
                    f"ones at {cfg.exogenous_channel_indices}), got {future_values.shape[2]}"
                )
            if not bool(torch.isfinite(future_values).all()):
                raise ValueError(
                    "future_values contains NaN or inf: replace them and pass "
                    "future_observed_mask=0 there"
                )
        return past_values

    def _needs_exact_channels(self) -> bool:
        cfg = self.config
        return (
            cfg.mode == "mix_channel"
            or (cfg.use_decoder and cfg.decoder_mode == "mix_channel")
            or cfg.prediction_channel_indices is not None
            or cfg.enable_forecast_channel_mixing
        )


# -- weight loading ----------------------------------------------------------------------------
def load_tsfm_state_dict(
    model: TTMForPrediction, state_dict: dict[str, torch.Tensor], strict: bool = True
) -> None:
    """Load a granite-tsfm ``TinyTimeMixerForPrediction`` state_dict (the names are the same)."""
    if not isinstance(model, TTMForPrediction):
        raise TypeError(f"model must be a TTMForPrediction, got {type(model).__name__}")
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    model.load_state_dict(state_dict, strict=strict)


def load_patchtsmixer_state_dict(
    model: TTMForPrediction, state_dict: dict[str, torch.Tensor]
) -> None:
    """Load a transformers ``PatchTSMixerForPrediction`` state_dict into a TTM with
    ``adaptive_patching_levels=0`` and ``use_decoder=False`` (keys ``model.`` -> ``backbone.``)."""
    if not isinstance(model, TTMForPrediction):
        raise TypeError(f"model must be a TTMForPrediction, got {type(model).__name__}")
    cfg = model.config
    if cfg.adaptive_patching_levels != 0 or cfg.use_decoder or cfg.resolution_prefix_tuning:
        raise ValueError(
            "PatchTSMixer weights fit only adaptive_patching_levels=0, use_decoder=False and "
            "resolution_prefix_tuning=False"
        )
    renamed = {
        ("backbone." + k[len("model.") :] if k.startswith("model.") else k): v
        for k, v in state_dict.items()
    }
    model.load_state_dict(renamed, strict=True)
