"""NAdamW, Cautious AdamW and Signum against plain float64 transcriptions of optax/Levanter."""

from __future__ import annotations

import math

import torch

from trainforge_optim_bench import CautiousAdamW, NAdamW, Signum


def _grads(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(n)]


def _optax_adam(p, grads, lr, b1, b2, eps, wd, nesterov=False, cautious=False):
    """optax.scale_by_adam (+ nesterov) or Levanter's scale_by_cautious, then decayed weights."""
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if nesterov:
            m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        else:
            m_hat = m / (1 - b1**t)
        u = m_hat / (torch.sqrt(v / (1 - b2**t)) + eps)
        if cautious:
            mask = ((u * g) > 0).double()
            u = u * mask / (mask.mean() + eps)
        p = p - lr * (u + wd * p)
    return p


def _run(opt_cls, grads, **kw):
    init = torch.linspace(-1, 1, 15, dtype=torch.float64).view(5, 3)
    p = torch.nn.Parameter(init.clone())
    opt = opt_cls([p], **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    return init, p.detach()


def test_nadamw_matches_optax_nesterov_adam():
    grads = _grads(6)
    init, got = _run(NAdamW, grads, lr=1e-2, betas=(0.95, 0.98), eps=1e-10, weight_decay=0.1)
    want = _optax_adam(init, grads, 1e-2, 0.95, 0.98, 1e-10, 0.1, nesterov=True)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # and differs from plain Adam (the test can fail)
    plain = _optax_adam(init, grads, 1e-2, 0.95, 0.98, 1e-10, 0.1)
    assert (got - plain).abs().max() > 1e-4


def test_cautious_matches_levanter_and_masks_disagreeing_coordinates():
    grads = _grads(6, seed=1)
    init, got = _run(CautiousAdamW, grads, lr=1e-2, betas=(0.95, 0.98), eps=1e-15, weight_decay=0.0)
    want = _optax_adam(init, grads, 1e-2, 0.95, 0.98, 1e-15, 0.0, cautious=True)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # one step from a state where momentum and gradient disagree: those coordinates stay put
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = CautiousAdamW([p], lr=0.1, betas=(0.9, 0.9), weight_decay=0.0)
    p.grad = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    opt.step()
    p.grad = torch.tensor([-0.01, 1.0, -0.01, 1.0], dtype=torch.float64)
    before = p.detach().clone()
    opt.step()
    moved = (p.detach() - before).abs() > 0
    assert moved.tolist() == [False, True, False, True]


def test_signum_is_sign_of_ema_momentum():
    grads = _grads(4, seed=2)
    init, got = _run(Signum, grads, lr=1e-2, momentum=0.9, weight_decay=0.1)
    p, m = init.clone(), torch.zeros_like(init)
    for g in grads:
        m = 0.9 * m + 0.1 * g
        p = p - 1e-2 * (torch.sign(m) + 0.1 * p)
    torch.testing.assert_close(got, p, atol=1e-12, rtol=0)
    assert math.isfinite(got.sum().item())
