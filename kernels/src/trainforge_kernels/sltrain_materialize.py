"""``trainforge::sltrain_materialize``: the dense weight of an SLTrain layer.

SLTrain (Han et al., NeurIPS 2024) parameterises a linear weight as a low-rank product plus
a sparse matrix on a fixed random support::

    W = scale * B @ A + scatter(values at index)        B [out, r], A [r, in]

``index`` holds flat row-major positions into ``W`` (int32 or int64), ``values`` the entries
there. The reference extension (andyjm3/SLTrain:sparse-lora/sparse_linear.cpp) builds W with
``mm`` and ``scatter_add_``; this op does the same in one custom op:

- torch reference: ``mm`` of ``scale * B`` (the scale on the small factor) and ``A``, then
  ``index_add_`` of the values (duplicates add up, as with ``scatter_add_``);
- Triton: a tiled GEMM kernel that writes ``scale * B @ A`` (fp32 accumulation, the scale
  applied in the epilogue) followed by a scatter kernel that atomically adds the values. The
  two launches run back to back on one stream, so W is written once and the sparse part is
  a read-modify-write of ``nnz`` entries only (the positions must be unique, as a support
  is; the torch reference would add repeated positions up, the kernel would not). W is not
  avoided: a fused linear that builds W tiles inside the matmul prologue is not implemented.

The op has an autograd formula (``grad_B = scale * G @ A^T``, ``grad_A = scale * B^T @ G``,
``grad_values = G.flatten()[index]``), so it can be used directly in a graph; the SLTrain
layer calls it inside its own ``autograd.Function`` that never keeps W alive.
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

__all__ = ["sltrain_materialize", "sltrain_materialize_reference"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(B: torch.Tensor, A: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> None:
    for name, t in (("B", B), ("A", A), ("values", values), ("index", index)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"sltrain_materialize: {name} must be a torch.Tensor, got {type(t).__name__}"
            )
    if B.dim() != 2 or A.dim() != 2:
        raise ValueError(
            "sltrain_materialize: B and A must be 2-D, got "
            f"B {tuple(B.shape)} and A {tuple(A.shape)}"
        )
    if B.shape[1] != A.shape[0]:
        raise ValueError(
            f"sltrain_materialize: B is {tuple(B.shape)} and A is {tuple(A.shape)}; "
            "B.shape[1] (the rank) must equal A.shape[0]"
        )
    if B.dtype not in _FLOAT_DTYPES or A.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"sltrain_materialize: B and A must be floating point, got {B.dtype} and {A.dtype}"
        )
    if values.dim() != 1 or index.dim() != 1 or values.shape[0] != index.shape[0]:
        raise ValueError(
            "sltrain_materialize: values and index must be 1-D of equal length, got "
            f"values {tuple(values.shape)} and index {tuple(index.shape)}"
        )
    if index.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"sltrain_materialize: index must be int32 or int64, got {index.dtype}")
    if values.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"sltrain_materialize: values must be floating point, got {values.dtype}")


def sltrain_materialize_reference(
    B: torch.Tensor, A: torch.Tensor, values: torch.Tensor, index: torch.Tensor, scale: float
) -> torch.Tensor:
    """Plain-torch ``scale * B @ A + scatter(values at index)`` in ``B``'s dtype (in the
    autocast dtype under ``torch.autocast``, where the product comes out in it)."""
    # The scale goes on the small factor B ([out, r]), so W is allocated and written once.
    out = torch.mm(B if scale == 1.0 else B * scale, A.to(B.dtype))
    if index.numel():
        values = values.to(out.dtype)  # autocast may have made the product bf16 / fp16
        out = (
            out.view(-1).index_add(0, index, values).view_as(out)
            if torch.is_grad_enabled() and (out.requires_grad or values.requires_grad)
            else out.view(-1).index_add_(0, index, values).view_as(out)
        )
    return out


if triton is not None:

    @triton.jit
    def _lowrank_kernel(
        b_ptr, a_ptr, w_ptr, M, N, K, scale,
        stride_bm, stride_bk, stride_ak, stride_an, stride_wm, stride_wn,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            b = tl.load(
                b_ptr + rm[:, None] * stride_bm + kk[None, :] * stride_bk,
                mask=(rm[:, None] < M) & (kk[None, :] < K),
                other=0.0,
            )
            a = tl.load(
                a_ptr + kk[:, None] * stride_ak + rn[None, :] * stride_an,
                mask=(kk[:, None] < K) & (rn[None, :] < N),
                other=0.0,
            )
            if IEEE:  # fp32 weights: exact fp32 products, as torch's default matmul (no TF32)
                acc += tl.dot(b.to(tl.float32), a.to(tl.float32), input_precision="ieee")
            else:  # half precision: native tensor-core dot, fp32 accumulation
                acc += tl.dot(b, a)
        acc = acc * scale
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        tl.store(
            w_ptr + rm[:, None] * stride_wm + rn[None, :] * stride_wn,
            acc.to(w_ptr.dtype.element_ty),
            mask=mask,
        )

    @triton.jit
    def _scatter_kernel(w_ptr, v_ptr, i_ptr, nnz, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < nnz
        idx = tl.load(i_ptr + offs, mask=mask, other=0).to(tl.int64)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0)
        # Positions are unique (a support), so a plain read-modify-write has no race.
        w = tl.load(w_ptr + idx, mask=mask, other=0.0)
        tl.store(
            w_ptr + idx, (w.to(tl.float32) + v.to(tl.float32)).to(w_ptr.dtype.element_ty), mask=mask
        )


def _materialize_triton(
    B: torch.Tensor, A: torch.Tensor, values: torch.Tensor, index: torch.Tensor, scale: float
) -> torch.Tensor:
    M, K = B.shape
    N = A.shape[1]
    A = A.to(B.dtype)
    out = torch.empty(M, N, device=B.device, dtype=B.dtype)
    if M == 0 or N == 0:
        return out
    block_m, block_n = 64, 64
    block_k = max(16, min(64, triton.next_power_of_2(K)))
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    _lowrank_kernel[grid](
        B, A, out, M, N, K, float(scale),
        B.stride(0), B.stride(1), A.stride(0), A.stride(1), out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        # Triton's CPU interpreter gets bf16 dots wrong (numpy has no bf16): cast there.
        IEEE=B.dtype not in (torch.float16, torch.bfloat16)
        or (B.dtype == torch.bfloat16 and interpret_mode()),
    )  # fmt: skip
    nnz = index.numel()
    if nnz:
        block = 1024
        _scatter_kernel[(triton.cdiv(nnz, block),)](
            out, values.contiguous(), index.contiguous(), nnz, BLOCK=block
        )
    return out


@torch.library.custom_op("trainforge::sltrain_materialize", mutates_args=())
def _sltrain_materialize_op(
    B: torch.Tensor, A: torch.Tensor, values: torch.Tensor, index: torch.Tensor, scale: float
) -> torch.Tensor:
    if use_triton(B, A, values, index):
        return _materialize_triton(B, A, values, index, scale)
    return sltrain_materialize_reference(B, A, values, index, scale)


@_sltrain_materialize_op.register_fake
def _(B, A, values, index, scale):
    return B.new_empty(B.shape[0], A.shape[1])


def _setup_context(ctx, inputs, output):
    B, A, values, index, scale = inputs
    ctx.save_for_backward(B, A, index)
    ctx.scale = scale
    ctx.dtypes = (A.dtype, values.dtype)


def _backward(ctx, grad):
    B, A, index = ctx.saved_tensors
    a_dtype, v_dtype = ctx.dtypes
    grad_B = grad_A = grad_values = None
    if ctx.needs_input_grad[0]:
        grad_B = (grad @ A.to(grad.dtype).t()) * ctx.scale
    if ctx.needs_input_grad[1]:
        grad_A = ((B.to(grad.dtype).t() @ grad) * ctx.scale).to(a_dtype)
    if ctx.needs_input_grad[2]:
        grad_values = grad.reshape(-1)[index.long()].to(v_dtype)
    return grad_B, grad_A, grad_values, None, None


_sltrain_materialize_op.register_autograd(_backward, setup_context=_setup_context)


def sltrain_materialize(
    B: torch.Tensor, A: torch.Tensor, values: torch.Tensor, index: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """``W = scale * B @ A`` plus ``values`` added at the flat row-major positions ``index``.

    ``B`` is ``[out, r]``, ``A`` is ``[r, in]``, ``values`` and ``index`` are 1-D of equal
    length (``index`` int32 or int64, unique entries in ``[0, out * in)``).
    Returns a new ``[out, in]`` tensor in ``B``'s dtype. Runs the Triton kernels on CUDA
    tensors when Triton is installed, the torch reference otherwise.
    """
    _check(B, A, values, index)
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise TypeError(f"sltrain_materialize: scale must be a float, got {scale!r}")
    devices = {t.device for t in (B, A, values, index)}
    if len(devices) > 1:
        raise ValueError(f"sltrain_materialize: all tensors must be on one device, got {devices}")
    return _sltrain_materialize_op(B, A, values, index, float(scale))


def _bench_cases() -> list[BenchCase]:
    cases = []
    for out_f, in_f, rank, sparsity in (
        (1024, 1024, 128, 0.03),
        (2048, 2048, 128, 0.03),
        (4096, 4096, 256, 0.03),
        (4096, 11008, 512, 0.03),
    ):
        nnz = int(sparsity * out_f * in_f)

        def make(device, out_f=out_f, in_f=in_f, rank=rank, nnz=nnz):
            g = torch.Generator().manual_seed(0)
            B = torch.randn(out_f, rank, generator=g).to(device)
            A = torch.randn(rank, in_f, generator=g).to(device)
            idx = torch.randperm(out_f * in_f, generator=g)[:nnz].sort().values
            values = torch.randn(nnz, generator=g).to(device)
            return B, A, values, idx.to(torch.int32).to(device), 0.25

        cases.append(
            BenchCase(
                op="sltrain_materialize",
                shape=f"{out_f}x{in_f} r={rank} nnz={nnz}",
                make=make,
                triton_fn=_materialize_triton,
                torch_fn=sltrain_materialize_reference,
                # read B, A, values, index; write W once; read-modify-write nnz entries of W
                bytes_moved=4 * (out_f * rank + rank * in_f + out_f * in_f + 4 * nnz),
                flops=2 * out_f * in_f * rank + nnz,
                atol=1e-3,
                rtol=1e-3,
            )
        )
    return cases


register_kernel(
    "sltrain_materialize",
    "SLTrain weight W = scale * B @ A + scatter(values at a fixed support)",
    bench_cases=_bench_cases,
)
