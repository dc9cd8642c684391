"""Packing round trips, the v1 / v2 zero conventions, g_idx semantics and GPTQLinear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainforge_gptq import (
    GPTQ,
    GPTQConfig,
    GPTQLinear,
    find_params,
    pack,
    rtn_quantize,
    unpack,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dim", [0, 1])
def test_pack_unpack_round_trip(bits, dim):
    q = torch.randint(0, 2**bits, (64, 96) if dim == 0 else (5, 96))
    p = pack(q, bits, dim=dim)
    assert p.dtype == torch.int32
    assert p.shape[dim] == q.shape[dim] * bits // 32
    assert torch.equal(unpack(p, bits, dim=dim), q.to(torch.int32))


def _ref_pack_248(intweight: np.ndarray, bits: int) -> np.ndarray:
    """AutoGPTQ's loop (qlinear_tritonv2.py:pack), restated."""
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < qweight.shape[0]:
        for j in range(i, i + 32 // bits):
            qweight[row] |= intweight[j] << (bits * (j - i))
        i += 32 // bits
        row += 1
    return qweight.astype(np.int32)


def _ref_pack_3(intweight: np.ndarray) -> np.ndarray:
    """gptq:quant.py:Quant3Linear.pack's interleave, restated."""
    qweight = np.zeros((intweight.shape[0] // 32 * 3, intweight.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < qweight.shape[0]:
        for j in range(i, i + 10):
            qweight[row] |= intweight[j] << (3 * (j - i))
        i += 10
        qweight[row] |= intweight[i] << 30
        row += 1
        qweight[row] |= (intweight[i] >> 2) & 1
        i += 1
        for j in range(i, i + 10):
            qweight[row] |= intweight[j] << (3 * (j - i) + 1)
        i += 10
        qweight[row] |= intweight[i] << 31
        row += 1
        qweight[row] |= (intweight[i] >> 1) & 0x3
        i += 1
        for j in range(i, i + 10):
            qweight[row] |= intweight[j] << (3 * (j - i) + 2)
        i += 10
        row += 1
    return qweight.astype(np.int32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_matches_reference_layouts(bits):
    q = torch.randint(0, 2**bits, (64, 16))
    ref = (
        _ref_pack_3(q.numpy().astype(np.uint32))
        if bits == 3
        else _ref_pack_248(q.numpy().astype(np.uint32), bits)
    )
    assert np.array_equal(pack(q, bits).numpy(), ref)


def _quantized_linear(cfg: GPTQConfig, bias=True, seed=0, d_in=128, d_out=64):
    torch.manual_seed(seed)
    lin = nn.Linear(d_in, d_out, bias=bias)
    g = GPTQ(lin)
    g.add_batch(torch.randn(8, 16, d_in) @ torch.randn(d_in, d_in) / d_in**0.5)
    return lin, g.quantize(cfg)


def test_symmetric_4bit_v1_zeros_are_0x77777777():
    lin, res = _quantized_linear(GPTQConfig(bits=4, group_size=32, sym=True))
    m = GPTQLinear.from_result(lin, res)
    assert torch.all(m.qzeros == 2004318071)
    v2 = GPTQLinear.from_result(lin, res, checkpoint_format="gptq_v2")
    assert torch.all(v2.qzeros == 0x88888888 - 2**32)
    # v2 differs from v1 only by +1 in the zeros
    assert torch.equal(unpack(v2.qzeros, 4, 1), unpack(m.qzeros, 4, 1) + 1)
    assert torch.equal(v2.qweight, m.qweight) and torch.equal(v2.scales, m.scales)
    assert torch.equal(m.dequantize(), v2.dequantize())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
def test_dequant_and_forward_equal_fake_quant(bits, fmt):
    cfg = GPTQConfig(bits=bits, group_size=32, sym=True, desc_act=True)
    lin, res = _quantized_linear(cfg)
    m = GPTQLinear.from_result(lin, res, checkpoint_format=fmt)
    Q = res.weight()
    assert torch.allclose(m.dequantize(), Q, rtol=1e-3, atol=1e-6)  # fp16 scales
    x = torch.randn(3, 5, 128)
    fake = nn.functional.linear(x, Q, lin.bias)
    assert torch.allclose(m(x), fake, rtol=1e-3, atol=2e-3)
    assert torch.allclose(
        torch.ops.trainforge.gptq_matmul(
            x, m.qweight, m.qzeros, m.scales, m.g_idx, bits, m.zero_offset
        )
        + m.bias.float(),
        m(x),
    )


def test_act_order_g_idx_semantics():
    _lin, dyn = _quantized_linear(GPTQConfig(bits=4, group_size=32, desc_act=True))
    invperm = torch.argsort(dyn.perm)
    assert torch.equal(dyn.g_idx, (invperm // 32).to(torch.int32))
    assert not torch.equal(dyn.g_idx, (torch.arange(128) // 32).to(torch.int32))
    _, st = _quantized_linear(GPTQConfig(bits=4, group_size=32, desc_act=True, static_groups=True))
    assert torch.equal(st.g_idx, (torch.arange(128) // 32).to(torch.int32))
    _, gar = _quantized_linear(GPTQConfig(bits=4, group_size=32, act_group_aware=True))
    assert torch.equal(gar.g_idx, (torch.arange(128) // 32).to(torch.int32))
    assert torch.equal(gar.dequantize(), gar.Q)
    # GAR keeps groups contiguous: each permuted block of 32 is one original group
    assert all(len(set((gar.perm[i : i + 32] // 32).tolist())) == 1 for i in range(0, 128, 32))


def test_v1_zero_point_of_zero_wraps_and_warns():
    W = torch.rand(32, 64)  # all-positive rows: asymmetric zero point 0
    res = rtn_quantize(W, GPTQConfig(bits=4, group_size=-1, sym=False))
    assert torch.all(res.zeros == 0)
    lin = nn.Linear(64, 32, bias=False)
    with pytest.warns(UserWarning, match="gptq_v2"):
        v1 = GPTQLinear.from_result(lin, res, checkpoint_format="gptq")
    v2 = GPTQLinear.from_result(lin, res, checkpoint_format="gptq_v2")
    assert torch.allclose(v2.dequantize(), res.Q, rtol=1e-3, atol=1e-6)
    # v1 loaders read zero 15 + 1 = 16: the known off-by-one corruption
    s = res.scales.half().float()[0]
    assert torch.allclose(v1.dequantize(), s[:, None] * (res.qint.float() - 16), rtol=1e-5)


def test_gptq_linear_state_dict_round_trip():
    lin, res = _quantized_linear(GPTQConfig(bits=3, group_size=32))
    m = GPTQLinear.from_result(lin, res)
    fresh = GPTQLinear(128, 64, bits=3, group_size=32, bias=True)
    fresh.load_state_dict(m.state_dict())
    x = torch.randn(4, 128)
    assert torch.equal(fresh(x), m(x))
    # qweight 3 bits/weight + fp16 scales, packed zeros, int32 g_idx, fp16 bias
    assert m.packed_bytes() == 128 * 64 * 3 // 8 + 4 * 64 * 2 + 4 * 64 * 3 // 8 + 128 * 4 + 64 * 2


def test_bad_input_packing_and_linear():
    with pytest.raises(ValueError, match="bits must be one of"):
        pack(torch.zeros(8, 1, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="multiple of 8"):
        pack(torch.zeros(12, 1, dtype=torch.long), 4)
    with pytest.raises(ValueError, match=r"lie in \[0, 15\]"):
        pack(torch.full((8, 1), 16), 4)
    with pytest.raises(TypeError, match="integer"):
        pack(torch.zeros(8, 1), 4)
    with pytest.raises(TypeError, match="int32"):
        unpack(torch.zeros(8, 1, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="multiples of 32"):
        GPTQLinear(48, 64, bits=3)
    with pytest.raises(ValueError, match="backend"):
        GPTQLinear(64, 64, bits=4, backend="cuda")
    with pytest.raises(ValueError, match="checkpoint_format"):
        GPTQLinear(64, 64, bits=4, checkpoint_format="awq")
    lin, res = _quantized_linear(GPTQConfig(bits=4))
    with pytest.raises(ValueError, match="weight"):
        GPTQLinear.from_result(nn.Linear(64, 64), res)
    with pytest.raises(TypeError, match="QuantResult"):
        GPTQLinear.from_result(lin, {"Q": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be 2-D"):
        find_params(torch.randn(4), 4, True)
