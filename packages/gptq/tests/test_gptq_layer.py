"""Layer algorithm: golden match to a literal port of the reference, exact identities,
dead columns, damping retry, Conv1D / Conv2d, and bad input."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from trainforge_gptq import GPTQ, GPTQConfig, gptq_quantize, rtn_quantize
from trainforge_gptq.gptq import damped_inverse_cholesky

sys.path.insert(0, str(Path(__file__).parent))
from gptq_refport import ref_fasterquant


def _problem(d_in=96, d_out=40, n=1024, rank=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, rank, generator=g) @ torch.randn(rank, d_in, generator=g)
    X = X + 0.1 * torch.randn(n, d_in, generator=g)
    H = (2 / n) * X.t() @ X
    W = torch.randn(d_out, d_in, generator=g)
    return W.to(dtype), H.to(dtype), X.to(dtype)


CASES = [
    dict(group_size=-1),
    dict(group_size=32),
    dict(group_size=32, desc_act=True),
    dict(group_size=32, desc_act=True, static_groups=True),
    dict(group_size=32, static_groups=True),
    dict(group_size=40),  # does not divide 96: the last group has 16 columns
]


GOLDEN = [(4, sym, c) for sym in (True, False) for c in CASES] + [
    (bits, False, dict(group_size=32, desc_act=True)) for bits in (2, 3, 8)
]


@pytest.mark.parametrize(
    "bits, sym, case",
    GOLDEN,
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else str(v),
)
def test_golden_match_reference_port(bits, sym, case):
    W, H, _ = _problem()
    cfg = GPTQConfig(bits=bits, sym=sym, block_size=32, **case)
    res = gptq_quantize(W, H, cfg)
    Q, loss, g_idx, scales, _, _, losses = ref_fasterquant(
        W,
        H,
        bits,
        sym,
        blocksize=32,
        groupsize=case["group_size"],
        actorder=case.get("desc_act", False),
        static_groups=case.get("static_groups", False),
    )
    # Ours runs the lazy batch on three levels and the inverse Cholesky factor another way
    # (exact algebra, other float64 rounding). Row by row (rows are independent) Q equals
    # the port's to rounding, except where the port itself is at the mercy of the last bit:
    # a symmetric grid puts -xmax exactly on a rounding tie (w / scale = -(maxq / 2)), and a
    # dynamic group's first column is quantized exactly as its grid saw it, so when that
    # entry is the row's -xmax the code is 0 or 1 depending on xmax's last bit. Such a row
    # may differ from that column on; nothing else may.
    differ = ((res.Q - Q).abs() > 1e-12).any(dim=1)
    order = res.perm if res.perm is not None else torch.arange(W.shape[1])
    gs = case["group_size"]
    for r in differ.nonzero().flatten().tolist():
        j = int(((res.Q[r, order] - Q[r, order]).abs() > 1e-12).nonzero()[0])
        c = int(order[j])
        assert sym and gs != -1 and not case.get("static_groups", False) and j % gs == 0
        s = res.scales[res.g_idx[c], r]
        ref_code = round(float(Q[r, c] / s)) + 2 ** (bits - 1)
        assert {int(res.qint[r, c]), ref_code} == {0, 1}
    assert int(differ.sum()) <= 1
    same = ~differ
    assert torch.allclose(res.Q[same], Q[same], rtol=0, atol=1e-12)
    assert float(res.losses[same].sum()) == pytest.approx(float(losses[same].sum()), rel=1e-12)
    if not differ.any():
        assert res.loss == pytest.approx(loss, rel=1e-12)
    assert torch.equal(res.g_idx, g_idx)
    assert torch.allclose(res.scales[:, same], scales[:, same], rtol=0, atol=1e-13)
    assert torch.equal(res.dequantize(), res.Q)  # codes + grids reproduce Q exactly
    assert int(res.qint.max()) <= 2**bits - 1


@pytest.mark.parametrize(
    "case",
    [
        dict(group_size=-1),
        dict(group_size=128),
        dict(group_size=128, desc_act=True),
        dict(group_size=64, static_groups=True, desc_act=True),
    ],
)
def test_block_size_changes_nothing(case):
    W, H, _ = _problem(d_in=256, d_out=24)
    rs = [
        gptq_quantize(W, H, GPTQConfig(bits=3, sym=False, block_size=b, **case))
        for b in (1, 32, 128)
    ]
    # The lazy batch is exact algebra: the same integer codes for every block size. Values
    # agree to float64 rounding (a group grid is taken from W updated in another order).
    for r in rs[1:]:
        assert torch.equal(r.qint, rs[0].qint)
        assert torch.allclose(r.Q, rs[0].Q, rtol=0, atol=1e-12)
    if case["group_size"] == -1:
        assert torch.equal(rs[0].Q, rs[1].Q) and torch.equal(rs[0].Q, rs[2].Q)


def test_reported_loss_is_half_trace_of_damped_quadratic_form():
    W, H, _ = _problem()
    for cfg in (
        GPTQConfig(bits=4, group_size=-1),
        GPTQConfig(bits=3, group_size=32, desc_act=True),
    ):
        res = gptq_quantize(W, H, cfg)
        # the quadratic form is permutation invariant: use H in the original order
        Hd = H.clone()
        Hd.diagonal().add_(cfg.damp_percent * H.diagonal().mean())
        D = W - res.Q
        assert res.loss == pytest.approx(0.5 * torch.trace(D @ Hd @ D.t()).item(), rel=1e-9)


def test_dead_columns_are_zeroed():
    W, H, _ = _problem(d_in=64)
    H[5, :] = 0
    H[:, 5] = 0
    res = gptq_quantize(W, H, GPTQConfig(bits=4, group_size=-1, sym=True))
    # a dead column quantizes to the grid point of 0, which is exactly 0 for a sym grid
    assert torch.all(res.Q[:, 5] == 0)


@pytest.mark.parametrize("n", [7, 600])  # 600 > the plain-solve size: recursive inverse
def test_inverse_cholesky_equals_the_reference_chain(n):
    _, H, _ = _problem(d_in=n, d_out=2, n=2 * n, rank=n // 3)
    U, damp = damped_inverse_cholesky(H, 0.01)
    Hd = H.clone()
    Hd.diagonal().add_(0.01 * torch.mean(torch.diagonal(H)))
    # gptq.py:fasterquant: cholesky, cholesky_inverse, cholesky(upper=True)
    ref = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hd)), upper=True)
    assert damp == 0.01
    assert torch.equal(U, U.triu())
    assert torch.allclose(U, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


@pytest.mark.parametrize(
    "case",
    [
        dict(group_size=-1),
        dict(group_size=128, desc_act=True),
        dict(group_size=96),  # outer blocks of lcm(128, 96) = 384 columns
        dict(group_size=64, static_groups=True, desc_act=True),
    ],
)
def test_several_outer_blocks_match_reference_port(case):
    # 1100 columns: two full 512-column outer blocks (384 for g96) and a ragged rest, so
    # every level of the lazy batch runs; asymmetric grids have no exact ties.
    W, H, _ = _problem(d_in=1100, d_out=12, n=2048, rank=64)
    res = gptq_quantize(W, H, GPTQConfig(bits=3, sym=False, **case))
    Q, loss, g_idx, scales, *_ = ref_fasterquant(
        W,
        H,
        3,
        False,
        blocksize=128,
        groupsize=case["group_size"],
        actorder=case.get("desc_act", False),
        static_groups=case.get("static_groups", False),
    )
    assert torch.allclose(res.Q, Q, rtol=0, atol=1e-10)
    assert res.loss == pytest.approx(loss, rel=1e-10)
    assert torch.equal(res.g_idx, g_idx)
    assert torch.allclose(res.scales, scales, rtol=0, atol=1e-12)


def test_cholesky_failure_retries_with_more_damping(caplog):
    H = torch.tensor([[1.0, 1.5], [1.5, 1.0]], dtype=torch.float64)  # eigenvalues -0.5, 2.5
    with caplog.at_level(logging.WARNING, logger="trainforge_gptq.gptq"):
        U, damp = damped_inverse_cholesky(H, 0.01)
    assert damp == pytest.approx(0.64)
    assert "retrying" in caplog.text
    Hd = H + damp * torch.eye(2, dtype=H.dtype)
    assert torch.allclose(U.t() @ U, torch.linalg.inv(Hd))
    with pytest.raises(torch.linalg.LinAlgError, match=r"damp_percent=1\.0"):
        damped_inverse_cholesky(torch.tensor([[1.0, 3.0], [3.0, 1.0]]), 0.01)


def test_add_batch_accumulates_reference_hessian_and_masks_padding():
    lin = nn.Linear(16, 8)
    g = GPTQ(lin, dtype=torch.float64)
    x1, x2 = torch.randn(2, 5, 16), torch.randn(3, 5, 16)
    g.add_batch(x1)
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[0, 3:] = 0
    g.add_batch(torch.where(mask.bool()[..., None], x2, torch.full_like(x2, 1e3)), mask=mask)
    toks = torch.cat([x1.reshape(-1, 16), x2[mask.bool()]]).double()
    assert g.nsamples == 5  # sequences, as in the reference
    assert torch.allclose(g.hessian, 2 / 5 * toks.t() @ toks)


def test_conv1d_and_conv2d_layers():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    c1 = Conv1D(24, 32)  # weight [in=32, out=24]
    g = GPTQ(c1)
    g.add_batch(torch.randn(4, 10, 32))
    res = g.quantize(GPTQConfig(bits=4, group_size=-1))
    assert res.Q.shape == (24, 32) and res.weight().shape == c1.weight.shape
    assert torch.allclose(res.weight(), res.dequantize().t())

    conv = nn.Conv2d(3, 8, 3, padding=1)
    g = GPTQ(conv, dtype=torch.float64)
    x = torch.randn(4, 3, 6, 6)
    g.add_batch(x)
    res = g.quantize(GPTQConfig(bits=4, group_size=9))
    assert res.weight().shape == conv.weight.shape
    cols = nn.Unfold(3, padding=1)(x.double()).permute(1, 0, 2).flatten(1)
    assert torch.allclose(g.hessian, 2 / 4 * cols @ cols.t())
    # error compensation through the unfolded inputs: output error below RTN's
    rtn = rtn_quantize(conv, GPTQConfig(bits=4, group_size=9))
    W = conv.weight.detach().double().flatten(1)
    err = lambda Q: ((W - Q) @ cols).square().sum().item()  # noqa: E731
    assert err(res.Q) < err(rtn.Q)


def test_rtn_matches_plain_rounding():
    W = torch.randn(8, 64, dtype=torch.float64)
    res = rtn_quantize(W, GPTQConfig(bits=4, group_size=16, sym=False))
    for gi in range(4):
        blk = W[:, gi * 16 : (gi + 1) * 16]
        lo = blk.min(1).values.clamp(max=0)
        hi = blk.max(1).values.clamp(min=0)
        scale = (hi - lo) / 15
        zero = torch.round(-lo / scale)
        q = torch.clamp(torch.round(blk / scale[:, None]) + zero[:, None], 0, 15)
        assert torch.allclose(
            res.Q[:, gi * 16 : (gi + 1) * 16], scale[:, None] * (q - zero[:, None])
        )


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bits=5), "bits must be one of"),
        (dict(bits=True), "bits must be one of"),
        (dict(group_size=0), "group_size"),
        (dict(group_size=-2), "group_size"),
        (dict(block_size=0), "block_size"),
        (dict(damp_percent=0.0), "damp_percent"),
        (dict(damp_percent=2.0), "damp_percent"),
        (dict(checkpoint_format="gptq_v3"), "checkpoint_format"),
        (dict(group_size=-1, static_groups=True), "static_groups"),
        (dict(act_group_aware=True, desc_act=True), "act_group_aware"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTQConfig(**kwargs)


@pytest.mark.parametrize("flag", ["sym", "desc_act", "static_groups", "true_sequential"])
def test_config_flags_must_be_bools(flag):
    # GPTQConfig(sym="no") used to quantize symmetrically ("no" is truthy).
    with pytest.raises(TypeError, match=flag):
        GPTQConfig(**{flag: "no"})


def test_all_masked_calibration_is_an_error_not_zero_weights():
    g = GPTQ(nn.Linear(8, 4))
    g.add_batch(torch.randn(2, 3, 8), mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Hessian is all zero"):
        g.quantize()


def test_gptq_quantize_checks_its_inputs():
    W, H, cfg = torch.randn(4, 8), torch.eye(8), GPTQConfig(group_size=-1)
    with pytest.raises(TypeError, match="GPTQConfig"):
        gptq_quantize(W, H, {"bits": 4})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="W must be a 2-D floating-point"):
        gptq_quantize(torch.ones(4, 8, dtype=torch.long), H, cfg)
    with pytest.raises(TypeError, match="H must be a 2-D floating-point"):
        gptq_quantize(W, torch.ones(8), cfg)
    with pytest.raises(ValueError, match=r"H must be \[cols, cols\]"):
        gptq_quantize(W, torch.eye(4), cfg)


def test_bad_layer_and_data():
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        GPTQ(nn.LayerNorm(4))
    g = GPTQ(nn.Linear(8, 4))
    with pytest.raises(ValueError, match="no calibration data"):
        g.quantize()
    with pytest.raises(ValueError, match="NaN/inf"):
        g.add_batch(torch.tensor([[math.nan] * 8]))
    with pytest.raises(ValueError, match="input size 8"):
        g.add_batch(torch.randn(2, 3, 7))
    with pytest.raises(TypeError, match="floating-point"):
        g.add_batch(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must have shape"):
        g.add_batch(torch.randn(2, 3, 8), mask=torch.ones(2, 4))
    with pytest.raises(TypeError, match="GPTQConfig"):
        g.add_batch(torch.randn(2, 8))
        g.quantize({"bits": 4})  # type: ignore[arg-type]
    lin = nn.Linear(8, 4)
    lin.weight.data[0, 0] = math.inf
    g = GPTQ(lin)
    g.add_batch(torch.randn(3, 8))
    with pytest.raises(ValueError, match="NaN/inf"):
        g.quantize()
    with pytest.raises(ValueError, match="shape"):
        g.hessian = torch.eye(3)
    with pytest.raises(ValueError, match="2-D"):
        rtn_quantize(torch.randn(4))
    with pytest.raises(TypeError, match="GPTQConfig"):
        rtn_quantize(nn.Linear(4, 4), "4bit")  # type: ignore[arg-type]
