"""Bit packing of integer codes into int32 words, and the "gptq" checkpoint buffers.

Layout (``AutoGPTQ:auto_gptq/nn_modules/qlinear/qlinear_tritonv2.py:QuantLinear.pack``,
``gptq:quant.py:Quant3Linear.pack``): along the packed dimension, every run of
``32 / gcd(32, bits)`` codes forms one little-endian bit stream of ``bits`` int32 words,
code ``k`` of the run at bit ``bits * k`` (LSB first). For 2, 4 and 8 bits that is one word
per ``32 / bits`` codes; for 3 bits it is the reference's 32-codes-in-3-words interleave,
where codes 10 and 21 straddle two words.
"""

from __future__ import annotations

import math

import torch

from trainforge_gptq.quantizer import check_bits


def codes_per_run(bits: int) -> int:
    """How many codes one packing run holds (8 for 4 bits, 32 for 3 bits)."""
    return 32 // math.gcd(32, check_bits(bits))


def _check_codes(q: torch.Tensor, bits: int, dim: int) -> int:
    if not isinstance(q, torch.Tensor) or q.dtype.is_floating_point or q.dtype == torch.bool:
        raise TypeError(
            f"codes must be an integer torch.Tensor, got "
            f"{q.dtype if isinstance(q, torch.Tensor) else type(q).__name__}"
        )
    if q.dim() == 0:
        raise ValueError("codes must have at least one dimension")
    dim = dim % q.dim()
    run = codes_per_run(bits)
    if q.shape[dim] % run:
        raise ValueError(
            f"{bits}-bit packing needs the packed dimension (size {q.shape[dim]}) to be a "
            f"multiple of {run}"
        )
    return dim


def pack(q: torch.Tensor, bits: int, dim: int = 0) -> torch.Tensor:
    """Pack codes in ``[0, 2**bits)`` along ``dim`` into int32 (that dim shrinks by 32/bits)."""
    dim = _check_codes(q, bits, dim)
    maxq = 2**bits - 1
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > maxq):
        raise ValueError(
            f"codes must lie in [0, {maxq}] for {bits} bits, "
            f"got range [{int(q.min())}, {int(q.max())}]"
        )
    run = codes_per_run(bits)
    words = run * bits // 32
    x = q.movedim(dim, 0).to(torch.int64)
    rest = x.shape[1:]
    x = x.reshape(-1, run, *rest)
    out = torch.zeros(x.shape[0], words, *rest, dtype=torch.int64, device=q.device)
    for k in range(run):
        off = bits * k
        w, sh = divmod(off, 32)
        out[:, w] |= (x[:, k] << sh) & 0xFFFFFFFF
        if sh + bits > 32:
            out[:, w + 1] |= x[:, k] >> (32 - sh)
    out = out.reshape(-1, *rest)
    out = torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)
    return out.movedim(0, dim).contiguous()


def unpack(packed: torch.Tensor, bits: int, dim: int = 0) -> torch.Tensor:
    """Inverse of :func:`pack`: int32 words -> codes (int32) along ``dim``."""
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.int32:
        raise TypeError(
            f"packed must be an int32 torch.Tensor, got "
            f"{packed.dtype if isinstance(packed, torch.Tensor) else type(packed).__name__}"
        )
    run = codes_per_run(bits)
    words = run * bits // 32
    dim = dim % packed.dim()
    if packed.shape[dim] % words:
        raise ValueError(
            f"{bits}-bit packed dimension must be a multiple of {words}, got {packed.shape[dim]}"
        )
    maxq = 2**bits - 1
    x = packed.movedim(dim, 0).to(torch.int64) & 0xFFFFFFFF
    rest = x.shape[1:]
    x = x.reshape(-1, words, *rest)
    out = torch.empty(x.shape[0], run, *rest, dtype=torch.int64, device=packed.device)
    for k in range(run):
        w, sh = divmod(bits * k, 32)
        v = x[:, w] >> sh
        if sh + bits > 32:
            v = v | (x[:, w + 1] << (32 - sh))
        out[:, k] = v & maxq
    return out.reshape(-1, *rest).to(torch.int32).movedim(0, dim).contiguous()


def zero_offset(checkpoint_format: str) -> int:
    """What the format's loader adds to a stored zero: 1 for "gptq" (v1), 0 for "gptq_v2"."""
    if checkpoint_format == "gptq":
        return 1
    if checkpoint_format == "gptq_v2":
        return 0
    raise ValueError(f"checkpoint_format must be 'gptq' or 'gptq_v2', got {checkpoint_format!r}")
