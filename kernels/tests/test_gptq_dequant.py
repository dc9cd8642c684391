"""gptq_dequant: Triton kernels vs the torch reference (TRITON_INTERPRET=1 on CPU), the
reference vs an independent per-element decode, and the custom ops."""

from __future__ import annotations

import math

import pytest
import torch

from trainforge_kernels.gptq_dequant import (
    gptq_dequantize,
    gptq_dequantize_reference,
    gptq_matmul,
    gptq_matmul_reference,
)
from trainforge_kernels.testing import needs_interpreter_reason, poisoned_like
from trainforge_kernels.testing import test_device as _device


def _inputs(k, n, bits, gs, m=3, act_order=False, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    run = 32 // math.gcd(32, bits)
    words = run * bits // 32
    n_groups = -(-k // gs)
    qweight = torch.randint(-(2**31), 2**31, (k // run * words, n), generator=g).to(torch.int32)
    qzeros = torch.randint(-(2**31), 2**31, (n_groups, n // run * words), generator=g).to(
        torch.int32
    )
    scales = torch.rand(n_groups, n, generator=g) * 0.1
    g_idx = torch.arange(k) // gs
    if act_order:
        g_idx = g_idx[torch.randperm(k, generator=g)]
    x = torch.randn(m, k, generator=g)
    return [t.to(device) for t in (x, qweight, qzeros, scales, g_idx.to(torch.int32))]


def _decode(word_stream: list[int], bits: int, idx: int) -> int:
    """Code ``idx`` of a little-endian bit stream of int32 words (independent of the op)."""
    value = 0
    for j, w in enumerate(word_stream):
        value |= (w & 0xFFFFFFFF) << (32 * j)
    return (value >> (bits * idx)) & ((1 << bits) - 1)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("offset", [0, 1])
def test_reference_matches_per_element_decode(bits, offset):
    k, n, gs = 64, 32, 16
    _, qw, qz, s, g = _inputs(k, n, bits, gs, act_order=True)
    w = gptq_dequantize_reference(qw, qz, s, g, bits, offset)
    run = 32 // math.gcd(32, bits)
    words = run * bits // 32
    for i, o in [(0, 0), (k - 1, n - 1), (10, 21), (33, 5), (21, 30)]:
        r = i // run
        q = _decode([int(qw[r * words + j, o]) for j in range(words)], bits, i % run)
        grp = int(g[i])
        zr = o // run
        z = _decode([int(qz[grp, zr * words + j]) for j in range(words)], bits, o % run)
        assert w[i, o].item() == pytest.approx(s[grp, o].item() * (q - z - offset), rel=1e-6)


SHAPES = [(64, 32, 32, 1), (160, 96, 32, 5), (96, 64, 40, 17), (256, 160, 128, 33)]


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("k, n, gs, m", SHAPES)
def test_triton_matches_reference(bits, k, n, gs, m):
    from trainforge_kernels.gptq_dequant import gptq_dequantize_triton, gptq_matmul_triton

    if k % (32 // math.gcd(32, bits)) or n % (32 // math.gcd(32, bits)):
        pytest.skip("shape not packable at this width")
    dev = _device()
    x, qw, qz, s, g = _inputs(k, n, bits, gs, m=m, act_order=(m % 2 == 1), device=dev)
    ref_w = gptq_dequantize_reference(qw, qz, s, g, bits, 1)
    out = gptq_dequantize_triton(qw, qz, s, g, bits, 1, out_dtype=torch.float32)
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out, ref_w, rtol=0, atol=0)
    for off in (0, 1):
        ref = gptq_matmul_reference(x, qw, qz, s, g, bits, off)
        got = gptq_matmul_triton(x, qw, qz, s, g, bits, off)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
def test_triton_writes_every_output_element(monkeypatch):
    from trainforge_kernels import gptq_dequant as mod

    x, qw, qz, s, g = _inputs(96, 96, 4, 32, m=19)
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **k: poisoned_like(real_empty(*a, **k)))
    out = mod.gptq_matmul_triton(x, qw, qz, s, g, 4, 1)
    w = mod.gptq_dequantize_triton(qw, qz, s, g, 4, 1)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()


def test_custom_ops_and_fake():
    x, qw, qz, s, g = _inputs(64, 32, 4, 32, m=4)
    out = torch.ops.trainforge.gptq_matmul(x, qw, qz, s, g, 4, 1)
    torch.testing.assert_close(out, gptq_matmul_reference(x, qw, qz, s, g, 4, 1))
    w = gptq_dequantize(qw, qz, s.half(), g, 4, 0)
    assert w.dtype == torch.float16 and w.shape == (64, 32)
    torch.library.opcheck(torch.ops.trainforge.gptq_matmul.default, (x, qw, qz, s, g, 4, 1))
    torch.library.opcheck(torch.ops.trainforge.gptq_dequantize.default, (qw, qz, s, g, 4, 1))
    x3 = x.reshape(2, 2, 64)
    assert gptq_matmul(x3, qw, qz, s, g, 4, 1).shape == (2, 2, 32)


def test_bad_input():
    x, qw, qz, s, g = _inputs(64, 32, 4, 32)
    with pytest.raises(ValueError, match="bits must be one of"):
        gptq_dequantize(qw, qz, s, g, 5, 1)
    with pytest.raises(ValueError, match="zero_offset"):
        gptq_dequantize(qw, qz, s, g, 4, 2)
    with pytest.raises(TypeError, match="qweight must be int32"):
        gptq_dequantize(qw.long(), qz, s, g, 4, 1)
    with pytest.raises(ValueError, match="qweight must have shape"):
        gptq_dequantize(qw[:-1], qz, s, g, 4, 1)
    with pytest.raises(ValueError, match="x must be a float tensor"):
        gptq_matmul(x[:, :10], qw, qz, s, g, 4, 1)
