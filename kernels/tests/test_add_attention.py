"""The fused CPU attention core (add_attention_cpu) against its torch reference."""

from __future__ import annotations

import math

import pytest
import torch

from trainforge_kernels import add_attention as mod
from trainforge_kernels.add_attention import (
    add_attention_cpu,
    add_attention_reference,
    native_add_attention,
)


def _inputs(B, N, H, d, m, nb, kw, dtype, seed, stacked=True):
    g = torch.Generator().manual_seed(seed)
    C = H * d
    if stacked:  # the two halves of one [B, N, 2C] projection, as the module passes them
        qkv = torch.randn(B, N, 2 * C, generator=g, dtype=dtype)
        qk, v = qkv[..., :C], qkv[..., C:]
    else:
        qk = torch.randn(B, N, C, generator=g, dtype=dtype)
        v = torch.randn(B, N, C, generator=g, dtype=dtype)
    anchor = torch.nn.functional.normalize(torch.randn(H, m, d, generator=g, dtype=dtype), dim=-1)
    A = torch.randn(H, nb, m, generator=g, dtype=dtype)
    mvec = 0.3 * torch.rand(H, m, generator=g, dtype=dtype)
    w = torch.randn(H, kw, generator=g, dtype=dtype) / math.sqrt(kw)
    return qk, v, anchor, A, mvec, w


def _pre_threshold(qk, anchor, A, mvec):
    """The code projections y (bit = [y > 0]), float64, straight from the definition."""
    B, N, _ = qk.shape
    H, _, d = anchor.shape
    x = qk.double().reshape(B, N, H, d).transpose(1, 2)
    x = x / x.norm(dim=-1, keepdim=True)
    k = ((x.unsqueeze(-2) - anchor.double().unsqueeze(1)) ** 2).sum(-1)  # [B, H, N, m]
    sigma = k.mean((-1, -2), keepdim=True)
    kappa = torch.exp(-k / (2 * sigma)) - mvec.double()[:, None, :]
    return torch.einsum("bhnm,hrm->bhnr", kappa, A.double())


def _explicit(qk, v, anchor, A, mvec, w):
    """The attention core per (b, h) with Python loops for the convolution (float64)."""
    B, N, _ = qk.shape
    H, _, d = anchor.shape
    kw = w.shape[1]
    c = (_pre_threshold(qk, anchor, A, mvec) > 0).double()
    vh = v.double().reshape(B, N, H, d).transpose(1, 2)
    o = 0.5 * vh + (c @ c.transpose(-1, -2)) @ vh / math.pi  # the quadratic form
    o = o / o.norm(dim=-1, keepdim=True)
    conv = torch.zeros_like(o)
    for j in range(kw):
        shift = j - kw // 2
        for n in range(N):
            if 0 <= n + shift < N:
                conv[:, :, n] += w.double()[:, j, None] * vh[:, :, n + shift]
    return (o + conv).transpose(1, 2).reshape(B, N, H * d)


needs_native = pytest.mark.skipif(
    native_add_attention() is None, reason="no C compiler built the fused loop"
)


@pytest.mark.parametrize(
    ("B", "N", "H", "d", "m", "nb", "kw"),
    [(2, 37, 3, 8, 7, 13, 5), (1, 9, 1, 4, 3, 16, 9), (3, 65, 2, 6, 25, 64, 3)],
)
def test_reference_equals_the_definition(B, N, H, d, m, nb, kw):
    args = _inputs(B, N, H, d, m, nb, kw, torch.float64, seed=B * N + H)
    torch.testing.assert_close(
        add_attention_reference(*args), _explicit(*args), atol=1e-12, rtol=1e-10
    )


@needs_native
@pytest.mark.parametrize("H", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(("B", "N", "d", "m", "nb", "kw"), [(2, 131, 8, 25, 16, 9),
                                                            (1, 7, 5, 3, 33, 3),
                                                            (3, 64, 32, 10, 64, 1)])  # fmt: skip
def test_native_equals_reference_float64(B, N, H, d, m, nb, kw):
    args = _inputs(B, N, H, d, m, nb, kw, torch.float64, seed=N + 10 * H + nb)
    with torch.no_grad():
        got = add_attention_cpu(*args)
    torch.testing.assert_close(got, add_attention_reference(*args), atol=1e-12, rtol=1e-10)


@needs_native
@pytest.mark.parametrize(("B", "N", "H", "d"), [(1, 3136, 1, 32), (2, 195, 5, 32), (1, 49, 2, 64)])
def test_native_equals_reference_float32(B, N, H, d):
    args = _inputs(B, N, H, d, 25, 16, 9, torch.float32, seed=N + H)
    y = _pre_threshold(*args[:1], *args[2:5])
    # float rounding may flip a bit whose value is within rounding of 0: these seeds have none
    assert y.abs().min() > 1e-5
    with torch.no_grad():
        got = add_attention_cpu(*args)
    want = add_attention_reference(*(t.double() for t in args)).float()
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@needs_native
def test_native_does_not_depend_on_threads_or_layout(monkeypatch):
    stacked = _inputs(2, 300, 2, 16, 25, 16, 9, torch.float32, seed=3)
    plain = tuple(t.contiguous() for t in stacked)
    monkeypatch.setattr(mod, "_PARALLEL_MIN", 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = add_attention_cpu(*stacked)
        torch.set_num_threads(2)
        two = add_attention_cpu(*stacked)
        two_plain = add_attention_cpu(*plain)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two) and torch.equal(one, two_plain)


@needs_native
def test_the_constant_head_width_path_equals_the_generic_one():
    # d == 32 runs an inlined copy with a constant width; d == 31 and 33 the generic one
    for d in (31, 32, 33):
        args = _inputs(1, 70, 2, d, 25, 16, 9, torch.float64, seed=d)
        torch.testing.assert_close(
            add_attention_cpu(*args), add_attention_reference(*args), atol=1e-12, rtol=1e-10
        )


def test_off_switch_and_gradients_take_the_reference(monkeypatch):
    args = _inputs(1, 20, 2, 4, 5, 8, 3, torch.float64, seed=0)
    monkeypatch.setenv("TRAINFORGE_ADDATTN_NATIVE", "0")
    assert native_add_attention() is None
    assert torch.equal(add_attention_cpu(*args), add_attention_reference(*args))
    monkeypatch.delenv("TRAINFORGE_ADDATTN_NATIVE")
    v = args[1].clone().requires_grad_(True)
    out = add_attention_cpu(args[0], v, *args[2:])  # a gradient is needed: the torch path
    out.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()


def test_falls_back_without_a_compiler(monkeypatch, tmp_path):
    monkeypatch.setattr(mod, "_native_lib", None)
    monkeypatch.setenv("TRAINFORGE_KERNELS_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="TRAINFORGE_ADDATTN_NATIVE=0"):
        assert native_add_attention() is None
    args = _inputs(1, 20, 2, 4, 5, 8, 3, torch.float64, seed=1)
    with torch.no_grad():
        assert torch.equal(add_attention_cpu(*args), add_attention_reference(*args))
    monkeypatch.setattr(mod, "_native_lib", None)  # rebuilt when needed


def test_bad_input():
    qk, v, anchor, A, mvec, w = _inputs(1, 10, 2, 4, 5, 8, 3, torch.float32, seed=0)
    for fn in (add_attention_cpu, add_attention_reference):
        with pytest.raises(TypeError, match="qk must be a torch.Tensor"):
            fn(qk.numpy(), v, anchor, A, mvec, w)
        with pytest.raises(ValueError, match="qk must be"):
            fn(qk[..., :7], v, anchor, A, mvec, w)
        with pytest.raises(ValueError, match="v must have"):
            fn(qk, v[:, :9], anchor, A, mvec, w)
        with pytest.raises(ValueError, match="anchor must be"):
            fn(qk, v, anchor[0], A, mvec, w)
        with pytest.raises(ValueError, match="A must be"):
            fn(qk, v, anchor, A[:, :, :4], mvec, w)
        with pytest.raises(ValueError, match="nbits must be in"):
            fn(qk, v, anchor, torch.zeros(2, 65, 5), mvec, w)
        with pytest.raises(ValueError, match="mvec must be"):
            fn(qk, v, anchor, A, mvec[:1], w)
        with pytest.raises(ValueError, match="k odd"):
            fn(qk, v, anchor, A, mvec, torch.zeros(2, 4))
        with pytest.raises(TypeError, match="A is torch.float64"):
            fn(qk, v, anchor, A.double(), mvec, w)
        with pytest.raises(TypeError, match="floating point"):
            fn(*(t.to(torch.int32) for t in (qk, v, anchor, A, mvec, w)))
        with pytest.raises(ValueError, match="empty"):
            fn(qk[:, :0], v[:, :0], anchor, A, mvec, w)
