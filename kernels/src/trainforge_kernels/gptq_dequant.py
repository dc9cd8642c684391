"""Packed-int GPTQ weights: dequantize, and dequantize-matmul (GEMV / small-batch GEMM).

Buffers are the "gptq" checkpoint layout (``AutoGPTQ:auto_gptq/nn_modules/qlinear/
qlinear_tritonv2.py``): ``qweight`` int32 ``[in * bits / 32, out]`` packed along the input
dim, ``qzeros`` int32 ``[n_groups, out * bits / 32]`` packed along the output dim, ``scales``
``[n_groups, out]``, ``g_idx`` int32 ``[in]``. Codes of a run of ``32 / gcd(32, bits)``
values form one little-endian bit stream of ``bits`` words (LSB first), which covers 2, 4, 8
bits and the 3-bit 32-in-3-words interleave of ``gptq:quant.py``.

``W[i, o] = scales[g, o] * (q[i, o] - (z[g, o] + zero_offset))`` with ``g = g_idx[i]``;
``zero_offset`` is 1 for the "gptq" (v1) format, which stores zero - 1, and 0 for
"gptq_v2". Public ops (namespace ``trainforge``):

- ``gptq_dequantize(qweight, qzeros, scales, g_idx, bits, zero_offset) -> [in, out]`` in
  ``scales.dtype`` (computed in float32);
- ``gptq_matmul(x, qweight, qzeros, scales, g_idx, bits, zero_offset) -> x @ W`` with ``x``
  ``[..., in]``, float32 accumulation, output in ``x.dtype``.

The Triton matmul fuses the unpacking, the ``g_idx`` gather and the product: each program
owns a ``[BLOCK_M, BLOCK_N]`` output tile and walks K, dequantizing ``[BLOCK_K, BLOCK_N]``
weight tiles in registers (AutoGPTQ's tritonv2 instead dequantizes to memory, then calls a
torch matmul).
"""

from __future__ import annotations

import math

import torch

from trainforge_kernels._dispatch import BenchCase, register_kernel, use_triton

try:  # the module must import without Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without Triton
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]

SUPPORTED_BITS = (2, 3, 4, 8)


def _run(bits: int) -> tuple[int, int]:
    """(codes per run, int32 words per run)."""
    run = 32 // math.gcd(32, bits)
    return run, run * bits // 32


def _check(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> tuple[int, int, int]:
    """Validate the buffers; return (in_features, out_features, n_groups)."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    if zero_offset not in (0, 1):
        raise ValueError(f"zero_offset must be 1 ('gptq' v1) or 0 ('gptq_v2'), got {zero_offset!r}")
    for name, t in (("qweight", qweight), ("qzeros", qzeros), ("g_idx", g_idx)):
        if t.dtype != torch.int32:
            raise TypeError(f"{name} must be int32, got {t.dtype}")
    if not scales.is_floating_point() or scales.dim() != 2:
        raise TypeError(
            f"scales must be a 2-D floating tensor, got {scales.dtype} {tuple(scales.shape)}"
        )
    if qweight.dim() != 2 or qzeros.dim() != 2 or g_idx.dim() != 1:
        raise ValueError("qweight and qzeros must be 2-D and g_idx 1-D")
    run, words = _run(bits)
    n_groups, out_f = scales.shape
    in_f = g_idx.shape[0]
    if in_f % run or qweight.shape != (in_f // run * words, out_f):
        raise ValueError(
            f"qweight must have shape ({in_f} * {bits} / 32, {out_f}) with in_features a "
            f"multiple of {run}, got {tuple(qweight.shape)} for g_idx of length {in_f}"
        )
    if out_f % run or qzeros.shape != (n_groups, out_f // run * words):
        raise ValueError(
            f"qzeros must have shape ({n_groups}, {out_f} * {bits} / 32), got {tuple(qzeros.shape)}"
        )
    return in_f, out_f, n_groups


def unpack_codes(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Codes (int32) of an int32 tensor packed along ``dim`` (plain torch)."""
    run, words = _run(bits)
    maxq = (1 << bits) - 1
    x = packed.movedim(dim, 0).to(torch.int64) & 0xFFFFFFFF
    rest = x.shape[1:]
    x = x.reshape(-1, words, *rest)
    parts = []
    for k in range(run):
        w, sh = divmod(bits * k, 32)
        v = x[:, w] >> sh
        if sh + bits > 32:
            v = v | (x[:, w + 1] << (32 - sh))
        parts.append(v & maxq)
    out = torch.stack(parts, dim=1).reshape(-1, *rest)
    return out.to(torch.int32).movedim(0, dim)


def gptq_dequantize_reference(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> torch.Tensor:
    """Plain-torch dequantization to ``[in, out]`` in float32."""
    q = unpack_codes(qweight, bits, 0)
    z = unpack_codes(qzeros, bits, 1) + zero_offset
    g = g_idx.long()
    return scales.float()[g] * (q - z[g]).float()


def gptq_matmul_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> torch.Tensor:
    """Plain-torch ``x @ dequantize(...)`` in float32, returned in ``x.dtype``."""
    w = gptq_dequantize_reference(qweight, qzeros, scales, g_idx, bits, zero_offset)
    return (x.float() @ w).to(x.dtype)


# -- Triton ------------------------------------------------------------------------------
if triton is not None:

    @triton.jit
    def _codes(
        ptr, row, col, stride, mask, BITS: tl.constexpr, RUN: tl.constexpr, WORDS: tl.constexpr
    ):
        """Codes at packed position ``row`` (packed dim) and ``col`` (other dim)."""
        k = row % RUN
        off = k * BITS
        word = (row // RUN) * WORDS + off // 32
        sh = off % 32
        lo = tl.load(ptr + word * stride + col, mask=mask, other=0).to(tl.uint32, bitcast=True)
        v = lo >> sh.to(tl.uint32)
        if (32 % BITS) != 0:  # 3 bits: some codes straddle two words
            spill = (sh + BITS) > 32
            hi = tl.load(ptr + (word + 1) * stride + col, mask=mask & spill, other=0)
            hi = hi.to(tl.uint32, bitcast=True)
            up = tl.where(spill, 32 - sh, 0).to(tl.uint32)
            v = v | tl.where(spill, hi << up, 0)
        return (v & ((1 << BITS) - 1)).to(tl.int32)

    @triton.jit
    def _dequant_kernel(
        qw_ptr,
        qz_ptr,
        s_ptr,
        g_ptr,
        out_ptr,
        K,
        N,
        NZ,
        BITS: tl.constexpr,
        RUN: tl.constexpr,
        WORDS: tl.constexpr,
        ZERO_OFFSET: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < K * N
        row = offs // N
        col = offs % N
        q = _codes(qw_ptr, row, col, N, mask, BITS, RUN, WORDS)
        g = tl.load(g_ptr + row, mask=mask, other=0)
        s = tl.load(s_ptr + g * N + col, mask=mask, other=0.0).to(tl.float32)
        z = _codes(qz_ptr + g * NZ, col, 0, 1, mask, BITS, RUN, WORDS) + ZERO_OFFSET
        w = s * (q - z).to(tl.float32)
        tl.store(out_ptr + offs, w.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _matmul_kernel(
        x_ptr,
        qw_ptr,
        qz_ptr,
        s_ptr,
        g_ptr,
        out_ptr,
        M,
        K,
        N,
        NZ,
        stride_xm,
        stride_om,
        BITS: tl.constexpr,
        RUN: tl.constexpr,
        WORDS: tl.constexpr,
        ZERO_OFFSET: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = rm < M
        mask_n = rn < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mask_k = rk < K
            x = tl.load(
                x_ptr + rm[:, None] * stride_xm + rk[None, :],
                mask=mask_m[:, None] & mask_k[None, :],
                other=0.0,
            ).to(tl.float32)
            wmask = mask_k[:, None] & mask_n[None, :]
            q = _codes(qw_ptr, rk[:, None], rn[None, :], N, wmask, BITS, RUN, WORDS)
            g = tl.load(g_ptr + rk, mask=mask_k, other=0)
            s = tl.load(s_ptr + g[:, None] * N + rn[None, :], mask=wmask, other=0.0)
            z = _codes(qz_ptr + g[:, None] * NZ, rn[None, :], 0, 1, wmask, BITS, RUN, WORDS)
            w = s.to(tl.float32) * (q - (z + ZERO_OFFSET)).to(tl.float32)
            acc += tl.dot(x, w, input_precision="ieee")
        tl.store(
            out_ptr + rm[:, None] * stride_om + rn[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=mask_m[:, None] & mask_n[None, :],
        )


def gptq_dequantize_triton(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Triton dequantization (one program per ``BLOCK`` output elements)."""
    in_f, out_f, _ = _check(qweight, qzeros, scales, g_idx, bits, zero_offset)
    run, words = _run(bits)
    out = torch.empty(in_f, out_f, dtype=out_dtype or scales.dtype, device=scales.device)
    block = 1024
    grid = (triton.cdiv(in_f * out_f, block),)
    _dequant_kernel[grid](
        qweight,
        qzeros,
        scales,
        g_idx,
        out,
        in_f,
        out_f,
        qzeros.shape[1],
        BITS=bits,
        RUN=run,
        WORDS=words,
        ZERO_OFFSET=zero_offset,
        BLOCK=block,
    )
    return out


def gptq_matmul_triton(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> torch.Tensor:
    """Fused Triton dequant-matmul for ``x`` ``[..., in]`` (tuned for small M)."""
    in_f, out_f, _ = _check(qweight, qzeros, scales, g_idx, bits, zero_offset)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, in_f).contiguous()
    m = x2.shape[0]
    out = torch.empty(m, out_f, dtype=x.dtype, device=x.device)
    run, words = _run(bits)
    bm = 16 if m <= 16 else 32
    bn, bk = 64, 64
    grid = (triton.cdiv(m, bm), triton.cdiv(out_f, bn))
    _matmul_kernel[grid](
        x2,
        qweight,
        qzeros,
        scales,
        g_idx,
        out,
        m,
        in_f,
        out_f,
        qzeros.shape[1],
        x2.stride(0),
        out.stride(0),
        BITS=bits,
        RUN=run,
        WORDS=words,
        ZERO_OFFSET=zero_offset,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
    )
    return out.reshape(*lead, out_f)


# -- public ops ----------------------------------------------------------------------------
@torch.library.custom_op("trainforge::gptq_dequantize", mutates_args=())
def gptq_dequantize(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> torch.Tensor:
    """Dequantize packed GPTQ buffers to ``[in, out]`` in ``scales.dtype``."""
    _check(qweight, qzeros, scales, g_idx, bits, zero_offset)
    if use_triton(qweight, qzeros, scales, g_idx):
        return gptq_dequantize_triton(qweight, qzeros, scales, g_idx, bits, zero_offset)
    weight = gptq_dequantize_reference(qweight, qzeros, scales, g_idx, bits, zero_offset)
    return weight.to(scales.dtype)


@gptq_dequantize.register_fake
def _(qweight, qzeros, scales, g_idx, bits, zero_offset):  # type: ignore[no-untyped-def]
    return scales.new_empty(g_idx.shape[0], scales.shape[1])


@torch.library.custom_op("trainforge::gptq_matmul", mutates_args=())
def gptq_matmul(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> torch.Tensor:
    """``x @ W`` for packed GPTQ buffers; ``x`` is ``[..., in]``, the result ``[..., out]``."""
    in_f, _, _ = _check(qweight, qzeros, scales, g_idx, bits, zero_offset)
    if not x.is_floating_point() or x.shape[-1] != in_f:
        raise ValueError(f"x must be a float tensor [..., {in_f}], got {x.dtype} {tuple(x.shape)}")
    if use_triton(x, qweight, qzeros, scales, g_idx):
        return gptq_matmul_triton(x, qweight, qzeros, scales, g_idx, bits, zero_offset)
    return gptq_matmul_reference(x, qweight, qzeros, scales, g_idx, bits, zero_offset)


@gptq_matmul.register_fake
def _(x, qweight, qzeros, scales, g_idx, bits, zero_offset):  # type: ignore[no-untyped-def]
    return x.new_empty(*x.shape[:-1], scales.shape[1])


# -- benchmark cases -----------------------------------------------------------------------
def _bench_inputs(
    device: torch.device,
    m: int,
    k: int,
    n: int,
    bits: int = 4,
    gs: int = 128,
    act_order: bool = False,
) -> tuple:
    gen = torch.Generator(device="cpu").manual_seed(0)
    run, words = _run(bits)
    n_groups = -(-k // gs)
    qweight = torch.randint(
        -(2**31), 2**31 - 1, (k // run * words, n), generator=gen, dtype=torch.int64
    ).to(torch.int32)
    qzeros = torch.randint(
        -(2**31), 2**31 - 1, (n_groups, n // run * words), generator=gen, dtype=torch.int64
    ).to(torch.int32)
    scales = (torch.rand(n_groups, n, generator=gen) * 0.01).to(torch.float16)
    g_idx = torch.arange(k) // gs
    if act_order:
        g_idx = g_idx[torch.randperm(k, generator=gen)]
    x = torch.randn(m, k, generator=gen).to(torch.float16)
    return (
        *tuple(t.to(device) for t in (x, qweight, qzeros, scales, g_idx.to(torch.int32))),
        bits,
        1,
    )


def _bench_cases() -> list[BenchCase]:
    cases = []
    for m, k, n, act in (
        (1, 4096, 4096, False),
        (16, 4096, 4096, False),
        (1, 4096, 4096, True),
        (16, 4096, 11008, False),
    ):
        packed = k * n // 2 + (k // 128) * n * 2 + (k // 128) * n // 2 + k * 4
        cases.append(
            BenchCase(
                op="gptq_matmul",
                shape=f"M={m} K={k} N={n} 4bit g128{' act-order' if act else ''}",
                make=lambda dev, m=m, k=k, n=n, act=act: _bench_inputs(dev, m, k, n, act_order=act),
                triton_fn=gptq_matmul_triton,
                torch_fn=gptq_matmul_reference,
                bytes_moved=packed + m * k * 2 + m * n * 2,
                flops=2 * m * k * n,
                atol=5e-2,
                rtol=5e-2,
            )
        )
    k, n = 4096, 4096
    cases.append(
        BenchCase(
            op="gptq_dequantize",
            shape=f"K={k} N={n} 4bit g128",
            make=lambda dev: _bench_inputs(dev, 1, k, n)[1:],
            triton_fn=gptq_dequantize_triton,
            torch_fn=lambda *a: gptq_dequantize_reference(*a).to(torch.float16),
            bytes_moved=k * n // 2 + (k // 128) * n * 2 + k * n * 2,
            atol=1e-2,
            rtol=1e-2,
        )
    )
    return cases


register_kernel(
    "gptq_dequant",
    "GPTQ packed int2/3/4/8 dequantize and fused dequant-matmul with g_idx (gptq / gptq_v2)",
    bench_cases=_bench_cases,
)
