"""Binary linear-angular attention and KSH coder."""

from __future__ import annotations

import math

import pytest
import torch

from trainforge_shiftaddvit import (
    AddLinearAttention,
    BinaryCoder,
    binary_attention_reference,
    linear_angular_attention,
)


def _qk(b=2, h=2, n=48, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, n, d, generator=g)
    return x / x.norm(dim=-1, keepdim=True)


def test_linear_form_equals_dense_binary_reference():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2, (2, 3, 40, 16), generator=g).float()
    v = torch.randn(2, 3, 40, 8, generator=g, dtype=torch.float64)
    got = linear_angular_attention(codes.double(), v)
    dense = 0.5 * v + (1 / math.pi) * (codes.double() @ codes.double().transpose(-1, -2)) @ v
    torch.testing.assert_close(got, dense)
    # the quadratic form through the packed AND-popcount kernel
    torch.testing.assert_close(binary_attention_reference(codes, v), dense)


def test_masked_sum_state_is_nbits_by_d_and_equals_matmul():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 2, (50, 16), generator=g).float()
    v = torch.randn(50, 8, generator=g)
    state = codes.t() @ v
    assert state.shape == (16, 8)
    masked = torch.stack([v[codes[:, b] > 0].sum(0) for b in range(16)])
    torch.testing.assert_close(state, masked, atol=1e-6, rtol=1e-6)


def test_ksh_codes_are_binary_deterministic_and_survive_reload_without_refit():
    torch.manual_seed(0)
    qk = _qk()
    coder = BinaryCoder(2, 8, nbits=16, anchors=10, topk=5, iters=30, fit="explicit")
    coder.fit(qk)
    c1, c2 = coder(qk), coder(qk)
    assert set(c1.unique().tolist()) <= {0.0, 1.0}
    assert c1.shape == (2, 2, 48, 16)
    assert torch.equal(c1, c2)
    fresh = BinaryCoder(2, 8, nbits=16, anchors=10, topk=5, iters=30, fit="explicit")
    with pytest.raises(RuntimeError, match="not fitted"):
        fresh(qk)
    fresh.load_state_dict(coder.state_dict())
    assert torch.equal(fresh(qk), c1)  # the fitted flag is state: no refit, same codes
    # first_batch coders do not refit once loaded either
    fb = BinaryCoder(2, 8, nbits=16, anchors=10, topk=5, iters=30).train()
    fb.load_state_dict(coder.state_dict())
    assert torch.equal(fb(_qk(seed=9)), coder(_qk(seed=9)))


def test_ksh_hamming_similarity_separates_similar_from_dissimilar_pairs():
    torch.manual_seed(0)
    qk = _qk(b=1, h=1, n=80, d=8, seed=3)
    coder = BinaryCoder(1, 8, nbits=16, anchors=25, topk=10, iters=40, fit="explicit")
    coder.fit(qk)
    c = coder(qk)[0, 0]
    pm = 2 * c - 1
    ham_sim = pm @ pm.t()  # 16 - 2 * Hamming distance
    sim = qk[0, 0] @ qk[0, 0].t()
    top = sim.topk(10, dim=-1).indices
    bottom = sim.topk(10, dim=-1, largest=False).indices
    assert ham_sim.gather(1, top).mean() > ham_sim.gather(1, bottom).mean() + 4


def _dense_ksh_fit(coder: BinaryCoder, x: torch.Tensor) -> torch.Tensor:
    """The reference's loop (pvt/hashing/ksh.py), written with the explicit N x N matrix."""
    N = x.shape[2]
    sim = x @ x.transpose(-1, -2)
    S = torch.zeros_like(sim)
    S.scatter_(3, sim.topk(coder.topk, dim=3).indices, 1.0)
    S.scatter_(3, sim.topk(coder.topk, dim=3, largest=False).indices, -1.0)
    anchor = x[:1, :, torch.randperm(N)[: coder.m]]
    k = ((x.unsqueeze(-2) - anchor.unsqueeze(-3)) ** 2).sum(-1)
    k = torch.exp(-k / (2 * k.mean((-1, -2), keepdim=True)))
    K = k - k.mean(-2, keepdim=True).mean(0, keepdim=True)
    S = S * coder.nbits
    A = coder.A.clone()

    def loss_of(y):
        ys = -torch.einsum("bhn,bhnl->bhl", y, S) / (N * coder.nbits)
        return torch.einsum("bhl,bhl->bh", ys, y).mean()

    for r in range(coder.nbits):
        a_old = A[:, r].clone()
        a = a_old.clone().requires_grad_(True)
        opt = torch.optim.SGD([a], lr=coder.lr, momentum=0.9, nesterov=True)
        for _ in range(coder.iters):
            loss = loss_of(2 * torch.sigmoid(torch.einsum("bhnm,hm->bhn", K, a)) - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        a = a.detach()
        y_old = torch.where(torch.einsum("bhnm,hm->bhn", K, a_old) > 0, 1.0, -1.0).to(K.dtype)
        y_new = torch.where(torch.einsum("bhnm,hm->bhn", K, a) > 0, 1.0, -1.0).to(K.dtype)
        new = bool(loss_of(y_new) < loss_of(y_old))
        A[:, r] = a if new else a_old
        y = y_new if new else y_old
        S = S - torch.einsum("bhn,bhm->bhnm", y, y)
    return A


def test_fast_ksh_fit_equals_the_dense_reference_loop():
    qk = _qk(b=2, h=2, n=30, d=6, seed=4).double()
    torch.manual_seed(5)
    coder = BinaryCoder(2, 6, nbits=6, anchors=8, topk=4, iters=20, fit="explicit").double()
    a0 = coder.A.clone()
    torch.manual_seed(6)
    coder.fit(qk)
    ref = BinaryCoder(2, 6, nbits=6, anchors=8, topk=4, iters=20, fit="explicit").double()
    ref.A.copy_(a0)
    torch.manual_seed(6)
    want = _dense_ksh_fit(ref, qk)
    torch.testing.assert_close(coder.A, want, atol=1e-8, rtol=1e-6)


def test_mean_mode_thresholds_at_tensor_mean_with_clamp_gradient():
    x = torch.tensor([[[[0.9, -0.2, 0.1, 0.5]]]], requires_grad=True)
    coder = BinaryCoder(1, 4, mode="mean")
    c = coder(x)
    assert torch.equal(c.detach(), (x > x.mean()).float().detach())
    c.sum().backward()
    assert torch.equal(x.grad, torch.tensor([[[[1.0, 0.0, 1.0, 1.0]]]]))


def test_attention_output_follows_the_formula():
    torch.manual_seed(0)
    att = AddLinearAttention(
        16, 2, qkv_bias=True, coder=BinaryCoder(2, 8, anchors=8, topk=3, iters=5)
    )
    x = torch.randn(3, 20, 16)
    att.train()
    att(x)  # fits on the first batch
    att.eval()
    with torch.no_grad():
        qk, v = att.heads(x)
        c = att.coder(qk)
        out = 0.5 * v + (1 / math.pi) * (c @ c.transpose(-1, -2)) @ v
        out = out / out.norm(dim=-1, keepdim=True) + att.dconv(v)
        want = att.proj(out.transpose(1, 2).reshape(3, 20, 16))
        torch.testing.assert_close(att(x), want, atol=1e-5, rtol=1e-5)
        # extra positional args (PVTv2's feat_size) are accepted
        torch.testing.assert_close(att(x, [4, 5]), want, atol=1e-5, rtol=1e-5)


def test_hash_gradient_reaches_the_shared_projection():
    torch.manual_seed(0)
    att = AddLinearAttention(16, 2, coder=BinaryCoder(2, 8, anchors=8, topk=3, iters=5)).train()
    att(torch.randn(2, 20, 16)).pow(2).sum().backward()
    assert att.to_qk.weight.grad.abs().sum() > 0 and att.to_v.weight.grad.abs().sum() > 0


def test_fast_code_projection_equals_the_kernel_feature_formula():
    # _project folds mvec into a bias and runs in place without autograd: the same
    # pre-threshold values as (kappa(x) - mvec) . A and the same codes
    qk = _qk(b=2, h=3, n=40, d=8, seed=7).double()
    coder = BinaryCoder(3, 8, nbits=16, anchors=10, topk=5, iters=10, fit="explicit").double()
    coder.fit(qk)
    want = torch.einsum("bhnm,hkm->bhnk", coder._kernel(qk), coder.A)
    with torch.no_grad():
        torch.testing.assert_close(coder._project(qk), want, atol=1e-12, rtol=1e-10)
        assert torch.equal(coder(qk), (want > 0).double())
    x = qk.clone().requires_grad_(True)
    torch.testing.assert_close(coder._project(x), want, atol=1e-12, rtol=1e-10)
    # the cached anchor terms follow the buffers (a refit, a loaded state)
    other = BinaryCoder(3, 8, nbits=16, anchors=10, topk=5, iters=10, fit="explicit").double()
    other.fit(_qk(b=2, h=3, n=40, d=8, seed=8).double())
    with torch.no_grad():
        coder(qk)
        coder.load_state_dict(other.state_dict())
        assert torch.equal(coder(qk), other(qk))


def test_eval_attention_equals_the_autograd_path_and_follows_weight_updates():
    torch.manual_seed(0)
    att = AddLinearAttention(
        24, 3, qkv_bias=True, coder=BinaryCoder(3, 8, anchors=8, topk=3, iters=5)
    ).double()
    x = torch.randn(2, 30, 24, dtype=torch.double)
    att.train()
    att(x)
    att.eval()
    grad_path = att(x)  # autograd on: separate to_qk / to_v, out-of-place arithmetic
    with torch.no_grad():
        fast = att(x)  # fused to_qk/to_v GEMM, in place
        torch.testing.assert_close(fast, grad_path.detach(), atol=1e-12, rtol=1e-10)
        att.to_v.weight.mul_(2.0)  # the cached stacked weight must not go stale
        att.to_qk.bias.add_(0.1)
        after = att(x)
    torch.testing.assert_close(after, att(x).detach(), atol=1e-12, rtol=1e-10)
    assert not torch.allclose(after, fast)


def _fitted_attention(dim, heads, n, dtype, seed):
    torch.manual_seed(seed)
    att = AddLinearAttention(
        dim, heads, qkv_bias=True, coder=BinaryCoder(heads, dim // heads, anchors=6, topk=3,
                                                     iters=5)
    ).to(dtype)  # fmt: skip
    x = torch.randn(2, n, dim, dtype=dtype)
    att.train()
    att(x)
    return att.eval(), x


@pytest.mark.parametrize("heads", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_cpu_loop_equals_the_torch_path(heads, dtype, monkeypatch):
    """The no-autograd forward runs the fused C loop (trainforge_kernels.add_attention_cpu);
    it equals the eager in-place path and the autograd path up to float rounding."""
    from trainforge_kernels.add_attention import native_add_attention

    if native_add_attention() is None:
        pytest.skip("no C compiler built the fused loop")
    att, x = _fitted_attention(8 * heads, heads, 31 + 2 * heads, dtype, seed=heads)
    calls = []
    import trainforge_shiftaddvit.attention as attention_module

    real = attention_module.add_attention_cpu
    monkeypatch.setattr(
        attention_module, "add_attention_cpu", lambda *a: calls.append(1) or real(*a)
    )
    with torch.no_grad():
        fused = att(x)
        assert calls, "the fused loop did not run"
        monkeypatch.setenv("TRAINFORGE_ADDATTN_NATIVE", "0")
        eager = att(x)
        assert len(calls) == 1  # switched off: the eager path
    monkeypatch.delenv("TRAINFORGE_ADDATTN_NATIVE")
    grad_path = att(x).detach()  # autograd on: never the fused loop
    assert len(calls) == 1
    tol = {"atol": 1e-12, "rtol": 1e-10} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    torch.testing.assert_close(fused, eager, **tol)
    torch.testing.assert_close(fused, grad_path, **tol)


def test_fused_cpu_loop_steps_aside_for_hooks_and_unfitted_coders():
    att, x = _fitted_attention(16, 2, 20, torch.float32, seed=0)
    seen = []
    handle = att.coder.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        att(x)
    handle.remove()
    assert seen == [(2, 2, 20, 16)]  # a hooked coder runs (energy and mult counters)
    fresh = AddLinearAttention(16, 2, coder=BinaryCoder(2, 8, anchors=6, topk=3, iters=5))
    with torch.no_grad(), pytest.raises(RuntimeError, match="not fitted"):
        fresh.eval()(x)


def test_shift_qk_and_v_run_as_one_rounding_and_one_gemm_with_the_same_output():
    from trainforge_shiftaddvit import ShiftLinear

    att, x = _fitted_attention(24, 3, 33, torch.float64, seed=4)
    att.to_qk = ShiftLinear.from_linear(att.to_qk).double()
    att.to_v = ShiftLinear.from_linear(att.to_v).double()
    calls = []
    att.to_qk.gemm_operands = (lambda f: lambda x: calls.append(1) or f(x))(att.to_qk.gemm_operands)
    with torch.no_grad():
        qk, v = att._qk_v(x)
        assert len(calls) == 1  # one rounding for both
        torch.testing.assert_close(qk, att.to_qk(x), atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(v, att.to_v(x), atol=1e-12, rtol=1e-12)
        fast = att(x)
        att.to_v.shift.sub_(1.0)  # the stacked weights follow the parameters
        after = att(x)
    grad_path = att(x).detach()
    torch.testing.assert_close(after, grad_path, atol=1e-12, rtol=1e-10)
    assert not torch.allclose(after, fast)
