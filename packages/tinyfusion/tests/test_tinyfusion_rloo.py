"""The opt-in ``estimator="rloo"`` (two-sample leave-one-out score-function gradient): unbiased
for the gradient of the expected loss, finds planted layers, rejects bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
from _tinyfusion_toys import ResStack

from trainforge_tinyfusion import GatedDepth, TinyFusionConfig, learn_depth_pruning
from trainforge_tinyfusion.search import _rloo_objective

GROUPS = [(1, 2), (2, 4)]  # 2 x 6 = 12 joint keep-patterns over 6 layers


def _toy(seed: int):
    torch.manual_seed(seed)
    model = ResStack([1.0, 0.3, 2.0, 0.5, 0.1, 1.5])
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(64, 16)
    with torch.no_grad():
        y = model(x)  # the full stack's output: dropping a large layer costs more
    gates = GatedDepth(model, GROUPS, scaling=1.0)
    with torch.no_grad():  # a non-uniform point, so every option has its own probability
        for g in gates.gumbel_gates:
            g.copy_(torch.randn(g.shape))
    return model, gates, (x, y)


def _per_sample_mse(model, batch):
    return ((model(batch[0]) - batch[1]) ** 2).mean(1)


def _exact_gradient(model, gates, batch):
    """d/dlogits of E_m[mean_i L_i(m)], enumerating all 12 joint keep-patterns."""
    gates.set_mode("categorical")
    expected = torch.zeros(())
    for combo in itertools.product(*(range(len(o)) for o in gates.options)):
        choices = torch.tensor([combo])
        gates.sample_choices = lambda batch, c=choices: c  # force this pattern
        with torch.no_grad():
            loss = _per_sample_mse(model, batch).mean()
        expected = expected + gates.log_prob(choices).exp()[0] * loss
    del gates.sample_choices
    return torch.autograd.grad(expected, list(gates.gumbel_gates))


@pytest.mark.parametrize("seed", [0, 1])
def test_rloo_gradient_is_unbiased(seed):
    model, gates, batch = _toy(seed)
    exact = torch.cat(_exact_gradient(model, gates, batch))
    gates.set_mode("categorical")
    gates.generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(400):
        objective, _loss = _rloo_objective(model, gates, batch, _per_sample_mse)
        grads = torch.autograd.grad(objective, list(gates.gumbel_gates))
        estimates.append(torch.cat(grads))
    est = torch.stack(estimates)  # each row: the mean over 64 samples of one step
    mean, sem = est.mean(0), est.std(0) / len(est) ** 0.5
    # every component within 4 standard errors of the enumerated gradient
    assert ((mean - exact).abs() <= 4 * sem + 1e-6).all(), (mean, exact, sem)
    # and the estimate carries signal: it is not just noise around zero
    assert (exact.abs() > 4 * sem).sum() >= 3, (exact, sem)


def test_rloo_shares_data_t_and_noise_between_the_two_masks():
    # a loss that draws noise from the global generator: both runs must see the same draw
    model, gates, batch = _toy(0)
    gates.set_mode("categorical")
    seen = []

    def noisy(m, b):
        noise = torch.randn(b[0].shape)
        seen.append(noise)
        return ((m(b[0] + noise) - b[1]) ** 2).mean(1)

    _rloo_objective(model, gates, batch, noisy)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])


@pytest.mark.parametrize(("seed", "planted"), [(0, [0, 3, 4, 7]), (1, [1, 2, 5, 6])])
def test_rloo_search_finds_planted_layers(seed, planted):
    torch.manual_seed(seed)
    teacher = ResStack([3.0 if i in planted else 0.05 for i in range(8)])
    x = torch.randn(256, 16)
    with torch.no_grad():
        y = teacher(x)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    res = learn_depth_pruning(
        teacher,
        batches,
        lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(1),
        keep=1,
        block=2,
        steps=60,
        config=TinyFusionConfig(estimator="rloo"),
    )
    assert res.kept == planted
    assert "rloo" in res.method
    ema = res.history["gates_ema"]
    for g, layer in enumerate(planted):  # the EMA logits moved towards the planted option
        first, second = ema[2 * g], ema[2 * g + 1]
        assert (first > second) if layer == 2 * g else (second > first), (g, first, second)


def test_rloo_bad_input():
    with pytest.raises(ValueError, match="estimator must be one of"):
        TinyFusionConfig(estimator="reinforce")
    with pytest.raises(ValueError, match="estimator must be one of"):
        TinyFusionConfig(estimator="ST")
    model = ResStack([1.0, 1.0, 1.0, 1.0])
    batches = [(torch.randn(8, 16), torch.randn(8, 16))]
    with pytest.raises(ValueError, match="per-sample losses"):
        learn_depth_pruning(
            model,
            batches,
            lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),  # a scalar, not per sample
            keep=1,
            block=2,
            steps=1,
            config=TinyFusionConfig(estimator="rloo"),
        )
    # with one mask per batch a scalar loss is fine
    res = learn_depth_pruning(
        model,
        batches,
        lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),
        keep=1,
        block=2,
        steps=2,
        config=TinyFusionConfig(estimator="rloo", per_sample=False),
    )
    assert len(res.kept) == 2
    gates = GatedDepth(ResStack([1.0, 1.0]), [(1, 2)])
    with pytest.raises(ValueError, match="choices must have shape"):
        gates.log_prob(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="choices must have shape"):
        gates.choices_mask(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="mode must be"):
        gates.set_mode("rloo")


def test_the_check_has_power_straight_through_fails_it():
    # the same check rejects the reference's straight-through gradient at its starting tau (4):
    # its mean is far from the gradient of the expected loss (a biased estimator)
    model, gates, batch = _toy(0)
    exact = torch.cat(_exact_gradient(model, gates, batch))
    gates.set_mode("sample")
    gates.tau = 4.0
    torch.manual_seed(0)
    est = torch.stack(
        [
            torch.cat(
                torch.autograd.grad(_per_sample_mse(model, batch).mean(), list(gates.gumbel_gates))
            )
            for _ in range(200)
        ]
    )
    mean, sem = est.mean(0), est.std(0) / len(est) ** 0.5
    assert ((mean - exact).abs() > 10 * sem).any()
