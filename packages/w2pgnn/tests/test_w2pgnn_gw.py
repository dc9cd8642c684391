"""GW distances: invariants, and the entropic loss against a brute-force 4-index sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainforge_w2pgnn import entropic_gw, gw_distance, synthetic_graphon
from trainforge_w2pgnn.gw import EntropicSettings, _entropic_plan


@pytest.mark.parametrize("loss", ["kl_loss", "square_loss"])
def test_gw_zero_on_identical(loss):
    w = synthetic_graphon(0, 30)
    assert gw_distance(w, w, loss=loss) < 1e-6


def test_gw_symmetric_square_loss():
    a, b = synthetic_graphon(0, 30), synthetic_graphon(9, 30)
    assert abs(gw_distance(a, b, "square_loss") - gw_distance(b, a, "square_loss")) < 1e-5
    assert gw_distance(a, b, "square_loss") > 0.1


def test_gw_kl_is_not_symmetric():
    # The reference's kl_loss: L(a, b) = a log(a / b) - a + b is not symmetric, nor is its GW.
    a, b = synthetic_graphon(0, 30), synthetic_graphon(9, 30)
    assert abs(gw_distance(a, b) - gw_distance(b, a)) > 0.05


@pytest.mark.parametrize("loss", ["kl_loss", "square_loss"])
def test_gw_permutation_invariant(loss):
    a, b = synthetic_graphon(0, 30), synthetic_graphon(9, 30)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    ap = a[perm][:, perm]
    assert abs(gw_distance(ap, b, loss) - gw_distance(a, b, loss)) < 1e-4
    assert gw_distance(ap, a, loss) < 1e-4


def test_entropic_loss_matches_brute_force():
    a, b = synthetic_graphon(2, 6), synthetic_graphon(9, 5)
    # The reference's Sinkhorn stops at a loose threshold (0.1), so its plan's marginals are
    # only roughly uniform and its loss (which assumes them) is not the quadratic form. With
    # the Sinkhorn run to convergence the two agree.
    kw = dict(epsilon=5e-2, sinkhorn_threshold=1e-12, sinkhorn_max_iter=500, max_iter=20)
    t = _entropic_plan(a, b, EntropicSettings(**kw))
    np.testing.assert_allclose(t.sum(1).numpy(), np.full(6, 1 / 6), atol=1e-7)
    an, bn, tn = a.numpy(), b.numpy(), t.numpy()
    brute = 0.0
    for i in range(6):
        for k in range(6):
            for j in range(5):
                for m in range(5):
                    brute += 0.5 * (an[i, k] - bn[j, m]) ** 2 * tn[i, j] * tn[k, m]
    assert abs(entropic_gw(a, b, **kw).item() - brute) < 1e-6


def test_entropic_loss_is_differentiable_and_smaller_for_closer_graphons():
    a, b = synthetic_graphon(0, 12), synthetic_graphon(9, 12)
    c = a.clone().requires_grad_()
    loss = entropic_gw(c, b)
    loss.backward()
    assert torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0
    assert entropic_gw(a, a).item() < loss.item()


def _autograd_grad(c1, c2):
    c = c1.clone().requires_grad_()
    loss = entropic_gw(c, c2)
    loss.backward()
    return loss.detach(), c.grad


@pytest.mark.parametrize("r", [10, 20])
def test_vjp_equals_autograd_through_the_unrolled_solver(r):
    from trainforge_w2pgnn.gw import entropic_gw_vjp

    basis = torch.stack([synthetic_graphon(k, r) for k in (0, 10, 3)])
    mix = torch.einsum("k,kij->ij", torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), basis)
    target = 0.6 * basis[0] + 0.4 * basis[1]
    loss, grad = _autograd_grad(mix, target)
    for rtol in (0.0, 1e-9):
        ours, ours_grad = entropic_gw_vjp(mix, target, fixed_point_rtol=rtol)
        assert abs(ours.item() - loss.item()) < 1e-14
        torch.testing.assert_close(ours_grad, grad, atol=1e-10 * grad.abs().max().item(), rtol=0)


def test_vjp_fixed_point_skips_iterations(monkeypatch):
    # At the fixed point the forward pass stops and the backward replays the last step: fewer
    # Sinkhorn half-steps, the same gradient (the plan moves by rounding there).
    import trainforge_w2pgnn.gw as gw

    # (measured: 20 half-steps instead of 44 here; the benchmark's r = 100 fits take half the
    # time; on graphons whose plan keeps moving above the tolerance nothing is skipped)
    basis = torch.stack([synthetic_graphon(k, 12) for k in (2, 9)])
    mix, target = basis.mean(0), 0.7 * basis[0] + 0.3 * basis[1]
    calls = {"n": 0}
    orig = gw._lse_softmax

    def counting(k, dim):
        calls["n"] += 1
        return orig(k, dim)

    monkeypatch.setattr(gw, "_lse_softmax", counting)
    full, full_grad = gw.entropic_gw_vjp(mix, target)
    n_full = calls["n"]
    calls["n"] = 0
    fast, fast_grad = gw.entropic_gw_vjp(mix, target, fixed_point_rtol=1e-9)
    assert calls["n"] < n_full / 2
    assert abs(fast.item() - full.item()) < 1e-12
    torch.testing.assert_close(fast_grad, full_grad, atol=1e-9 * full_grad.abs().max(), rtol=0)


def test_solver_settings_held_once():
    import inspect

    from trainforge_w2pgnn import FeasibilityConfig
    from trainforge_w2pgnn.gw import entropic_gw_jvp, entropic_gw_vjp

    for fn in (entropic_gw, entropic_gw_jvp, entropic_gw_vjp, _entropic_plan):
        assert "epsilon" not in inspect.signature(fn).parameters
    s, cfg = EntropicSettings(), FeasibilityConfig()
    assert (s.epsilon, s.max_iter, s.tol, s.sinkhorn_threshold, s.sinkhorn_max_iter) == (
        1e-5,
        100,
        1e-6,
        0.1,
        100,
    )
    assert cfg.solver == s
