"""GPTQ for one layer: Hessian accumulation, damped inverse Cholesky and the lazy-batch
OBS loop (Frantar et al. 2023, Algorithm 1), plus the round-to-nearest baseline.

Follows ``IST-DASLab/gptq:gptq.py`` (``GPTQ.add_batch``, ``GPTQ.fasterquant``) step by
step, including its quirks (the per-channel grid is taken before dead columns are zeroed;
a dynamic group's grid is taken from ``W`` as updated at the last block boundary). The group
index and scale bookkeeping follows ``AutoGPTQ:auto_gptq/quantization/gptq.py``.

Same algebra, faster arithmetic: the inverse Cholesky factor comes from one Cholesky and
one triangular inverse (not the reference's Cholesky, inverse, Cholesky), and the lazy
batch has three levels (rank-1 updates in 16-column sub-blocks, GEMMs for the rest of each
block and of each 512-column outer block); the loop runs on the transposed weight (one
column of W is one contiguous row). Every quantity equals the reference's up to float
rounding; in float32 that rounding differs, and with it the rare codes sitting on a
rounding tie, so the summed loss agrees with the reference's to about 1e-4 relative (the
reference's own loss moves that much between 1 and 2 threads).
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
"""Llama's true-sequential groups: the linears quantized together, in order, inside a block."""


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
        for flag in ("sym", "desc_act", "static_groups", "act_group_aware", "true_sequential"):
            value = getattr(self, flag)
            if not isinstance(value, bool):  # "no" or 0 must not quietly mean True / False
                raise TypeError(f"{flag} must be True or False, got {value!r}")
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


def _all_finite(t: torch.Tensor) -> bool:
    # A finite sum proves every entry finite (NaN and inf propagate); only an overflowing
    # sum of finite entries needs the full elementwise check.
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not _all_finite(t):
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
        self._H: torch.Tensor | None = None  # allocated by the first add_batch
        self.nsamples = 0

    # -- Hessian ---------------------------------------------------------------------------
    @property
    def hessian(self) -> torch.Tensor:
        """``H = 2/n * sum_x x x^T`` over the ``n`` calibration sequences seen so far."""
        if self._H is None:
            self._H = torch.zeros(self.columns, self.columns, dtype=self.dtype, device=self.device)
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
        H = self.hessian
        H *= self.nsamples / (self.nsamples + t)
        self.nsamples += t
        x = math.sqrt(2 / self.nsamples) * x.to(device=self.device, dtype=self.dtype)
        H += x.t() @ x

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
        W = weight_matrix(self.layer).to(self.dtype)  # gptq_quantize works on a copy
        _check_finite(f"weight of {type(self.layer).__name__}", W)
        result = gptq_quantize(W, self.hessian, cfg)
        result.weight_shape = tuple(self.layer.weight.shape)
        result.layer_kind = self.kind
        result.seconds = time.perf_counter() - tick
        return result


# Below this size the triangular inverse is a plain solve and the products plain GEMMs.
_TRI_BASE = 128
# Sub-block width of the inner lazy batch and the target outer block width (columns).
_SUB = 16
_OUTER = 512


def _lower_times_right(C: torch.Tensor, T: torch.Tensor, out: torch.Tensor) -> None:
    """``out = C @ T`` for lower-triangular ``T``, skipping its zero upper half (recursive)."""
    k = T.shape[0]
    if k <= _TRI_BASE:
        torch.matmul(C, T, out=out)
        return
    h = k // 2
    _lower_times_right(C[:, :h], T[:h, :h], out[:, :h])
    out[:, :h].addmm_(C[:, h:], T[h:, :h])
    _lower_times_right(C[:, h:], T[h:, h:], out[:, h:])


def _lower_times_left(T: torch.Tensor, C: torch.Tensor, out: torch.Tensor) -> None:
    """``out = T @ C`` for lower-triangular ``T``, skipping its zero upper half (recursive)."""
    k = T.shape[0]
    if k <= _TRI_BASE:
        torch.matmul(T, C, out=out)
        return
    h = k // 2
    _lower_times_left(T[h:, h:], C[h:], out[h:])
    out[h:].addmm_(T[h:, :h], C[:h])
    _lower_times_left(T[:h, :h], C[:h], out[:h])


def _lower_inverse(L: torch.Tensor, out: torch.Tensor) -> None:
    """``out = L^-1`` for lower-triangular ``L`` (LAPACK ``trtri``, which torch does not
    expose): ``[[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1, D^-1]]``, recursively, with
    the triangular products done by GEMMs that skip the zero halves."""
    n = L.shape[0]
    if n <= _TRI_BASE:
        eye = torch.eye(n, dtype=L.dtype, device=L.device)
        out.copy_(torch.linalg.solve_triangular(L, eye, upper=False))
        return
    h = n // 2
    _lower_inverse(L[:h, :h], out[:h, :h])
    _lower_inverse(L[h:, h:], out[h:, h:])
    tmp = torch.empty(n - h, h, dtype=L.dtype, device=L.device)
    _lower_times_right(L[h:, :h], out[:h, :h], tmp)  # C A^-1
    _lower_times_left(out[h:, h:], tmp, out[h:, :h])  # D^-1 C A^-1
    out[h:, :h].neg_()
    out[:h, h:].zero_()


def damped_inverse_cholesky(H: torch.Tensor, damp_percent: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of ``(H + lambda I)^-1`` with ``lambda = damp * mean(diag H)``.

    The reference takes ``cholesky(cholesky_inverse(cholesky(H)), upper=True)``; here the
    same factor comes at half the flops as ``U = J L^-1 J`` with ``L = cholesky(J H J)`` and
    ``J`` the order-reversing permutation: ``J H J = L L^T`` gives
    ``H^-1 = (J L^-1 J)^T (J L^-1 J)`` with ``J L^-1 J`` upper triangular, and the Cholesky
    factor is unique.

    When a factorisation fails (H not positive definite: too few samples, low-rank or
    dead inputs) the damping doubles, up to 1.0, and a warning says so; past that a
    ``torch.linalg.LinAlgError`` is raised. Returns the factor and the damping used.
    """
    return _damped_inverse_cholesky(H, damp_percent, None)


def _damped_inverse_cholesky(
    H: torch.Tensor, damp_percent: float, perm: torch.Tensor | None
) -> tuple[torch.Tensor, float]:
    """:func:`damped_inverse_cholesky` of ``H[perm][:, perm]`` (``H`` itself when ``perm``
    is None), without forming the permuted matrix separately."""
    diag = torch.diagonal(H)
    mean_diag = torch.mean(diag if perm is None else diag[perm])
    rev = None if perm is None else perm.flip(0)
    damp = float(damp_percent)
    while True:
        # J P^T H P J, a fresh matrix either way. The factorisation reads one triangle:
        # the upper one here is H's lower one, as in the reference, should H be off
        # symmetric in the last bit (a float32 X^T X is). J H J = U^T U, so L = U^T.
        Hd = H.flip(0, 1) if rev is None else H.index_select(0, rev).index_select(1, rev)
        Hd.diagonal().add_(damp * mean_diag)
        Ut, info = torch.linalg.cholesky_ex(Hd, upper=True)
        L = Ut.mT
        del Hd, Ut
        if int(info) == 0:
            Linv = torch.empty(L.shape, dtype=L.dtype, device=L.device)  # row-major
            _lower_inverse(L, Linv)
            del L
            U = Linv.flip(0, 1)
            if _all_finite(U) and bool((torch.diagonal(U) > 0).all()):
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


def _lap(split: dict[str, float], phase: str, tick: float) -> float:
    now = time.perf_counter()
    split[phase] += now - tick
    return now


def _clamp_grid(
    scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return scale, zero, -zero, maxq - zero


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, cfg: GPTQConfig) -> QuantResult:
    """GPTQ on a weight matrix ``W`` ``[rows, cols]`` with Hessian ``H`` ``[cols, cols]``.

    Neither input is modified. Computation happens in ``W``'s dtype.
    """
    if not isinstance(cfg, GPTQConfig):
        raise TypeError(f"cfg must be a GPTQConfig, got {type(cfg).__name__}")
    for name, t in (("W", W), ("H", H)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point():
            what = (
                f"{t.dtype} tensor of shape {tuple(t.shape)}"
                if isinstance(t, torch.Tensor)
                else type(t).__name__
            )
            raise TypeError(f"{name} must be a 2-D floating-point tensor, got {what}")
    if H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(
            f"H must be [cols, cols] = {(W.shape[1], W.shape[1])} for W of shape "
            f"{tuple(W.shape)}, got {tuple(H.shape)}"
        )
    if not bool((torch.diagonal(H) != 0).any()):
        raise ValueError(
            "the Hessian is all zero: no calibration input reached this layer (were all "
            "calibration tokens masked out?); quantizing would zero every weight"
        )
    rows, cols = W.shape
    dtype = W.dtype
    dev = W.device
    tick = time.perf_counter()
    split = {"prepare": 0.0, "cholesky": 0.0, "columns": 0.0, "trailing": 0.0, "finish": 0.0}
    _check_finite("hessian", H)
    H = H.to(dtype)  # read only from here on: copied before any change
    bits, gs, B = cfg.bits, cfg.group_size, cfg.block_size
    maxq = 2**bits - 1

    # Per-channel grid, taken before dead columns are zeroed (gptq.py: find_params first).
    scale, zero = find_params(W, bits, cfg.sym)
    # The working copy, transposed: one column of W is one contiguous row of Wt.
    Wt = W.t().contiguous()

    dead = torch.diagonal(H) == 0
    if bool(dead.any()):
        H = H.clone()
        H[dead, dead] = 1
        Wt[dead] = 0

    static: list[tuple[torch.Tensor, torch.Tensor]] = []
    if cfg.static_groups:
        static = [find_params(Wt[i : i + gs].t(), bits, cfg.sym) for i in range(0, cols, gs)]

    perm: torch.Tensor | None = None
    if cfg.desc_act:
        perm = torch.argsort(torch.diagonal(H), descending=True)
    elif cfg.act_group_aware:
        perm = _gar_perm(torch.diagonal(H), gs)
    if perm is not None:
        Wt = Wt.index_select(0, perm)

    tick = _lap(split, "prepare", tick)
    Hinv, damp = _damped_inverse_cholesky(H, cfg.damp_percent, perm)
    del H
    tick = _lap(split, "cholesky", tick)

    # Outputs, transposed and in the original column order: column perm[j] of W is
    # quantized j-th and written straight to its own row.
    Qt = torch.empty_like(Wt)
    qt = torch.empty(cols, rows, dtype=torch.uint8, device=dev)
    losses_t = torch.empty_like(Wt)
    perm_list = perm.tolist() if perm is not None else None
    q_out = Qt.unbind(0)
    if perm_list is not None:
        q_out = tuple(q_out[j] for j in perm_list)
    grids: list[tuple[torch.Tensor, torch.Tensor]] = []
    dynamic = gs != -1 and not cfg.static_groups
    static_grids = [_clamp_grid(sc, z, maxq) for sc, z in static]
    if gs == -1:
        scale, zero, lo, hi = _clamp_grid(scale, zero, maxq)
    # Three-level lazy batch, the same algebra as the reference's single level: rank-1
    # updates inside sub-blocks of _SUB columns (cache-resident), one GEMM per sub-block
    # for the rest of the B-block, one per B-block for the rest of the outer block and one
    # per outer block (a multiple of B, and of the group size for dynamic groups, so every
    # group's grid still sees W as updated at its B-block boundary) for the trailing columns.
    Bo = B if not dynamic else math.lcm(B, gs)
    Bo = min(Bo * max(1, _OUTER // Bo), cols)
    e_out = torch.empty(Bo, rows, dtype=dtype, device=dev)  # (w - q) / d of the outer block
    c_buf = torch.empty(min(B, cols), rows, dtype=dtype, device=dev)  # codes, as floats
    c8_buf = torch.empty(min(B, cols), rows, dtype=torch.uint8, device=dev)

    for o1 in range(0, cols, Bo):
        o2 = min(o1 + Bo, cols)
        for i1 in range(o1, o2, B):
            i2 = min(i1 + B, o2)
            n = i2 - i1
            # Grids of the dynamic groups starting in this block, from W as updated at the
            # block boundary (the reference's quirk), before the block is touched.
            block_grids = {}
            if dynamic:
                for col in range(i1 + (-i1) % gs, i2, gs):
                    grid = find_params(Wt[col : col + gs].t(), bits, cfg.sym)
                    grids.append(grid)
                    block_grids[col] = _clamp_grid(*grid, maxq)
            W1 = Wt[i1:i2]  # updated in place: these columns are not read again
            E1, C1 = e_out[i1 - o1 : i2 - o1], c_buf[:n]
            Hinv1 = Hinv[i1:i2, i1:i2]
            w_rows, c_rows, e_rows = W1.unbind(0), C1.unbind(0), E1.unbind(0)
            d_rows = Hinv1.diagonal().unbind(0)
            zeros_at = []  # (first row of C1, zero) where the grid changes
            for s1 in range(0, n, _SUB):
                s2 = min(s1 + _SUB, n)
                for i in range(s1, s2):
                    col = i1 + i
                    if dynamic and col in block_grids:
                        scale, zero, lo, hi = block_grids[col]
                    elif static_grids:
                        src = perm_list[col] if perm_list is not None else col
                        scale, zero, lo, hi = static_grids[src // gs]
                    if not zeros_at or zeros_at[-1][1] is not zero:
                        zeros_at.append((i, zero))
                    w, c, qw, e = w_rows[i], c_rows[i], q_out[col], e_rows[i]
                    # The reference's q = clamp(round(w / s) + z, 0, maxq), s * (q - z), as
                    # c = clamp(round(w / s), -z, maxq - z) = q - z (integers: exact), s * c
                    torch.div(w, scale, out=c)
                    c.round_().clamp_(lo, hi)
                    torch.mul(c, scale, out=qw)
                    torch.sub(w, qw, out=e).div_(d_rows[i])  # (w - q) / d
                    if i + 1 < s2:  # W1[i+1:s2] -= Hinv1[i, i+1:s2] (x) err
                        W1[i + 1 : s2].addr_(Hinv1[i, i + 1 : s2], e, alpha=-1)
                if s2 < n:
                    W1[s2:].addmm_(Hinv1[s1:s2, s2:].t(), E1[s1:s2], alpha=-1)
            if i2 < o2:
                Wt[i2:o2].addmm_(Hinv[i1:i2, i2:o2].t(), E1, alpha=-1)
            ends = [a for a, _ in zeros_at[1:]] + [n]
            for (a, z), b in zip(zeros_at, ends, strict=True):
                C1[a:b].add_(z)  # the codes q
            C8 = c8_buf[:n]
            C8.copy_(C1)
            sq = torch.mul(E1, E1, out=C1).div_(2)
            if perm is None:
                qt[i1:i2].copy_(C8)
                losses_t[i1:i2].copy_(sq)
            else:
                qt.index_copy_(0, perm[i1:i2], C8)
                losses_t.index_copy_(0, perm[i1:i2], sq)
        tick = _lap(split, "columns", tick)
        if o2 < cols:
            Wt[o2:].addmm_(Hinv[o1:o2, o2:].t(), e_out[: o2 - o1], alpha=-1)
        tick = _lap(split, "trailing", tick)
    del Wt, Hinv

    g = torch.arange(cols, device=dev)
    if gs == -1:
        scales, zeros = scale.unsqueeze(0), zero.unsqueeze(0)
        g_idx = torch.zeros(cols, dtype=torch.int32, device=dev)
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

    Q, qint = Qt.t().contiguous(), qt.t().contiguous()
    losses = losses_t.t()  # [rows, cols], a view
    _lap(split, "finish", tick)
    log.debug(
        "GPTQ %dx%d: %s s",
        rows,
        cols,
        ", ".join(f"{k} {v:.3f}" for k, v in split.items()),
    )
    return QuantResult(
        Q=Q,
        qint=qint,
        scales=scales,
        zeros=zeros,
        g_idx=g_idx,
        perm=perm,
        loss=float(losses_t.sum()),
        bits=bits,
        group_size=gs,
        sym=cfg.sym,
        damp_percent=damp,
        weight_shape=(rows, cols),
        layer_kind="linear",
        losses=losses,
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
