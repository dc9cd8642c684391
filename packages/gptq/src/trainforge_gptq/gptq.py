"""GPTQ for one layer: Hessian accumulation, damped inverse Cholesky and the lazy-batch
OBS loop (Frantar et al. 2023, Algorithm 1), plus the round-to-nearest baseline.

Follows ``IST-DASLab/gptq:gptq.py`` (``GPTQ.add_batch``, ``GPTQ.fasterquant``) step by
step, including its quirks (the per-channel grid is taken before dead columns are zeroed;
a dynamic group's grid is taken from ``W`` as updated at the last block boundary). The group
index and scale bookkeeping follows ``AutoGPTQ:auto_gptq/quantization/gptq.py``.
The loop runs on the transposed weight (columns contiguous) with preallocated update
buffers; each step rounds as the reference does (product, then subtraction), only the
block-end GEMM runs transposed (float32 results may differ in the last bit).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from trainforge_gptq.quantizer import check_bits, dequantize_int, find_params, quantize_int

log = logging.getLogger(__name__)

CheckpointFormat = Literal["gptq", "gptq_v2"]
_FORMATS = ("gptq", "gptq_v2")
# Llama's true-sequential groups (gptq:llama.py:llama_sequential).
LLAMA_SEQUENTIAL = (
    ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"),
    ("self_attn.o_proj",),
    ("mlp.up_proj", "mlp.gate_proj"),
    ("mlp.down_proj",),
)


@dataclass(frozen=True)
class GPTQConfig:
    """Knobs of GPTQ.

    Defaults follow the AutoGPTQ / transformers convention (4 bits, g128, symmetric, no
    act-order) except ``damp_percent=0.01``, the paper code's value
    (``gptq:llama.py --percdamp .01``; transformers uses 0.1). :meth:`reference` gives the
    original scripts' defaults (per-channel, asymmetric).

    - ``bits``: 2, 3, 4 or 8.
    - ``group_size``: columns per grid, or -1 for one grid per output row. When it does not
      divide the input size the last group is shorter (as in the reference and AutoGPTQ).
    - ``sym``: symmetric grid (zero point fixed at ``2**(bits-1)``).
    - ``desc_act``: act-order, quantize columns by decreasing ``diag(H)`` (``--act-order``).
    - ``static_groups``: grids from the un-updated weights, before any column is quantized.
    - ``act_group_aware``: GPTQModel's GAR order, by ``diag(H)`` inside each group and groups
      by their largest entry; keeps groups contiguous (needs ``group_size > 0``).
    - ``damp_percent``: ``lambda = damp_percent * mean(diag H)``; doubled up to 1.0 when the
      Cholesky factorisation fails.
    - ``block_size``: lazy-batch width B; it changes no result (exact algebra) unless a
      dynamic group starts inside a block (``group_size`` not a multiple of it).
    - ``true_sequential``: in :func:`~trainforge_gptq.quantize_model`, quantize the groups of
      a Llama block in order so later groups see quantized inputs.
    - ``checkpoint_format``: ``"gptq"`` (v1, stores zero - 1) or ``"gptq_v2"`` (true zero).
    """

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    desc_act: bool = False
    static_groups: bool = False
    act_group_aware: bool = False
    damp_percent: float = 0.01
    block_size: int = 128
    true_sequential: bool = True
    checkpoint_format: CheckpointFormat = "gptq"

    def __post_init__(self) -> None:
        check_bits(self.bits)
        gs = self.group_size
        if isinstance(gs, bool) or not isinstance(gs, int) or not (gs == -1 or gs > 0):
            raise ValueError(
                f"group_size must be -1 (per channel) or a positive integer, got {gs!r}"
            )
        bs = self.block_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs <= 0:
            raise ValueError(f"block_size must be a positive integer, got {bs!r}")
        dp = self.damp_percent
        if isinstance(dp, bool) or not isinstance(dp, int | float) or not 0 < dp <= 1:
            raise ValueError(f"damp_percent must be in (0, 1], got {dp!r}")
        if self.checkpoint_format not in _FORMATS:
            raise ValueError(
                f"checkpoint_format must be one of {_FORMATS}, got {self.checkpoint_format!r}"
            )
        if self.static_groups and gs == -1:
            raise ValueError("static_groups=True needs group_size > 0, got group_size=-1")
        if self.act_group_aware and gs == -1:
            raise ValueError("act_group_aware=True needs group_size > 0, got group_size=-1")
        if self.act_group_aware and self.desc_act:
            raise ValueError("act_group_aware and desc_act are alternative orders; pick one")

    @classmethod
    def reference(cls, bits: int = 4, **overrides: object) -> GPTQConfig:
        """The original scripts' defaults (``gptq:opt.py`` / ``llama.py`` without flags):
        per-channel, asymmetric (``--sym`` is store_true), no act-order, damp 0.01."""
        base = dict(
            bits=bits,
            group_size=-1,
            sym=False,
            desc_act=False,
            static_groups=False,
            damp_percent=0.01,
            block_size=128,
            true_sequential=False,
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> GPTQConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class QuantResult:
    """What quantizing one layer produced.

    ``Q`` is the fake-quantized weight as a ``[rows=out, cols=in]`` matrix (Conv1D
    transposed back, Conv2d flattened) and ``qint`` its integer codes (uint8, original
    column order). ``scales`` / ``zeros`` have shape ``[n_groups, rows]``; column ``c``
    uses group ``g_idx[c]``, so ``Q[o, c] = scales[g, o] * (qint[o, c] - zeros[g, o])``.
    ``perm`` is the column order used (None without act-order); ``loss`` the reference's
    reported error, ``1/2 * sum((w - q)^2 / d^2)``; ``damp_percent`` the damping that the
    Cholesky factorisation finally accepted.
    """

    Q: torch.Tensor
    qint: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    perm: torch.Tensor | None
    loss: float
    bits: int
    group_size: int
    sym: bool
    damp_percent: float
    weight_shape: tuple[int, ...]
    layer_kind: str
    seconds: float = 0.0
    losses: torch.Tensor | None = field(default=None, repr=False)

    def weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``Q`` in the layer's own weight layout (Conv1D ``[in, out]``, Conv2d 4-D)."""
        w = self.Q.t() if self.layer_kind == "conv1d" else self.Q
        w = w.reshape(self.weight_shape)
        return w if dtype is None else w.to(dtype)

    def dequantize(self) -> torch.Tensor:
        """``scales[g_idx] * (qint - zeros[g_idx])``, which equals ``Q`` exactly."""
        s = self.scales[self.g_idx.long()].t()
        z = self.zeros[self.g_idx.long()].t()
        return dequantize_int(self.qint.to(s.dtype), s, z)


def _layer_kind(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return "linear"
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f"grouped Conv2d (groups={layer.groups}) is not supported")
        return "conv2d"
    if type(layer).__name__ == "Conv1D" and hasattr(layer, "nf"):  # transformers' GPT-2 Conv1D
        return "conv1d"
    raise TypeError(
        f"layer must be nn.Linear, nn.Conv2d or transformers' Conv1D, got {type(layer).__name__}"
    )


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as ``[rows=out, cols=in]`` (a view or a copy, not to be edited)."""
    kind = _layer_kind(layer)
    w = layer.weight.detach()
    if kind == "conv2d":
        return w.flatten(1)
    if kind == "conv1d":
        return w.t()
    return w


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s); GPTQ needs finite values")


class GPTQ:
    """GPTQ state for one layer: ``add_batch`` the layer's inputs, then :meth:`quantize`.

    ``dtype`` is the precision of ``H`` and of the quantization loop (float32 as in the
    reference; float64 for exact checks). The layer itself is never modified.
    """

    def __init__(self, layer: nn.Module, *, dtype: torch.dtype = torch.float32) -> None:
        self.kind = _layer_kind(layer)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.layer = layer
        self.dtype = dtype
        w = weight_matrix(layer)
        self.rows, self.columns = int(w.shape[0]), int(w.shape[1])
        self.device = w.device
        self._H = torch.zeros(self.columns, self.columns, dtype=dtype, device=self.device)
        self.nsamples = 0

    # -- Hessian ---------------------------------------------------------------------------
    @property
    def hessian(self) -> torch.Tensor:
        """``H = 2/n * sum_x x x^T`` over the ``n`` calibration sequences seen so far."""
        return self._H

    @hessian.setter
    def hessian(self, H: torch.Tensor) -> None:
        if not isinstance(H, torch.Tensor):
            raise TypeError(f"hessian must be a torch.Tensor, got {type(H).__name__}")
        if tuple(H.shape) != (self.columns, self.columns):
            raise ValueError(
                f"hessian must have shape {(self.columns, self.columns)}, got {tuple(H.shape)}"
            )
        _check_finite("hessian", H)
        self._H = H.detach().to(self.dtype, copy=True)
        self.nsamples = max(self.nsamples, 1)

    @torch.no_grad()
    def add_batch(
        self,
        inp: torch.Tensor,
        out: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of layer inputs to ``H`` (``gptq:gptq.py:GPTQ.add_batch``).

        ``inp`` is ``[batch, ..., in]`` for Linear / Conv1D (``[tokens, in]`` counts as one
        sequence) and ``[batch, C, H, W]`` for Conv2d (unfolded as the layer does).
        ``mask`` (``[batch, seq]``, Linear / Conv1D) drops padding tokens. ``n`` counts
        sequences, not tokens, as in the reference. ``out`` is accepted for hook
        compatibility and ignored.
        """
        del out
        if not isinstance(inp, torch.Tensor) or not inp.is_floating_point():
            raise TypeError(
                f"inp must be a floating-point torch.Tensor, got {type(inp).__name__}"
                + (f" of {inp.dtype}" if isinstance(inp, torch.Tensor) else "")
            )
        _check_finite("inp (layer activations)", inp)
        if inp.dim() == 2:
            inp = inp.unsqueeze(0)
        t = inp.shape[0]
        if self.kind == "conv2d":
            if inp.dim() != 4:
                raise ValueError(f"Conv2d inputs must be [batch, C, H, W], got {tuple(inp.shape)}")
            if mask is not None:
                raise ValueError("mask is only supported for Linear / Conv1D inputs")
            layer = self.layer
            unfold = nn.Unfold(
                layer.kernel_size,
                dilation=layer.dilation,  # type: ignore[arg-type]
                padding=layer.padding,
                stride=layer.stride,
            )  # type: ignore[arg-type]
            x = unfold(inp).permute(1, 0, 2).flatten(1).t()  # [tokens, cols]
        else:
            if inp.shape[-1] != self.columns:
                raise ValueError(
                    f"inp's last dimension must be the layer's input size {self.columns}, "
                    f"got shape {tuple(inp.shape)}"
                )
            if mask is not None:
                if tuple(mask.shape) != tuple(inp.shape[:-1]):
                    raise ValueError(
                        f"mask must have shape {tuple(inp.shape[:-1])}, got {tuple(mask.shape)}"
                    )
                x = inp[mask.to(torch.bool)]
            else:
                x = inp.reshape(-1, self.columns)
        if x.shape[1] != self.columns:
            raise ValueError(f"unfolded input has {x.shape[1]} columns, expected {self.columns}")
        self._H *= self.nsamples / (self.nsamples + t)
        self.nsamples += t
        x = math.sqrt(2 / self.nsamples) * x.to(device=self.device, dtype=self.dtype)
        self._H += x.t() @ x

    # -- quantization ----------------------------------------------------------------------
    @torch.no_grad()
    def quantize(self, config: GPTQConfig | None = None) -> QuantResult:
        """Run GPTQ (``gptq:gptq.py:GPTQ.fasterquant``) and return a :class:`QuantResult`."""
        cfg = GPTQConfig() if config is None else config
        if not isinstance(cfg, GPTQConfig):
            raise TypeError(f"config must be a GPTQConfig, got {type(cfg).__name__}")
        if self.nsamples == 0:
            raise ValueError("no calibration data: call add_batch() (or set .hessian) first")
        tick = time.perf_counter()
        W = weight_matrix(self.layer).to(self.dtype, copy=True)
        _check_finite(f"weight of {type(self.layer).__name__}", W)
        result = gptq_quantize(W, self._H, cfg)
        result.weight_shape = tuple(self.layer.weight.shape)
        result.layer_kind = self.kind
        result.seconds = time.perf_counter() - tick
        return result


def damped_inverse_cholesky(H: torch.Tensor, damp_percent: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of ``(H + lambda I)^-1`` with ``lambda = damp * mean(diag H)``.

    When a factorisation fails (H not positive definite: too few samples, low-rank or
    dead inputs) the damping doubles, up to 1.0, and a warning says so; past that a
    ``torch.linalg.LinAlgError`` is raised. Returns the factor and the damping used.
    """
    mean_diag = torch.mean(torch.diagonal(H))
    damp = float(damp_percent)
    while True:
        Hd = H.clone()
        Hd.diagonal().add_(damp * mean_diag)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0 and bool(torch.isfinite(U).all()):
                return U, damp
        if damp >= 1.0:
            raise torch.linalg.LinAlgError(
                f"Cholesky of the damped Hessian failed even at damp_percent={damp}; "
                "add calibration samples or check for NaN/degenerate inputs"
            )
        new = min(1.0, damp * 2)
        log.warning("GPTQ: Cholesky failed at damp_percent=%g; retrying with %g", damp, new)
        damp = new


def _gar_perm(diag: torch.Tensor, gs: int) -> torch.Tensor:
    """GAR order (GPTQModel ``gar.py``): within each group by decreasing diag(H), groups by
    their largest entry; a short last group stays last so group boundaries stay aligned."""
    cols = diag.numel()
    starts = list(range(0, cols, gs))
    full = [s for s in starts if s + gs <= cols]
    keys = torch.stack([diag[s : s + gs].max() for s in full]) if full else diag[:0]
    order = [full[int(j)] for j in torch.argsort(keys, descending=True, stable=True)]
    order += [s for s in starts if s + gs > cols]
    parts = [s + torch.argsort(diag[s : s + gs], descending=True, stable=True) for s in order]
    return torch.cat(parts)


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, cfg: GPTQConfig) -> QuantResult:
    """GPTQ on a weight matrix ``W`` ``[rows, cols]`` with Hessian ``H`` ``[cols, cols]``.

    Neither input is modified. Computation happens in ``W``'s dtype.
    """
    rows, cols = W.shape
    dtype = W.dtype
    W = W.clone()
    H = H.to(dtype, copy=True)
    bits, gs, B = cfg.bits, cfg.group_size, cfg.block_size
    maxq = 2**bits - 1
    _check_finite("hessian", H)

    # Per-channel grid, taken before dead columns are zeroed (gptq.py: find_params first).
    scale, zero = find_params(W, bits, cfg.sym)

    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    static: list[tuple[torch.Tensor, torch.Tensor]] = []
    if cfg.static_groups:
        static = [find_params(W[:, i : i + gs], bits, cfg.sym) for i in range(0, cols, gs)]

    perm: torch.Tensor | None = None
    if cfg.desc_act:
        perm = torch.argsort(torch.diagonal(H), descending=True)
    elif cfg.act_group_aware:
        perm = _gar_perm(torch.diagonal(H), gs)
    if perm is not None:
        W = W[:, perm]
        H = H[perm][:, perm]

    Hinv, damp = damped_inverse_cholesky(H, cfg.damp_percent)
    del H

    Wt = W.t().contiguous()  # [cols, rows]: one column of W is one contiguous row here
    del W
    Qt = torch.empty_like(Wt)
    qt = torch.empty(cols, rows, dtype=torch.uint8, device=Wt.device)
    losses = torch.empty_like(Wt)
    grids: list[tuple[torch.Tensor, torch.Tensor]] = []
    perm_list = perm.tolist() if perm is not None else None
    # Preallocated update buffers: fresh multi-MB temporaries per column cost page faults.
    buf = torch.empty(min(B, cols), rows, dtype=dtype, device=Wt.device)
    gbuf = torch.empty(max(cols - min(B, cols), 0), rows, dtype=dtype, device=Wt.device)

    for i1 in range(0, cols, B):
        i2 = min(i1 + B, cols)
        W1 = Wt[i1:i2].clone()
        Err1 = torch.empty_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if gs != -1:
                if cfg.static_groups:
                    src = perm_list[col] if perm_list is not None else col
                    scale, zero = static[src // gs]
                elif col % gs == 0:
                    # From W as updated at the last block boundary (the reference's quirk).
                    scale, zero = find_params(Wt[col : col + gs].t(), bits, cfg.sym)
                    grids.append((scale, zero))
            w = W1[i]
            d = Hinv1[i, i]
            q = quantize_int(w, scale, zero, maxq)
            qw = dequantize_int(q, scale, zero)
            Qt[col] = qw
            qt[col] = q.to(torch.uint8)
            err = (w - qw) / d
            # W1[i:] -= Hinv1[i, i:] (x) err: the product rounded first, then subtracted,
            # as in the reference (a fused addr_ rounds once and flips ties)
            upd = buf[: i2 - i1 - i]
            torch.mul(Hinv1[i, i:].unsqueeze(1), err.unsqueeze(0), out=upd)
            W1[i:].sub_(upd)
            Err1[i] = err
        losses[i1:i2] = Err1.square() / 2
        if i2 < cols:
            upd = gbuf[: cols - i2]
            torch.matmul(Hinv[i1:i2, i2:].t(), Err1, out=upd)
            Wt[i2:].sub_(upd)

    g = torch.arange(cols, device=Qt.device)
    if gs == -1:
        scales, zeros = scale.unsqueeze(0), zero.unsqueeze(0)
        g_idx = torch.zeros(cols, dtype=torch.int32, device=Qt.device)
    elif cfg.static_groups:
        scales = torch.stack([s for s, _ in static])
        zeros = torch.stack([z for _, z in static])
        g_idx = (g // gs).to(torch.int32)
    else:
        scales = torch.stack([s for s, _ in grids])
        zeros = torch.stack([z for _, z in grids])
        if perm is None:
            g_idx = (g // gs).to(torch.int32)
        else:
            invperm = torch.argsort(perm)
            g_idx = (invperm // gs).to(torch.int32)
            if cfg.act_group_aware:
                # Permuted group j holds exactly original group perm[j*gs]//gs: store the
                # grids in original group order so that g_idx stays c // gs.
                order = perm[::gs] // gs
                scales = scales[torch.argsort(order)]
                zeros = zeros[torch.argsort(order)]
                g_idx = (g // gs).to(torch.int32)

    Q, qint, losses = Qt.t(), qt.t(), losses.t()
    if perm is not None:
        invperm = torch.argsort(perm)
        Q, qint, losses = Q[:, invperm], qint[:, invperm], losses[:, invperm]
    return QuantResult(
        Q=Q.contiguous(),
        qint=qint.contiguous(),
        scales=scales,
        zeros=zeros,
        g_idx=g_idx,
        perm=perm,
        loss=float(losses.sum()),
        bits=bits,
        group_size=gs,
        sym=cfg.sym,
        damp_percent=damp,
        weight_shape=(rows, cols),
        layer_kind="linear",
        losses=losses.contiguous(),
    )


@torch.no_grad()
def rtn_quantize(layer: nn.Module | torch.Tensor, config: GPTQConfig | None = None) -> QuantResult:
    """Round-to-nearest baseline with the same grid code: contiguous groups of the
    unmodified weights, no error compensation (``--nearest`` in ``gptq:llama.py``).

    ``layer`` is a Linear / Conv1D / Conv2d or a ``[rows, cols]`` weight matrix.
    """
    cfg = GPTQConfig() if config is None else config
    if not isinstance(cfg, GPTQConfig):
        raise TypeError(f"config must be a GPTQConfig, got {type(cfg).__name__}")
    if isinstance(layer, torch.Tensor):
        if layer.dim() != 2 or not layer.is_floating_point():
            raise ValueError(
                f"a weight tensor must be a 2-D float matrix, got {tuple(layer.shape)}"
            )
        W, kind, shape = layer.detach(), "linear", tuple(layer.shape)
    else:
        kind = _layer_kind(layer)
        W, shape = weight_matrix(layer), tuple(layer.weight.shape)
    W = W.to(torch.float64 if W.dtype == torch.float64 else torch.float32, copy=True)
    _check_finite("weight", W)
    tick = time.perf_counter()
    _rows, cols = W.shape
    gs = cols if cfg.group_size == -1 else cfg.group_size
    maxq = 2**cfg.bits - 1
    grids = [find_params(W[:, i : i + gs], cfg.bits, cfg.sym) for i in range(0, cols, gs)]
    scales = torch.stack([s for s, _ in grids])
    zeros = torch.stack([z for _, z in grids])
    g_idx = (torch.arange(cols, device=W.device) // gs).to(torch.int32)
    s, z = scales[g_idx.long()].t(), zeros[g_idx.long()].t()
    q = quantize_int(W, s, z, maxq)
    return QuantResult(
        Q=dequantize_int(q, s, z),
        qint=q.to(torch.uint8),
        scales=scales,
        zeros=zeros,
        g_idx=g_idx,
        perm=None,
        loss=math.nan,
        bits=cfg.bits,
        group_size=cfg.group_size,
        sym=cfg.sym,
        damp_percent=math.nan,
        weight_shape=shape,
        layer_kind=kind,
        seconds=time.perf_counter() - tick,
    )
