"""The search loop reproduces ``VainF/TinyFusion:prune_by_learning.py`` setting by setting, on
the DiT: hard per-sample Gumbel draws of ``scaling * logits`` (uniform start 0.02 * 100), tau
linear 4 -> 0.1 over all steps, scaling 100, AdamW (wd 0) with the gates at 10x the Delta W lr,
LoRA rank 8 / alpha 16 on every linear trained in the same steps as the gates, and the decision
taken as the argmax of the EMA (0.999) of the logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import trainforge_tinyfusion.gates as gates_mod
import trainforge_tinyfusion.search as search_mod
from trainforge_tinyfusion import GaussianDiffusion, TinyDiT, learn_depth_pruning

STEPS = 6


@pytest.fixture
def spied_search(monkeypatch):
    """Run a 6-step 1:2 search on a depth-4 TinyDiT, recording every Gumbel call and every
    optimiser step (the live gate logits after it)."""
    draws: list[dict] = []
    real_gumbel = gates_mod.F.gumbel_softmax

    def gumbel(logits, tau=1.0, hard=False, dim=-1, **kw):
        draws.append({"logits": logits.detach().clone(), "tau": tau, "hard": hard, "dim": dim})
        return real_gumbel(logits, tau=tau, hard=hard, dim=dim, **kw)

    monkeypatch.setattr(gates_mod.F, "gumbel_softmax", gumbel)

    steps: list[dict] = []

    class SpyAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            out = super().step(closure)
            steps.append(
                {
                    "gates": [p.detach().clone() for p in self.param_groups[-1]["params"]],
                    "stepped": [
                        [bool(self.state.get(p)) for p in g["params"]] for g in self.param_groups
                    ],
                }
            )
            return out

    made: list[SpyAdamW] = []

    def make_opt(*args, **kwargs):
        made.append(SpyAdamW(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(search_mod.torch.optim, "AdamW", make_opt)

    torch.manual_seed(0)
    dit = TinyDiT(input_size=4, patch_size=2, hidden_size=16, depth=4, num_heads=2)
    diff = GaussianDiffusion()
    data = [(torch.randn(5, 1, 4, 4), torch.randint(0, 10, (5,))) for _ in range(STEPS)]
    res = learn_depth_pruning(
        dit, data, lambda m, b: diff.loss(m, b[0], b[1]), keep=1, block=2, steps=STEPS
    )
    return dit, res, draws, steps, made[0]


def test_forward_draws_hard_per_sample_from_scaled_logits_with_linear_tau(spied_search):
    _, res, draws, _, _ = spied_search
    groups = 2  # depth 4 at 1:2
    assert len(draws) == STEPS * groups  # one draw per group per forward
    for d in draws:
        assert d["hard"] is True and d["dim"] == 1
        assert d["logits"].shape == (5, 2)  # one row per sample (gate.repeat(N, 1))
    # first step: the constant 0.02 init times scaling 100, i.e. a uniform start at 2.0
    assert torch.equal(draws[0]["logits"], torch.full((5, 2), 2.0))
    taus = [d["tau"] for d in draws[::groups]]
    want = [4.0 + (0.1 - 4.0) * s / (STEPS - 1) for s in range(STEPS)]
    assert taus == pytest.approx(want)
    assert res.history["tau"] == pytest.approx(want)


def test_gates_and_lora_share_each_step_at_the_reference_rates(spied_search):
    dit, _, _, steps, opt = spied_search
    assert len(opt.param_groups) == 2
    lora_group, gate_group = opt.param_groups
    assert lora_group["lr"] == 1e-4 and gate_group["lr"] == pytest.approx(1e-3)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
    # LoRA on every nn.Linear of the DiT (embedders, adaLN, attention, MLP, final layer)
    n_linear = sum(isinstance(m, nn.Linear) for m in dit.modules())
    assert len(lora_group["params"]) == 2 * n_linear
    a_mats, b_mats = lora_group["params"][0::2], lora_group["params"][1::2]
    assert {a.shape[0] for a in a_mats} == {8} and {b.shape[1] for b in b_mats} == {8}
    assert len(gate_group["params"]) == 2
    # the gates and the adapters are updated in the same optimiser steps from the first one
    assert len(steps) == STEPS
    assert all(all(flags) for s in steps for flags in s["stepped"])


def test_decision_is_argmax_of_ema_logits(spied_search):
    _, res, _, steps, _ = spied_search
    ema = [torch.full((2,), 0.02) for _ in range(2)]
    for s in steps:
        for e, g in zip(ema, s["gates"], strict=True):
            e.mul_(0.999).add_(g, alpha=1 - 0.999)
    assert res.history["gates_ema"] == pytest.approx([v for e in ema for v in e.tolist()])
    assert res.kept == [2 * g + int(e.argmax()) for g, e in enumerate(ema)]
    want_conf = [float(torch.softmax(e * 100.0, 0).max()) for e in ema]
    assert res.confidence == pytest.approx(want_conf)
