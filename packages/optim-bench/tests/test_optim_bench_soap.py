"""In-package SOAP: Adam with frozen identity bases; pytorch-optimizer's SOAP step for step."""

from __future__ import annotations

import pytest
import torch

from trainforge_optim_bench import SOAP


class _IdentitySOAP(SOAP):
    def _eigenbases(self, stats):
        return [None if s is None else torch.eye(s.shape[0], dtype=s.dtype) for s in stats]

    def _refresh_bases(self, state):
        return None


def _grads(shape, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen, dtype=torch.float64) for _ in range(n)]


def test_soap_with_identity_bases_is_adam():
    init = torch.randn(6, 5, dtype=torch.float64)
    grads = _grads((6, 5), 6)
    soap_p = torch.nn.Parameter(init.clone())
    adam_p = torch.nn.Parameter(init.clone())
    # eps ~ 0: SOAP adds eps to sqrt(v) before the bias correction, Adam after it
    soap = _IdentitySOAP([soap_p], lr=1e-2, betas=(0.9, 0.95), eps=1e-30, weight_decay=0.0)
    adam = torch.optim.Adam([adam_p], lr=1e-2, betas=(0.9, 0.95), eps=1e-30)
    soap_p.grad = grads[0]
    soap.step()  # SOAP's first step only initialises (the reference's convention)
    torch.testing.assert_close(soap_p.detach(), init)
    for g in grads[1:]:
        soap_p.grad, adam_p.grad = g.clone(), g.clone()
        soap.step()
        adam.step()
    torch.testing.assert_close(soap_p.detach(), adam_p.detach(), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("shape", "max_dim", "freq"),
    [
        ((8, 6), 10000, 10),
        ((8, 6), 10000, 2),
        ((7,), 10000, 2),
        ((12, 5), 6, 2),
        ((3, 4, 5), 10000, 2),
    ],
)
def test_soap_matches_pytorch_optimizer(shape, max_dim, freq):
    from pytorch_optimizer import SOAP as RefSOAP

    init = torch.randn(*shape, dtype=torch.float64)
    ours_p = torch.nn.Parameter(init.clone())
    ref_p = torch.nn.Parameter(init.clone())
    kw = dict(lr=3e-3, betas=(0.95, 0.95), weight_decay=0.01, precondition_frequency=freq)
    ours = SOAP([ours_p], max_precond_dim=max_dim, **kw)
    ref = RefSOAP([ref_p], max_precondition_dim=max_dim, **kw)
    for g in _grads(shape, 7, seed=1):
        ours_p.grad, ref_p.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        torch.testing.assert_close(ours_p.detach(), ref_p.detach(), atol=1e-5, rtol=0)
    assert not torch.equal(ours_p.detach(), init)


def test_soap_rotates_only_dims_within_max_precond_dim():
    p = torch.nn.Parameter(torch.randn(12, 5))
    opt = SOAP([p], max_precond_dim=6)
    p.grad = torch.randn(12, 5)
    opt.step()
    bases = opt.state[p]["bases"]
    assert bases[0] is None and bases[1].shape == (5, 5)
    torch.testing.assert_close(bases[1].T @ bases[1], torch.eye(5), atol=1e-5, rtol=0)


def test_first_bases_are_eigenvectors_of_the_statistics_sorted_descending():
    p = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    opt = SOAP([p], betas=(0.9, 0.9))
    g = torch.randn(6, 4, dtype=torch.float64)
    p.grad = g
    opt.step()
    stats, bases = opt.state[p]["stats"], opt.state[p]["bases"]
    # L = (1 - b_s) G G^T and R = (1 - b_s) G^T G after the first gradient
    torch.testing.assert_close(stats[0], 0.1 * g @ g.T)
    torch.testing.assert_close(stats[1], 0.1 * g.T @ g)
    for s, q in zip(stats, bases, strict=True):
        rotated = q.T @ s @ q
        diag = torch.diagonal(rotated)
        torch.testing.assert_close(rotated, torch.diag(diag), atol=1e-10, rtol=0)
        assert torch.all(diag[:-1] >= diag[1:] - 1e-12)
