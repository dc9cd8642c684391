"""Power-of-two ("shift") linear layers with straight-through training (DeepShift-PS).

ShiftAddViT reparameterises linear layers to weights ``w = sign * 2^shift`` so that the
product with an activation is a bit shift (GATECH-EIC/ShiftAddViT:pvt/deepshift/modules.py
``LinearShift``, pvt/deepshift/ste.py, pvt/deepshift/utils.py):

- two float parameters per weight, ``shift`` and ``sign``; the effective weight is
  ``2^round(clamp(shift, -(2^(bits-1) - 2), 0)) * sign(round(sign))``, a ternary sign, so
  exact zeros are possible (``weight_bits=5`` gives exponents -14..0);
- round, clamp and sign pass gradients straight through (identity), and the layer's
  input and bias are floored to 16.16 fixed point, also straight through.

On CPU the fastest exact way to run such a layer is to decode the dense float weight once
per weight version and call a normal matmul: the weight is exactly representable, so the
result is the same, and integer shift-add loops lose to BLAS. :class:`ShiftLinear` caches
the decoded weight when no gradient is needed (eval, ``torch.no_grad``) and rebuilds it when
the parameters change. On CUDA with Triton it calls ``trainforge_kernels.shift_matmul``,
which carries the weight as int8 sign and exponent tensors.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainforge_kernels._dispatch import use_triton
from trainforge_kernels.fixed_point import fixed_point_floor_cpu
from trainforge_kernels.shift_matmul import shift_matmul

__all__ = [
    "ShiftLinear",
    "round_to_fixed",
    "shift_range",
]

WEIGHT_BITS = 5  # pvt/deepshift/modules.py LinearShift(weight_bits=5)
ACT_INTEGER_BITS = 16  # LinearShift(act_integer_bits=16)
ACT_FRACTION_BITS = 16  # LinearShift(act_fraction_bits=16)


def _has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs forward hooks (its own or global ones). The no-autograd
    fast paths that bypass a submodule's ``forward`` (fused GEMMs, MoE experts writing in
    place) take the plain path when it is hooked, so hook-based counters see every call."""
    glob = nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or glob._global_forward_hooks
        or glob._global_forward_pre_hooks
    )


def shift_range(weight_bits: int) -> tuple[int, int]:
    """Exponent range of a ``weight_bits`` shift weight: ``(-(2^(bits-1) - 2), 0)``, one bit
    being the sign (pvt/deepshift/modules.py ``LinearShift.shift_range``)."""
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, int):
        raise TypeError(f"weight_bits must be an int, got {weight_bits!r}")
    if not 2 <= weight_bits <= 8:
        raise ValueError(
            f"weight_bits must be in [2, 8] (one sign bit plus 1..7 exponent bits, an int8 "
            f"exponent), got {weight_bits}"
        )
    return (-(2 ** (weight_bits - 1) - 2), 0)


class _StraightThrough(torch.autograd.Function):
    """``fn(x)`` forward (round, sign), the identity backward: a straight-through estimator."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, g):
        return g, None


def _round_sign(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(torch.round(x))


class _ClampSTE(torch.autograd.Function):
    """Clamp whose gradient is the identity inside ``[lo, hi]`` and zero outside."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        inside = (x >= ctx.lo) & (x <= ctx.hi)
        return g * inside, None, None


class _FixedSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, integer_bits, fraction_bits):
        return _fixed(x, integer_bits, fraction_bits)

    @staticmethod
    def apply_fast(x, integer_bits, fraction_bits):
        """Without autograd: one new tensor, then in-place passes (the same values)."""
        if torch.is_grad_enabled() and x.requires_grad:
            return _FixedSTE.apply(x, integer_bits, fraction_bits)
        bound = 2.0 ** (integer_bits - 1)
        out = x * 2.0**fraction_bits  # exact: a power of two
        return out.floor_().mul_(2.0**-fraction_bits).clamp_(-bound, bound - 1)

    @staticmethod
    def backward(ctx, g):
        return g, None, None


def _fixed(x: torch.Tensor, integer_bits: int, fraction_bits: int) -> torch.Tensor:
    delta = 2.0**-fraction_bits
    bound = 2.0 ** (integer_bits - 1)
    return (torch.floor(x / delta) * delta).clamp(-bound, bound - 1)


def round_to_fixed(
    x: torch.Tensor, integer_bits: int = 16, fraction_bits: int = 16
) -> torch.Tensor:
    """Floor ``x`` to signed fixed point with ``integer_bits.fraction_bits``, clamped to
    ``[-2^(i-1), 2^(i-1) - 1]`` (pvt/deepshift/utils.py ``round_to_fixed``); straight-through
    gradient."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"round_to_fixed: x must be a torch.Tensor, got {type(x).__name__}")
    for name, v, least in (("integer_bits", integer_bits, 2), ("fraction_bits", fraction_bits, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise ValueError(f"round_to_fixed: {name} must be an int >= {least}, got {v!r}")
    return _FixedSTE.apply(x, integer_bits, fraction_bits)


class ShiftLinear(nn.Module):
    """A linear layer with power-of-two weights ``sign * 2^shift`` (DeepShift-PS).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        weight_bits: bits per weight, one for the sign (default 5: exponents -14..0).
        act_fraction_bits: fractional bits of the fixed-point input/bias rounding (16.16 by
            default, as the reference); ``None`` keeps float inputs.

    A fresh layer draws ``shift ~ U(lo, 0)`` and ``sign ~ U(-1, 1)`` as the reference;
    :meth:`from_linear` converts a trained ``nn.Linear`` (``shift = round(log2|w|)``,
    ``sign = sign(w)``, as pvt/main.py ``load_experts`` with deepshift ``get_shift_and_sign``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_bits: int = WEIGHT_BITS,
        act_fraction_bits: int | None = ACT_FRACTION_BITS,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ShiftLinear: {name} must be a positive int, got {v!r}")
        if act_fraction_bits is not None and (
            isinstance(act_fraction_bits, bool)
            or not isinstance(act_fraction_bits, int)
            or not 0 <= act_fraction_bits <= 30
        ):
            raise ValueError(
                f"ShiftLinear: act_fraction_bits must be None or an int in [0, 30], "
                f"got {act_fraction_bits!r}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.weight_bits = weight_bits
        self.shift_bounds = shift_range(weight_bits)
        self.act_fraction_bits = act_fraction_bits
        lo, hi = self.shift_bounds
        self.shift = nn.Parameter(torch.empty(out_features, in_features).uniform_(lo, hi))
        self.sign = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))
        if bias:
            bound = 1 / math.sqrt(in_features)
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        self._cache: tuple[tuple, torch.Tensor] | None = None
        self._operands: tuple | None = None  # (key, w 2^-f, rounded bias) without autograd

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        weight_bits: int = WEIGHT_BITS,
        act_fraction_bits: int | None = ACT_FRACTION_BITS,
    ) -> ShiftLinear:
        """A ShiftLinear whose weight is ``linear``'s rounded to signed powers of two."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(
                f"ShiftLinear.from_linear: expected an nn.Linear, got {type(linear).__name__}"
            )
        w = linear.weight.detach()
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            weight_bits=weight_bits,
            act_fraction_bits=act_fraction_bits,
        ).to(device=w.device, dtype=w.dtype)
        lo, hi = layer.shift_bounds
        with torch.no_grad():
            layer.shift.copy_(torch.log2(w.abs().clamp_min(2.0 ** (lo - 8))).round().clamp(lo, hi))
            layer.sign.copy_(torch.sign(w))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    # -- the quantised weight ------------------------------------------------------------
    def sign_and_exponent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The int8 ``(sign, exponent)`` tensors of the effective weight."""
        lo, hi = self.shift_bounds
        with torch.no_grad():
            sign = torch.sign(torch.round(self.sign.clamp(-1, 1))).to(torch.int8)
            expo = torch.round(self.shift.clamp(lo, hi)).to(torch.int8)
        return sign, expo

    def _ste_weight(self) -> torch.Tensor:
        lo, hi = self.shift_bounds
        shift = _StraightThrough.apply(_ClampSTE.apply(self.shift, lo, hi), torch.round)
        sign = _StraightThrough.apply(_ClampSTE.apply(self.sign, -1.0, 1.0), _round_sign)
        return torch.exp2(shift) * sign

    def dequantized_weight(self) -> torch.Tensor:
        """The effective dense weight (every entry 0 or +-2^k). Differentiable (straight
        through) when gradients are on; cached per parameter version otherwise."""
        if torch.is_grad_enabled() and (self.shift.requires_grad or self.sign.requires_grad):
            return self._ste_weight()
        key = (
            self.shift._version,
            self.sign._version,
            self.shift.data_ptr(),
            self.sign.data_ptr(),
            self.shift.device,
            self.shift.dtype,
        )
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._ste_weight())
        return self._cache[1]

    def _bias(self) -> torch.Tensor | None:
        if self.bias is None or self.act_fraction_bits is None:
            return self.bias
        return _FixedSTE.apply_fast(self.bias, ACT_INTEGER_BITS, self.act_fraction_bits)

    def _weight_operands(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(w', b')`` of :meth:`gemm_operands`, cached per parameter version (the key is
        kept with them, so callers can cache what they build from them)."""
        key = tuple(
            (t._version, t.data_ptr(), t.device, t.dtype)
            for t in (self.shift, self.sign, self.bias)
            if t is not None
        )
        if self._operands is None or self._operands[0] != key:
            with torch.no_grad():
                w = self._ste_weight()
                if self.act_fraction_bits is not None:
                    w = w * 2.0**-self.act_fraction_bits
                self._operands = (key, w, self._bias())
        return self._operands[1], self._operands[2]

    def gemm_operands(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(x', w', b')`` with ``x' @ w'^T + b'`` equal to ``self(x)``, for use without
        autograd. With fixed-point inputs ``x' = floor(clamp(x 2^f))`` holds the integers of
        the 16.16 input and ``w' = w 2^-f`` (still a power of two, so every product is the
        same float as ``x_fixed * w``): one pass over ``x`` fewer than scaling back. ``w'``
        and the rounded bias are cached per parameter version."""
        w, b = self._weight_operands()
        if self.act_fraction_bits is None:
            return x, w, b
        scale = 2.0**self.act_fraction_bits
        bound = 2.0 ** (ACT_INTEGER_BITS - 1)
        # floor and clamp at integer bounds commute: floor(clamp(y)) == clamp(floor(y)).
        # On CPU one C pass (trainforge_kernels.fixed_point), bit for bit the three torch ops
        xi = fixed_point_floor_cpu(x, scale, -bound * scale, (bound - 1) * scale)
        return xi, w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if not needs_grad and x.is_cuda and use_triton(x) and x.dtype != torch.float64:
            if self.act_fraction_bits is not None:
                x = _FixedSTE.apply_fast(x, ACT_INTEGER_BITS, self.act_fraction_bits)
            sign, expo = self.sign_and_exponent()
            return shift_matmul(x, sign, expo, self._bias())
        if not needs_grad:
            xi, w, b = self.gemm_operands(x)
            return nn.functional.linear(xi, w.to(x.dtype), None if b is None else b.to(x.dtype))
        if self.act_fraction_bits is not None:
            x = _FixedSTE.apply_fast(x, ACT_INTEGER_BITS, self.act_fraction_bits)
        return nn.functional.linear(x, self.dequantized_weight().to(x.dtype), self._bias())

    def extra_repr(self) -> str:
        lo, hi = self.shift_bounds
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight_bits={self.weight_bits} (2^{lo}..2^{hi}), "
            f"act_fraction_bits={self.act_fraction_bits}"
        )

    def _apply(self, fn, recurse=True):
        self._cache = self._operands = None
        return super()._apply(fn, recurse)
