"""The Hessian estimators are unbiased; the every-k helper does the dance correctly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import trainforge_sophia.hessian as hess
from trainforge_sophia import (
    SophiaG,
    SophiaH,
    gnb_loss,
    hutchinson_diag,
    maybe_update_hessian,
    rademacher_like,
)

D, C, B = 8, 5, 64  # softmax regression of the spec (d=8, C=5, B=64)


def _softmax_regression(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=gen, dtype=torch.float64)
    w = (0.5 * torch.randn(C, D, generator=gen, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, C, (B,), generator=gen)
    return x, w, y


def _rel_err(est, exact):
    return float((est - exact).norm() / exact.norm())


def test_gnb_is_unbiased_for_the_gauss_newton_diagonal():
    x, w, _ = _softmax_regression()
    with torch.no_grad():
        p = torch.softmax(x @ w.T, dim=-1)  # [B, C]
        # GN of the mean CE for linear logits: (1/B) sum_i (p_ic - p_ic^2) x_ij^2
        exact = ((p - p**2).T @ (x**2)) / B
    # 2,000 independent draws in one call: copy w per draw; the mean over draws * B
    # positions has gradient g_hat_n / draws with respect to copy n
    draws = 2000
    w_rep = w.detach().expand(draws, C, D).clone().requires_grad_(True)
    logits = torch.einsum("bd,ncd->nbc", x, w_rep)
    (g,) = torch.autograd.grad(
        gnb_loss(logits, generator=torch.Generator().manual_seed(1)), [w_rep]
    )
    g = g * draws
    estimate = (B * g * g).mean(0)
    assert _rel_err(estimate, exact) < 0.05
    # the estimate's spread across draws is real (not a constant that happens to match)
    assert float((B * g * g).std(0).mean()) > 0.1 * float(exact.mean())


@pytest.mark.parametrize("dist", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_the_hessian_diagonal(dist):
    x, w, y = _softmax_regression(2)

    def loss_of(flat):
        return nn.functional.cross_entropy(x @ flat.view(C, D).T, y)

    exact = torch.autograd.functional.hessian(loss_of, w.detach().reshape(-1)).diagonal()
    # 2,000 copies of the problem: the Hessian of the summed loss is block diagonal, so one
    # probe per copy gives 2,000 independent estimates of the same diagonal
    draws = 2000
    w_rep = w.detach().expand(draws, C, D).clone().requires_grad_(True)
    logits = torch.einsum("bd,ncd->nbc", x, w_rep)
    loss = nn.functional.cross_entropy(logits.reshape(-1, C), y.repeat(draws)) * draws
    gen = torch.Generator().manual_seed(3)
    (est,) = hutchinson_diag(loss, [w_rep], n_samples=1, dist=dist, generator=gen)
    assert _rel_err(est.mean(0).reshape(-1), exact) < 0.05
    # several probes in one call give the mean of the single-probe estimates
    z1, z2 = torch.randn(C, D, dtype=w.dtype), torch.randn(C, D, dtype=w.dtype)
    small = nn.functional.cross_entropy(x @ w.T, y)
    (both,) = hutchinson_diag(small, [w], probes=[[z1], [z2]])
    (one,) = hutchinson_diag(nn.functional.cross_entropy(x @ w.T, y), [w], probes=[[z1]])
    (two,) = hutchinson_diag(nn.functional.cross_entropy(x @ w.T, y), [w], probes=[[z2]])
    torch.testing.assert_close(both, (one + two) / 2)


def test_rademacher_draws_both_signs():
    """Regression test for kozistr's randint_like(p, 0, 1) * 2 - 1 (always -1)."""
    z = rademacher_like(torch.empty(10_000), torch.Generator().manual_seed(0))
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(z.mean())) < 0.05


def test_gnb_loss_ignores_ignore_index_positions():
    gen_logits = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 7, generator=gen_logits, requires_grad=True)
    labels = torch.randint(0, 7, (2, 6), generator=gen_logits)
    labels[0, 4:] = -100
    labels[1, 0] = -100
    loss = gnb_loss(logits, labels, generator=torch.Generator().manual_seed(5))
    loss.backward()
    ignored = labels == -100
    assert torch.all(logits.grad[ignored] == 0)
    assert torch.all(logits.grad[~ignored].abs().sum(-1) > 0)
    # garbage at ignored positions changes nothing
    other = logits.detach().clone()
    other[ignored] = 1e4
    again = gnb_loss(other, labels, generator=torch.Generator().manual_seed(5))
    assert torch.isfinite(again)


def test_gnb_loss_samples_from_the_model_distribution():
    # near one-hot logits: sampled labels are the argmax, so the loss is ~0
    logits = torch.full((50, 4), -30.0)
    logits[torch.arange(50), torch.arange(50) % 4] = 30.0
    assert float(gnb_loss(logits)) < 1e-6


def test_helper_accumulates_micro_batches_as_one_batch(monkeypatch):
    """With the sampler replaced by the true labels (deterministic), two halves accumulated
    give the Hessian update of the whole batch."""
    monkeypatch.setattr(hess, "gnb_loss", lambda logits, labels, **kw: nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)))  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)

    def logits_fn(model, batch):
        return model(batch[0]), batch[1]

    results = []
    for micro in ([(x, y)], [(x[:8], y[:8]), (x[8:], y[8:])]):
        torch.manual_seed(0)
        model = nn.Linear(6, 3)
        opt = SophiaG(model.parameters(), betas=(0.9, 0.5))
        assert maybe_update_hessian(opt, model, micro, logits_fn=logits_fn, grad_clip=None,
                                    force=True)  # fmt: skip
        assert opt.param_groups[0]["n_predictions"] == 16
        results.append([opt.state[p]["hessian"].clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_helper_sets_training_grads_aside_and_restores_them():
    model = nn.Linear(4, 3)
    opt = SophiaG(model.parameters(), hessian_interval=1)
    x = torch.randn(5, 4)
    model(x).sum().backward()
    saved = [p.grad.clone() for p in model.parameters()]
    assert not maybe_update_hessian(opt, model, x, logits_fn=lambda m, b: (m(b), None))
    opt.step()
    assert maybe_update_hessian(opt, model, x, logits_fn=lambda m, b: (m(b), None))
    for p, g in zip(model.parameters(), saved, strict=True):
        assert torch.equal(p.grad, g)
    assert opt.param_groups[0]["n_predictions"] == 5
    assert all(opt.state[p]["hessian"].abs().sum() > 0 for p in model.parameters())


def test_sophiah_helper_is_exact_on_a_diagonal_quadratic():
    """For a diagonal Hessian, u * (H u) = diag(H) exactly with Rademacher probes."""
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])

    class Quad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

    model = Quad()
    opt = SophiaH(model.parameters(), betas=(0.9, 0.5), n_samples=3)

    def loss_fn(m, batch):
        return 0.5 * (a * m.w**2).sum() * batch

    assert maybe_update_hessian(opt, model, [torch.tensor(1.0), torch.tensor(1.0)],
                                loss_fn=loss_fn, force=True)  # fmt: skip
    torch.testing.assert_close(opt.state[model.w]["hessian"], 0.5 * a)


def test_sophiah_helper_with_a_parameter_the_loss_does_not_use():
    # Used to crash in autograd.grad (no allow_unused); the unused one keeps a zero estimate.
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])

    class Quad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))
            self.unused = nn.Parameter(torch.ones(3))

    model = Quad()
    opt = SophiaH(model.parameters(), betas=(0.9, 0.0), n_samples=2)
    maybe_update_hessian(opt, model, torch.tensor(1.0),
                         loss_fn=lambda m, b: 0.5 * (a * m.w**2).sum() * b, force=True)  # fmt: skip
    torch.testing.assert_close(opt.state[model.w]["hessian"], a)
    torch.testing.assert_close(opt.state[model.unused]["hessian"], torch.zeros(3))


def test_a_tuple_is_one_batch_not_two_micro_batches():
    seen = []

    class Quad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2))

    def loss_fn(m, batch):
        seen.append(batch)
        x, y = batch
        return ((m.w * x - y) ** 2).sum()

    model = Quad()
    opt = SophiaH(model.parameters(), n_samples=1)
    pair = (torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]))
    maybe_update_hessian(opt, model, pair, loss_fn=loss_fn, force=True)
    assert len(seen) == 1 and seen[0] is pair


def test_helper_on_a_tiny_causal_lm():
    from trainforge_core.models import tiny_llama

    model = tiny_llama(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                       max_position_embeddings=16)  # fmt: skip
    opt = SophiaG(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 50, (3, 10))
    batch = {"input_ids": tokens, "attention_mask": torch.ones_like(tokens)}
    batch["attention_mask"][0, 7:] = 0
    assert maybe_update_hessian(opt, model, batch, force=True)
    # 3 rows x 9 shifted predictions, minus 3 padded targets in row 0
    assert opt.param_groups[0]["n_predictions"] == 3 * 9 - 3
    loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    opt.step()  # bs=None: uses the recorded count
    assert opt.stats()["hessian_updates"] == 1.0


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_estimators():
    with pytest.raises(TypeError, match="logits"):
        gnb_loss(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        gnb_loss(torch.ones(4))
    with pytest.raises(ValueError, match="labels"):
        gnb_loss(torch.ones(2, 3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="ignore_index"):
        gnb_loss(torch.ones(2, 4), torch.full((2,), -100))
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="graph"):
        hutchinson_diag(torch.tensor(1.0), [w])
    with pytest.raises(ValueError, match="n_samples"):
        hutchinson_diag((w**2).sum(), [w], n_samples=0)
    with pytest.raises(ValueError, match="dist"):
        hutchinson_diag((w**2).sum(), [w], dist="cauchy")
    with pytest.raises(ValueError, match="params"):
        hutchinson_diag((w**2).sum(), [])
    with pytest.raises(ValueError, match="create_graph"):
        hutchinson_diag([torch.ones(3)], [w])


def test_bad_input_helper():
    model = nn.Linear(2, 2)
    opt = SophiaG(model.parameters())
    with pytest.raises(TypeError, match="SophiaG or SophiaH"):
        maybe_update_hessian(torch.optim.SGD(model.parameters(), lr=0.1), model, torch.ones(1))
    with pytest.raises(TypeError, match="Module"):
        maybe_update_hessian(opt, "model", torch.ones(1))
    with pytest.raises(ValueError, match="grad_clip"):
        maybe_update_hessian(opt, model, torch.ones(1), grad_clip=0.0)
    with pytest.raises(ValueError, match="empty"):
        maybe_update_hessian(opt, model, [], force=True)
    with pytest.raises(TypeError, match="batch"):
        maybe_update_hessian(opt, model, [object()], force=True)
