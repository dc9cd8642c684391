"""``trainforge::shift_matmul``: a linear layer whose weights are signed powers of two.

ShiftAddViT (You et al., NeurIPS 2023) reparameterises linear layers to DeepShift-PS
weights ``w = sign * 2^exponent`` with ``sign`` in {-1, 0, 1} and an integer exponent
(GATECH-EIC/ShiftAddViT:pvt/deepshift/modules.py ``LinearShift``; the released MatShift
micro-kernel is OPs_Speedups/Shift/Ansor_tune.py). Multiplying by ``2^e`` is a shift of the
input's exponent, so the layer needs no multiplier; on GPUs with tensor cores the fast way
to run it is as a weight-only-quantised GEMM: the weight travels as two int8 tensors (sign
and exponent) and is decoded to floating point in registers.

``y = x @ W^T + bias`` with ``W[j, k] = sign[j, k] * 2^exponent[j, k]``:

- Triton: a tiled GEMM that loads int8 sign and exponent tiles, builds ``2^e`` exactly by
  writing the float32 exponent field (``(e + 127) << 23``), multiplies by the sign and feeds
  ``tl.dot`` with fp32 accumulation (exact IEEE products for fp32 inputs; the decoded weight
  is exact in fp16/bf16 too for ``e >= -14``);
- torch reference: decode the same way into a dense weight and call ``F.linear``. On CPU this
  is also the fastest exact path; a module that calls it repeatedly should cache the decoded
  weight once per weight version (``trainforge_shiftaddvit.ShiftLinear`` does) and use a plain
  matmul, since integer shift-add loops lose to BLAS there.

The op has an autograd formula for ``x`` and ``bias`` (sign and exponent are integers).
"""

from __future__ import annotations

import torch

from trainforge_kernels._dispatch import BenchCase, interpret_mode, register_kernel, use_triton

try:  # Triton is optional: without it the torch reference runs.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None
    tl = None

__all__ = ["decode_shift_weight", "shift_matmul", "shift_matmul_reference"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
EXPONENT_RANGE = (-126, 127)  # float32 normal range: 2^e is exact there


def decode_shift_weight(
    sign: torch.Tensor, exponent: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The dense weight ``sign * 2^exponent`` (exact), built from the float32 bit pattern."""
    bits = (exponent.to(torch.int32) + 127).bitwise_left_shift(23)
    pow2 = bits.view(torch.float32)
    return (pow2 * sign.to(torch.float32)).to(dtype)


def shift_matmul_reference(
    x: torch.Tensor, sign: torch.Tensor, exponent: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Plain torch: decode the dense power-of-two weight, then ``F.linear``."""
    w = decode_shift_weight(sign, exponent, x.dtype)
    return torch.nn.functional.linear(x, w, None if bias is None else bias.to(x.dtype))


if triton is not None:

    @triton.jit
    def _shift_matmul_kernel(
        x_ptr, s_ptr, e_ptr, b_ptr, y_ptr, M, N, K,
        stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
        HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            x = tl.load(
                x_ptr + rm[:, None] * stride_xm + kk[None, :] * stride_xk,
                mask=(rm[:, None] < M) & (kk[None, :] < K),
                other=0.0,
            )
            wmask = (kk[:, None] < K) & (rn[None, :] < N)
            woff = rn[None, :] * stride_wn + kk[:, None] * stride_wk  # [BLOCK_K, BLOCK_N] = W^T
            s = tl.load(s_ptr + woff, mask=wmask, other=0).to(tl.float32)
            e = tl.load(e_ptr + woff, mask=wmask, other=0).to(tl.int32)
            pow2 = ((e + 127) << 23).to(tl.float32, bitcast=True)  # exactly 2^e
            w = pow2 * s
            if IEEE:
                acc += tl.dot(x.to(tl.float32), w, input_precision="ieee")
            else:
                acc += tl.dot(x, w.to(x.dtype))
        if HAS_BIAS:
            bias = tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
            acc += bias[None, :]
        tl.store(
            y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn,
            acc.to(y_ptr.dtype.element_ty),
            mask=(rm[:, None] < M) & (rn[None, :] < N),
        )


def _shift_triton(
    x: torch.Tensor, sign: torch.Tensor, exponent: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    lead = x.shape[:-1]
    K = x.shape[-1]
    N = sign.shape[0]
    x2 = x.reshape(-1, K)
    M = x2.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if M == 0 or N == 0:
        return y.reshape(*lead, N)
    if K == 0:
        y.zero_()
        if bias is not None:
            y += bias.to(y.dtype)
        return y.reshape(*lead, N)
    sign = sign.contiguous()
    exponent = exponent.contiguous()
    block_m, block_n = 64, 64
    block_k = max(16, min(64, triton.next_power_of_2(K)))
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    _shift_matmul_kernel[grid](
        x2, sign, exponent, bias if bias is not None else x2, y, M, N, K,
        x2.stride(0), x2.stride(1), sign.stride(0), sign.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None,
        # fp32/fp64 inputs: exact fp32 products (no TF32); the interpreter cannot do bf16 dots.
        IEEE=x.dtype not in (torch.float16, torch.bfloat16)
        or (x.dtype == torch.bfloat16 and interpret_mode()),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
    )  # fmt: skip
    return y.reshape(*lead, N)


@torch.library.custom_op("trainforge::shift_matmul", mutates_args=())
def _shift_matmul_op(
    x: torch.Tensor, sign: torch.Tensor, exponent: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    if use_triton(x, sign, exponent) and x.dtype != torch.float64:
        return _shift_triton(x, sign, exponent, bias)
    return shift_matmul_reference(x, sign, exponent, bias)


@_shift_matmul_op.register_fake
def _(x, sign, exponent, bias):
    return x.new_empty(*x.shape[:-1], sign.shape[0])


def _setup_context(ctx, inputs, output):
    x, sign, exponent, bias = inputs
    ctx.save_for_backward(sign, exponent)
    ctx.x_dtype = x.dtype
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    sign, exponent = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = grad @ decode_shift_weight(sign, exponent, grad.dtype)
    if ctx.has_bias and ctx.needs_input_grad[3]:
        grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
    return grad_x, None, None, grad_bias


_shift_matmul_op.register_autograd(_backward, setup_context=_setup_context)


def shift_matmul(
    x: torch.Tensor, sign: torch.Tensor, exponent: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ (sign * 2^exponent)^T + bias`` for power-of-two weights.

    ``x [..., K]`` floating point; ``sign [N, K]`` int8 in {-1, 0, 1}; ``exponent [N, K]``
    int8 in [-126, 127]; ``bias [N]`` or None. Returns ``[..., N]`` in ``x``'s dtype. Triton
    on CUDA tensors when Triton is installed (fp16/bf16/fp32), the torch reference otherwise.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"shift_matmul: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"shift_matmul: x must be floating point, got {x.dtype}")
    for name, t in (("sign", sign), ("exponent", exponent)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"shift_matmul: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.int8:
            raise TypeError(f"shift_matmul: {name} must be int8, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"shift_matmul: {name} must be 2-D [out, in], got {tuple(t.shape)}")
    if sign.shape != exponent.shape:
        raise ValueError(
            f"shift_matmul: sign {tuple(sign.shape)} and exponent {tuple(exponent.shape)} differ"
        )
    if x.dim() < 1 or x.shape[-1] != sign.shape[1]:
        raise ValueError(
            f"shift_matmul: x's last dim must equal in_features={sign.shape[1]}, "
            f"got x {tuple(x.shape)}"
        )
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (sign.shape[0],)):
        raise ValueError(f"shift_matmul: bias must be a [{sign.shape[0]}] tensor or None")
    devices = {t.device for t in (x, sign, exponent) + (() if bias is None else (bias,))}
    if len(devices) > 1:
        raise ValueError(f"shift_matmul: all tensors must be on one device, got {devices}")
    if sign.numel():
        if int(sign.min()) < -1 or int(sign.max()) > 1:
            raise ValueError("shift_matmul: sign must hold only -1, 0 and 1")
        lo, hi = int(exponent.min()), int(exponent.max())
        if lo < EXPONENT_RANGE[0] or hi > EXPONENT_RANGE[1]:
            raise ValueError(
                f"shift_matmul: exponent must lie in {list(EXPONENT_RANGE)}, got [{lo}, {hi}]"
            )
    return _shift_matmul_op(x, sign, exponent, bias)


def _bench_cases() -> list[BenchCase]:
    cases = []
    for tokens, k, n, dtype in (
        (3136, 64, 512, torch.float16),  # the MatShift unit shape, PVT stage-1 MLP fc1
        (3136, 512, 64, torch.float16),  # its fc2
        (8192, 768, 3072, torch.bfloat16),  # ViT-B MLP fc1
        (16, 4096, 4096, torch.float16),  # small batch: where weight bytes dominate
    ):

        def make(device, tokens=tokens, k=k, n=n, dtype=dtype):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(tokens, k, generator=g).to(dtype).to(device)
            sign = torch.randint(-1, 2, (n, k), generator=g, dtype=torch.int8).to(device)
            expo = torch.randint(-14, 1, (n, k), generator=g, dtype=torch.int8).to(device)
            bias = torch.randn(n, generator=g).to(dtype).to(device)
            return x, sign, expo, bias

        size = 2  # fp16 / bf16 activations
        cases.append(
            BenchCase(
                op="shift_matmul",
                shape=f"{tokens}x{k}->{n} {str(dtype).removeprefix('torch.')}",
                make=make,
                triton_fn=_shift_triton,
                torch_fn=shift_matmul_reference,
                bytes_moved=size * tokens * (k + n) + 2 * n * k + size * n,
                flops=2 * tokens * k * n,
                atol=2e-2 if dtype == torch.float16 else 1e-1,
                rtol=1e-2 if dtype == torch.float16 else 5e-2,
            )
        )
    return cases


register_kernel(
    "shift_matmul",
    "Power-of-two (sign, exponent int8) weight GEMM: ShiftAddViT / DeepShift-PS linear",
    bench_cases=_bench_cases,
)
