"""Newton-Schulz maths and torch.optim.Muon against the in-package reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainforge_optim_bench import build_optimizer, newton_schulz5, newton_schulz_flops
from trainforge_optim_bench.newton_schulz import NS_COEFFICIENTS


def _matrix_with_spectrum(rows, cols, sigmas, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=gen, dtype=torch.float64))
    k = min(rows, cols)
    s = torch.zeros(rows, cols, dtype=torch.float64)
    s[range(k), range(k)] = torch.as_tensor(sigmas, dtype=torch.float64)
    return u @ s @ v.T, u[:, :k] @ v[:, :k].T


def _scalar_map(x, steps=5):
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        x = a * x + b * x**3 + c * x**5
    return x


@pytest.mark.parametrize("shape", [(48, 24), (24, 48), (32, 32)])
def test_singular_values_follow_the_quintic_and_lie_in_band(shape):
    k = min(shape)
    sigmas = np.logspace(-1, 1, k)  # condition number 100
    g, polar = _matrix_with_spectrum(*shape, sigmas)
    out = newton_schulz5(g)
    got = torch.linalg.svdvals(out).numpy()
    # NS acts on each normalised singular value through the scalar quintic, independently
    expected = np.sort(_scalar_map(sigmas / np.linalg.norm(sigmas)))[::-1]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got.min() >= 0.68 and got.max() <= 1.21  # spec: ~[0.7, 1.2]
    # and so approximates the polar factor U V^T
    cos = torch.nn.functional.cosine_similarity(out.flatten(), polar.flatten(), dim=0)
    assert cos > 0.97
    assert ((out - polar).norm() / polar.norm()) < 0.3


def test_more_steps_with_newton_coefficients_converge_to_polar():
    g, polar = _matrix_with_spectrum(20, 12, np.linspace(0.5, 1.0, 12))
    out = newton_schulz5(g, steps=30, coefficients=(1.5, -0.5, 0.0))  # cubic Newton-Schulz
    torch.testing.assert_close(out, polar, atol=1e-8, rtol=0)


def _reference_muon(p, grads, lr, wd, mu, eps):
    """Levanter's scale_with_muon + add_decayed_weights, scaled by sqrt(max(1, out/in))."""
    p = p.clone().double()
    buf = torch.zeros_like(p)
    for g in grads:
        g = g.double()
        buf = mu * buf + g
        update = mu * buf + g  # nesterov
        o = newton_schulz5(update.float(), eps=eps, dtype=torch.bfloat16).double()
        scale = math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
        p = p - lr * wd * p - lr * scale * o
    return p


@pytest.mark.parametrize("shape", [(24, 16), (16, 24)])
def test_torch_muon_matches_reference(shape):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(*shape))
    grads = [torch.randn(*shape) for _ in range(3)]
    opt = torch.optim.Muon(
        [w], lr=0.02, weight_decay=0.1, momentum=0.95, eps=1e-7, adjust_lr_fn="original"
    )
    expected = _reference_muon(w.detach(), grads, 0.02, 0.1, 0.95, 1e-7)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    # both run Newton-Schulz in bfloat16: agree to bf16 rounding of the update
    torch.testing.assert_close(w.detach().double(), expected, atol=2e-3, rtol=0)
    delta = (w.detach().double() - expected).abs().max()
    assert delta < 0.05 * 0.02 * 3  # far below one step's size


def test_build_muon_uses_torch_muon_on_hidden_matrices_only(tiny_model):
    opt = build_optimizer("muon", tiny_model)
    muon = opt.optimizers["muon"]
    assert isinstance(muon, torch.optim.Muon)
    muon_params = {id(p) for g in muon.param_groups for p in g["params"]}
    emb = tiny_model.get_input_embeddings().weight
    assert id(emb) not in muon_params
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    adam_lrs = [g["lr"] for g in opt.optimizers["adamw"].param_groups]
    assert adam_lrs == pytest.approx([1.6e-2 * 0.2] * len(adam_lrs))


def test_flops_formula():
    assert newton_schulz_flops(8, 4, steps=1) == 4 * 16 * 8 + 2 * 64
    assert newton_schulz_flops(4, 8) == newton_schulz_flops(8, 4)
