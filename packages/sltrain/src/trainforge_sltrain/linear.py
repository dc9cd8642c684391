"""The SLTrain linear layer: ``W = (alpha / rank) * B @ A + S`` with a fixed random support.

Framework-free (plain torch). The dense ``W`` is a per-call transient: the forward builds it
with the fused ``trainforge::sltrain_materialize`` op, uses it and drops it; the backward
builds it again (as the reference extension does, andyjm3/SLTrain:sparse-lora/
sparse_linear.cpp), so no ``[out, in]`` tensor is kept between forward and backward.
"""

from __future__ import annotations

import math
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
    "sltrain_linear_function",
    "sltrain_linear_params",
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
) -> torch.Tensor:
    """Functional SLTrain linear: ``x @ (scale * B @ A + S)^T + bias`` without keeping W.

    ``S`` has ``values`` at the flat row-major positions ``index`` of the ``[out, in]``
    weight. Gradients flow to ``x``, ``B``, ``A``, ``values`` and ``bias``.
    """
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
    return _SLTrainLinearFn.apply(x, B, A, values, index, bias, float(scale))


class SLTrainLinear(nn.Module):
    """A linear layer whose weight is ``(alpha / rank) * B @ A + S`` (SLTrain).

    ``B`` ``[out, rank]`` starts at zero and ``A`` ``[rank, in]`` Kaiming-uniform, so at
    initialisation the weight is the sparse part alone. ``S`` has ``int(sparsity * out * in)``
    entries on a support drawn once (uniformly without replacement, sorted, flat row-major)
    and kept fixed as the buffer ``sparse_index``; its values ``sparse_value`` are the
    trainable parameter, initialised U(-1/sqrt(in), 1/sqrt(in)). ``sparsity=0`` gives a pure
    low-rank layer (the comparison baseline). Names of parameters and buffers follow the
    reference (andyjm3/SLTrain:splora/splora_linear.py), so state dicts are interchangeable.

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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
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
        return _SLTrainLinearFn.apply(
            x,
            self.lora_B,
            self.lora_A,
            self.sparse_value,
            self.sparse_index,
            self.bias,
            self.scaling,
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
            f"bias={self.bias is not None}"
        )
