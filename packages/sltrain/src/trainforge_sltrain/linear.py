"""The SLTrain linear layer: ``W = (alpha / rank) * B @ A + S`` with a fixed random support.

Framework-free (plain torch). The dense ``W`` is a per-call transient: the forward builds it
with the fused ``trainforge::sltrain_materialize`` op, uses it and drops it; the backward
builds it again (as the reference extension does, andyjm3/SLTrain:sparse-lora/
sparse_linear.cpp), so no ``[out, in]`` tensor is kept between forward and backward.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainforge_kernels import use_triton
from trainforge_kernels.sltrain_materialize import (
    sltrain_materialize,
    sltrain_materialize_reference,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_RANK",
    "DEFAULT_SPARSITY",
    "SLTrainLinear",
    "algorithm_costs",
    "choose_algorithm",
    "sltrain_linear_function",
    "sltrain_linear_params",
    "sparse_mac_cost",
]

# andyjm3/SLTrain:scripts/llm_pretrain/sltrain60m.sh (the LLaMA-60M recipe): --rank 128
# --sp_ratio 0.03 --lora_alpha 32. (splora/splora_model.py's own default sp_ratio is 0.01.)
DEFAULT_RANK = 128
"""Low-rank r of the reference's LLaMA-60M recipe."""
DEFAULT_SPARSITY = 0.03
"""Share of weights in the fixed random sparse support (delta) of the reference recipe."""
DEFAULT_ALPHA = 32.0
"""Scale numerator of the low-rank part (alpha / r) of the reference recipe."""

_INT32_LIMIT = 2**31  # flat positions 0 .. out*in-1 must fit in int32


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise TypeError(f"sparsity must be a float in [0, 1), got {sparsity!r}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(
            f"sparsity must be in [0, 1) (the fraction of W's entries in the sparse part; "
            f"0 gives the pure low-rank baseline), got {sparsity!r}"
        )
    return float(sparsity)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise TypeError(f"alpha must be a positive number, got {alpha!r}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    return float(alpha)


INIT_B = ("zeros", "kaiming")


def _check_init_b(init_b: Any) -> str:
    if init_b not in INIT_B:
        raise ValueError(f"init_b must be one of {INIT_B}, got {init_b!r}")
    return init_b


def _resolve_index_dtype(index_dtype: torch.dtype | None, numel: int) -> torch.dtype:
    if index_dtype is None:
        return torch.int32 if numel <= _INT32_LIMIT else torch.int64
    if index_dtype not in (torch.int32, torch.int64):
        raise TypeError(
            f"index_dtype must be torch.int32, torch.int64 or None, got {index_dtype!r}"
        )
    if index_dtype == torch.int32 and numel > _INT32_LIMIT:
        raise ValueError(
            f"index_dtype=torch.int32 cannot address a weight of {numel} entries "
            f"(more than 2**31); use torch.int64 or None"
        )
    return index_dtype


def sltrain_linear_params(
    in_features: int, out_features: int, rank: int, sparsity: float, bias: bool = True
) -> int:
    """Closed-form parameter count of one SLTrain layer: ``r(m+n) + floor(delta*m*n) [+ m]``."""
    _check_int("in_features", in_features)
    _check_int("out_features", out_features)
    _check_int("rank", rank)
    sparsity = _check_sparsity(sparsity)
    nnz = int(sparsity * (out_features * in_features))  # as the reference: ratio * (m*n)
    return rank * (in_features + out_features) + nnz + (out_features if bias else 0)


def _gathered(t: torch.Tensor) -> torch.Tensor:
    """The full tensor of a DTensor (FSDP2 / tensor-parallel shard; a collective), else ``t``."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


def _materialize(B, A, values, index, scale):
    """W through the Triton op where it runs; on CPU the torch reference directly (the same
    function, without the custom-op dispatch cost per call)."""
    if use_triton(B, A, values, index):
        return sltrain_materialize(B, A, values, index, scale)
    return sltrain_materialize_reference(B, A, values, index, scale)


ALGORITHMS = ("auto", "materialize", "factored")

# The measurements the rule is fitted to: fwd+bwd time of the factored and the materialising
# path over dense nn.Linear, square layers, float32, CPU (benchmarks/bench_linear.py
# --rounds 3, paired, order alternated, median of 3 rounds; 2026-12-05 11:22 UTC, torch 2.15,
# the project's 2-core VM idle (load 0.6-0.9), one torch thread).
# Rows: (d, tokens, rank, density, factored / dense, materialize / dense). A refit on another
# machine replaces these rows (the bench's "# auto" lines print the costs a run implies).
FIT_DATA = (
    (1024, 2048, 128, 0.03, 1.367, 1.154),
    (1024, 8192, 128, 0.03, 1.300, 1.067),
    (2048, 2048, 128, 0.03, 1.247, 1.130),
    (2048, 8192, 128, 0.03, 1.188, 1.152),
    (4096, 2048, 128, 0.03, 0.970, 1.211),
    (4096, 8192, 128, 0.03, 0.922, 1.041),
)
"""The measured ratios the ``"auto"`` rule's two costs are fitted to (see ``linear.py``)."""
FIT_TOKENS = 2048
"""The fit uses the rows at this token count (below)."""
# Reading each row as "time = multiply-adds weighted by their measured cost" (one dense-GEMM
# multiply-add = 1): the factored path's sparse multiply-add costs c = (factored/dense -
# 2r/d) / delta dense ones, 37.2 / 37.4 / 30.2 at d = 1024 / 2048 / 4096 with 2,048 tokens
# (nnz = 31,457 / 125,829 / 503,316). It falls with the layer's size, 1.75 per doubling of
# nnz (least squares of c on log2 nnz; longer CSR rows spread the per-row overhead). With
# 8,192 tokens c is 35.0 / 35.4 / 28.7; the fit uses the 2,048-token rows, where building W
# is a large enough share to measure. Building W (``4 m n r`` multiply-adds per fwd+bwd: a
# K = r GEMM writing an [m, n] output) costs (materialize/dense - 1) / (4r / 3T) = 1.85 /
# 1.56 / 2.53 dense multiply-adds each: the median is the rule's weight. With these weights
# the rule picks the faster measured algorithm in all six rows.


def _fit() -> tuple[float, float, float, tuple[int, int]]:
    rows = [row for row in FIT_DATA if row[1] == FIT_TOKENS]
    xs, cs, ws = [], [], []
    for d, tokens, rank, delta, factored, materialize in rows:
        xs.append(math.log2(int(delta * d * d)))
        cs.append((factored - 2 * rank / d) / delta)
        ws.append((materialize - 1) / (4 * rank / (3 * tokens)))
    mx, mc = sum(xs) / len(xs), sum(cs) / len(cs)
    slope = -sum((x - mx) * (c - mc) for x, c in zip(xs, cs, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    lo, hi = 2 ** min(xs), 2 ** max(xs)
    at_lo = mc + slope * (mx - min(xs))
    return at_lo, slope, statistics.median(ws), (round(lo), round(hi))


SPARSE_MAC_COST, SPARSE_MAC_COST_SLOPE, MATERIALIZE_BUILD_COST, SPARSE_MAC_COST_RANGE = _fit()
"""From :data:`FIT_DATA`: the cost of one sparse multiply-add of the factored path (torch's
CPU CSR ``S @ x^T``, its transpose and ``sampled_addmm``, with the transposes they need) in
dense-GEMM multiply-adds at the fit's smallest nnz (38.5); how much it falls per doubling of
nnz (1.75); the cost of one multiply-add of building W (1.85); the nnz range measured
(31,457 .. 503,316: :func:`sparse_mac_cost` is held constant outside it, no
extrapolation)."""


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def sparse_mac_cost(nnz: int) -> float:
    """The factored path's cost of one sparse multiply-add, in dense-GEMM multiply-adds, for
    a sparse part of ``nnz`` entries on this package's measured CPU: ``SPARSE_MAC_COST -
    SPARSE_MAC_COST_SLOPE * log2(nnz / lo)`` with nnz clamped to ``SPARSE_MAC_COST_RANGE =
    (lo, hi)``: 38.5 at d = 1024, 35.0 at 2048, 31.5 at 4096 for 3% density (a least-squares
    fit to :data:`FIT_DATA`). A fixed rule: deterministic, the same on every call and rank."""
    _check_count("nnz", nnz)
    lo, hi = SPARSE_MAC_COST_RANGE
    clamped = min(max(nnz, lo), hi)
    return SPARSE_MAC_COST - SPARSE_MAC_COST_SLOPE * math.log2(clamped / lo)


def _check_algorithm(algorithm: Any) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm


def algorithm_costs(
    tokens: int, out_features: int, in_features: int, rank: int, nnz: int
) -> tuple[float, float]:
    """Forward+backward cost of the two exact algorithms, as ``(materialize, factored)``, in
    dense-GEMM multiply-adds (dense ``nn.Linear`` costs ``3 T m n``).

    materialize: the three dense GEMMs of a linear layer, ``3 T m n``, plus building
    ``W = scale B A + S`` twice (forward, backward) and ``grad_W``'s products with A and B,
    ``4 m n r``, weighted by :data:`MATERIALIZE_BUILD_COST`.
    factored: ``x A^T B^T`` forward, ``g B``, ``(g B) A``, ``g^T (x A^T)``, ``(g B)^T x``
    backward, ``3 T r (m + n)``; the sparse product forward, its transpose backward and the
    sampled product (SDDMM) for the values' gradient, ``3 T nnz`` sparse multiply-adds
    weighted by :func:`sparse_mac_cost`.
    """
    for name, value in (("tokens", tokens), ("out_features", out_features),
                        ("in_features", in_features), ("rank", rank), ("nnz", nnz)):  # fmt: skip
        _check_count(name, value)
    m, n = out_features, in_features
    if nnz > m * n:
        raise ValueError(f"nnz must be at most out_features * in_features = {m * n}, got {nnz}")
    materialize = 3 * tokens * m * n + MATERIALIZE_BUILD_COST * 4 * m * n * rank
    factored = 3 * tokens * rank * (m + n) + sparse_mac_cost(nnz) * 3 * tokens * nnz
    return float(materialize), float(factored)


def choose_algorithm(
    tokens: int, out_features: int, in_features: int, rank: int, nnz: int, device_type="cpu"
) -> str:
    """The cheaper exact algorithm by :func:`algorithm_costs` (a fixed rule, no timing):
    ``"factored"`` or ``"materialize"``. Off the CPU always ``"materialize"`` (the Triton
    kernel; sparse GPU kernels at a few percent density are not measured here)."""
    mat, fac = algorithm_costs(tokens, out_features, in_features, rank, nnz)
    if not isinstance(device_type, str):
        raise TypeError(f"device_type must be a str such as 'cpu', got {device_type!r}")
    if device_type != "cpu" or tokens == 0:
        return "materialize"
    return "factored" if fac < mat else "materialize"


class _CSR:
    """The fixed support as CSR structures of ``S`` and ``S^T`` (built once per support)."""

    def __init__(self, index: torch.Tensor, out_features: int, in_features: int) -> None:
        flat = index.long()
        order = None
        if flat.numel() > 1 and not bool((flat[1:] >= flat[:-1]).all()):
            order = torch.argsort(flat, stable=True)
            flat = flat[order]
        rows, cols = flat // in_features, flat % in_features
        it = index.dtype  # int32 compressed indices where the support is int32
        self.order = order  # support position -> CSR position (None: already sorted)
        self.crow = _crow(rows, out_features).to(it)
        self.col = cols.to(it)
        t_order = torch.argsort(cols * out_features + rows, stable=True)
        self.t_order = t_order  # CSR(S) position -> CSR(S^T) position
        self.t_crow = _crow(cols[t_order], in_features).to(it)
        self.t_col = rows[t_order].to(it)
        self.shape = (out_features, in_features)

    def s(self, values: torch.Tensor) -> torch.Tensor:
        v = values if self.order is None else values[self.order]
        return _csr_tensor(self.crow, self.col, v, self.shape)

    def st(self, values: torch.Tensor) -> torch.Tensor:
        v = values if self.order is None else values[self.order]
        return _csr_tensor(self.t_crow, self.t_col, v[self.t_order], self.shape[::-1])

    def unsort(self, csr_values: torch.Tensor) -> torch.Tensor:
        if self.order is None:
            return csr_values
        out = torch.empty_like(csr_values)
        out[self.order] = csr_values
        return out


def _crow(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n_rows).cumsum(0)
    return crow


TOKEN_CHUNK = 2048
"""Tokens per CSR call in the factored path. torch's CPU CSR products slow down per
multiply-add on long token panels (measured: ``S @ x^T`` 0.96x a dense GEMM's time at 8,192
tokens, 0.44x per 2,048-token chunk with the chunk transposed contiguous); chunking keeps
every call at the short-panel rate."""


def _chunks(tokens: int) -> list[slice]:
    return [slice(i, min(i + TOKEN_CHUNK, tokens)) for i in range(0, tokens, TOKEN_CHUNK)]


def _csr_of(index: torch.Tensor, out_features: int, in_features: int) -> _CSR:
    """The CSR structures of a support, cached on the support tensor itself and rebuilt when
    it changes (in-place copy: ``_version``; another storage: ``data_ptr``)."""
    key = (index._version, index.data_ptr(), out_features, in_features)
    hit = getattr(index, "_sltrain_csr", None)
    if hit is None or hit[0] != key:
        hit = (key, _CSR(index, out_features, in_features))
        index._sltrain_csr = hit
    return hit[1]


def _csr_tensor(crow, col, values, shape):
    with warnings.catch_warnings():  # torch warns once that CSR support is "beta"
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _SLTrainFactoredFn(torch.autograd.Function):
    """``scale * (x A^T) B^T + x S^T + bias`` without forming W: low-rank GEMMs and CSR
    products; the values' gradient is the sampled product ``(g^T x)`` on the support
    (``torch.sparse.sampled_addmm``). Saves ``x``, ``x A^T`` (``[T, r]``) and the factors."""

    @staticmethod
    def forward(ctx, x, B, A, values, index, bias, scale):  # type: ignore[override]
        m, n = B.shape[0], A.shape[1]
        csr = _csr_of(index, m, n)
        x2 = x.reshape(-1, n)
        xa = torch.mm(x2, A.t())
        out = torch.mm(xa, B.t() * scale) if scale != 1.0 else torch.mm(xa, B.t())
        s_csr = csr.s(values)
        for c in _chunks(x2.shape[0]):
            out[c] += torch.mm(s_csr, x2[c].t().contiguous()).t()
        if bias is not None:
            out += bias
        ctx.save_for_backward(x, xa, B, A, values)
        ctx.csr, ctx.scale = csr, scale
        return out.view(*x.shape[:-1], m)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, xa, B, A, values = ctx.saved_tensors
        csr, scale = ctx.csr, ctx.scale
        need_x, need_B, need_A, need_v, _, need_bias, _ = ctx.needs_input_grad
        m, n = B.shape[0], A.shape[1]
        g2 = grad_out.reshape(-1, m).to(B.dtype)
        x2 = x.reshape(-1, n)
        grad_x = grad_B = grad_A = grad_v = grad_bias = None
        gb = torch.mm(g2, B).mul_(scale) if (need_x or need_A) else None  # [T, r]
        if need_x:
            gx = torch.mm(gb, A)
            st_csr = csr.st(values)
            for c in _chunks(g2.shape[0]):
                gx[c] += torch.mm(st_csr, g2[c].t().contiguous()).t()
            grad_x = gx.view(x.shape)
        if need_B:
            grad_B = torch.mm(g2.t(), xa).mul_(scale)
        if need_A:
            grad_A = torch.mm(gb.t(), x2)
        if need_v:
            pattern = csr.s(values.detach())
            acc = torch.zeros_like(values)  # CSR order
            for c in _chunks(g2.shape[0]):
                acc += torch.sparse.sampled_addmm(
                    pattern, g2[c].t().contiguous(), x2[c], beta=0.0
                ).values()
            grad_v = csr.unsort(acc)
        if need_bias:
            grad_bias = g2.sum(0)
        return grad_x, grad_B, grad_A, grad_v, None, grad_bias, None


def _linear(x, B, A, values, index, bias, scale, algorithm):
    if algorithm == "auto":
        autocast = torch.is_autocast_enabled(x.device.type)
        if (
            autocast
            or x.dtype not in (torch.float32, torch.float64)
            or not (x.dtype == B.dtype == A.dtype == values.dtype)
        ):
            algorithm = "materialize"
        else:
            tokens = x.numel() // x.shape[-1] if x.shape[-1] else 0
            algorithm = choose_algorithm(
                tokens, B.shape[0], A.shape[1], A.shape[0], index.numel(), x.device.type
            )
    elif algorithm == "factored" and (
        torch.is_autocast_enabled(x.device.type)
        or not (x.dtype == B.dtype == A.dtype == values.dtype)
        or (bias is not None and bias.dtype != x.dtype)
    ):
        raise ValueError(
            "algorithm='factored' needs x, B, A, values (and bias) in one dtype and no "
            "autocast; use algorithm='auto' (it materialises W in those cases)"
        )
    if algorithm == "factored":
        return _SLTrainFactoredFn.apply(x, B, A, values, index, bias, scale)
    return _SLTrainLinearFn.apply(x, B, A, values, index, bias, scale)


class _SLTrainLinearFn(torch.autograd.Function):
    """``F.linear(x, scale * B @ A + S, bias)`` saving only ``x, B, A, values, index``."""

    @staticmethod
    def forward(ctx, x, B, A, values, index, bias, scale):  # type: ignore[override]
        W = _materialize(B, A, values, index, scale)
        out = F.linear(x, W, bias)
        ctx.save_for_backward(x, B, A, values, index)
        ctx.scale = scale
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, B, A, values, index = ctx.saved_tensors
        scale = ctx.scale
        need_x, need_B, need_A, need_v, _, need_bias, _ = ctx.needs_input_grad
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        # Under autocast the forward ran in a lower precision than the parameters; the
        # backward (outside autocast) computes in the gradient's dtype and hands each input
        # its gradient in its own dtype, as the reference's autocast path does.
        dt = g2.dtype
        grad_x = grad_B = grad_A = grad_v = grad_bias = None
        if need_x:
            W = _materialize(B, A, values, index, scale)  # recomputed, never saved
            grad_x = torch.mm(g2, W.to(dt)).view(x.shape).to(x.dtype)
            del W
        if need_B or need_A or need_v:
            x2 = x.reshape(-1, x.shape[-1]).to(dt)
            grad_W = torch.mm(g2.t(), x2)  # [out, in] transient, as in the reference backward
            if need_B:
                grad_B = torch.mm(grad_W, A.t().to(dt)).mul_(scale).to(B.dtype)
            if need_A:
                grad_A = torch.mm(B.t().to(dt), grad_W).mul_(scale).to(A.dtype)
            if need_v:
                grad_v = grad_W.view(-1).index_select(0, index).to(values.dtype)
            del grad_W
        if need_bias:
            grad_bias = g2.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_B, grad_A, grad_v, None, grad_bias, None


def sltrain_linear_function(
    x: torch.Tensor,
    B: torch.Tensor,
    A: torch.Tensor,
    values: torch.Tensor,
    index: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
    algorithm: str = "auto",
) -> torch.Tensor:
    """Functional SLTrain linear: ``x @ (scale * B @ A + S)^T + bias`` without keeping W.

    ``S`` has ``values`` at the flat row-major positions ``index`` of the ``[out, in]``
    weight. Gradients flow to ``x``, ``B``, ``A``, ``values`` and ``bias``. ``algorithm``:
    ``"materialize"`` builds W per call (forward, and again in the backward),
    ``"factored"`` never forms W (low-rank GEMMs plus CSR products), ``"auto"`` picks the
    cheaper by :func:`choose_algorithm`; both are exact (equal up to rounding).
    """
    _check_algorithm(algorithm)
    for name, t in (("x", x), ("B", B), ("A", A), ("values", values), ("index", index)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() < 1 or x.shape[-1] != A.shape[-1]:
        raise ValueError(
            f"x has last dimension {x.shape[-1] if x.dim() else None}; it must equal "
            f"in_features = A.shape[1] = {A.shape[-1]}"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != B.shape[0]):
        raise ValueError(f"bias must have shape ({B.shape[0]},), got {tuple(bias.shape)}")
    return _linear(x, B, A, values, index, bias, float(scale), algorithm)


class SLTrainLinear(nn.Module):
    """A linear layer whose weight is ``(alpha / rank) * B @ A + S`` (SLTrain).

    ``B`` ``[out, rank]`` starts at zero and ``A`` ``[rank, in]`` Kaiming-uniform, so at
    initialisation the weight is the sparse part alone. ``S`` has ``int(sparsity * out * in)``
    entries on a support drawn once (uniformly without replacement, sorted, flat row-major)
    and kept fixed as the buffer ``sparse_index``; its values ``sparse_value`` are the
    trainable parameter, initialised U(-1/sqrt(in), 1/sqrt(in)). ``sparsity=0`` gives a pure
    low-rank layer (the comparison baseline). Names of parameters and buffers follow the
    reference (andyjm3/SLTrain:splora/splora_linear.py), so state dicts are interchangeable.

    ``init_b="kaiming"`` draws ``B`` Kaiming-uniform as well (as ``nn.Linear(rank, out)``),
    the initialisation of a factorised low-rank layer; use it for the pure low-rank baseline
    (``sparsity=0``), where ``B = 0`` would start the layer as the zero map.

    ``algorithm`` (``"auto"``, ``"materialize"``, ``"factored"``) chooses how the forward and
    backward compute (see :func:`sltrain_linear_function`); ``"auto"`` decides per call from
    the token count and the layer's shape by :func:`choose_algorithm`.

    ``generator`` (a CPU ``torch.Generator``) makes support and initialisation reproducible;
    without it the global RNG is used, as in the reference. ``index_dtype`` defaults to
    int32 when ``out * in <= 2**31`` (half the bytes of the reference's int64).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int = DEFAULT_RANK,
        sparsity: float = DEFAULT_SPARSITY,
        alpha: float = DEFAULT_ALPHA,
        bias: bool = True,
        *,
        generator: torch.Generator | None = None,
        index_dtype: torch.dtype | None = None,
        init_b: str = "zeros",
        algorithm: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        init_b = _check_init_b(init_b)
        self.algorithm = _check_algorithm(algorithm)
        _check_int("in_features", in_features)
        _check_int("out_features", out_features)
        _check_int("rank", rank)
        if rank > min(in_features, out_features):
            raise ValueError(
                f"rank must be in [1, min(in_features, out_features)] = "
                f"[1, {min(in_features, out_features)}], got {rank}"
            )
        sparsity = _check_sparsity(sparsity)
        alpha = _check_alpha(alpha)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {generator!r}")
        numel = in_features * out_features
        idx_dtype = _resolve_index_dtype(index_dtype, numel)
        nnz = int(sparsity * numel)
        if sparsity > 0 and nnz == 0:
            raise ValueError(
                f"sparsity={sparsity} of a {out_features}x{in_features} weight gives no entries; "
                "use a larger sparsity or sparsity=0 for a pure low-rank layer"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.sparsity = sparsity
        self.alpha = alpha
        # andyjm3/SLTrain:splora/splora_linear.py: scaling = lora_alpha / r (fixed).
        self.scaling = alpha / rank

        # Initialise on CPU with the generator, then move: the same seed gives the same layer
        # on every device.
        factory = {"dtype": dtype if dtype is not None else torch.get_default_dtype()}
        A = torch.empty(rank, in_features, **factory)
        # splora_linear.py: kaiming_uniform_(lora_A, a=sqrt(5)); lora_B zeros.
        nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
        B = torch.zeros(out_features, rank, **factory)
        if init_b == "kaiming":
            # The factorised (pure low-rank) baseline's init: B as nn.Linear(rank, out).weight,
            # so training starts with a non-zero low-rank product and gradients reach A and B
            # from the first step (with B = 0 the low-rank-only layer starts as the zero map).
            nn.init.kaiming_uniform_(B, a=math.sqrt(5), generator=generator)
        # splora_linear.py (_init_sparse_parameters): randperm(out*in)[:nnz], sorted.
        # randperm in the index dtype: the transient is 4 bytes per weight entry for int32.
        perm = torch.randperm(numel, generator=generator, dtype=idx_dtype)
        index = perm[:nnz].sort().values
        del perm
        bound = 1.0 / math.sqrt(in_features)  # splora_linear.py: values U(-1/sqrt(in), ...)
        values = torch.empty(nnz, **factory).uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(A.to(device))
        self.lora_B = nn.Parameter(B.to(device))
        self.sparse_value = nn.Parameter(values.to(device))
        self.register_buffer("sparse_index", index.to(device))
        if bias:
            # splora_linear.py: bias U(-1/sqrt(out), 1/sqrt(out)) (nn.Linear uses 1/sqrt(in)).
            b_bound = 1.0 / math.sqrt(out_features)
            b = torch.empty(out_features, **factory).uniform_(
                -b_bound, b_bound, generator=generator
            )
            self.bias: nn.Parameter | None = nn.Parameter(b.to(device))
        else:
            self.register_parameter("bias", None)

    @property
    def nnz(self) -> int:
        """Number of entries in the sparse part."""
        return self.sparse_index.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"SLTrainLinear expects a torch.Tensor, got {type(x).__name__}")
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"SLTrainLinear expects inputs with last dimension {self.in_features}, "
                f"got shape {tuple(x.shape)}"
            )
        return _linear(
            x,
            self.lora_B,
            self.lora_A,
            self.sparse_value,
            self.sparse_index,
            self.bias,
            self.scaling,
            self.algorithm,
        )

    @torch.no_grad()
    def to_dense(self) -> torch.Tensor:
        """The current weight ``[out, in]`` as a dense tensor (a copy, no gradient).

        Sharded parameters (DTensors of FSDP2 ``fully_shard``) are gathered first: a
        collective, so every rank of the mesh must call it."""
        B, A, values = (_gathered(p) for p in (self.lora_B, self.lora_A, self.sparse_value))
        return _materialize(B, A, values, _gathered(self.sparse_index), self.scaling)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function (for export)."""
        w = self.to_dense()
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        lin.weight.copy_(w)
        if self.bias is not None:
            lin.bias.copy_(_gathered(self.bias))
        return lin

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, sparsity={self.sparsity}, alpha={self.alpha}, nnz={self.nnz}, "
            f"bias={self.bias is not None}, algorithm={self.algorithm!r}"
        )
