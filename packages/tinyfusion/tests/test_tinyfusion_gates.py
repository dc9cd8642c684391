"""Mask sampling: a valid N:M selection, straight-through gradients, determinism as tau -> 0."""

from __future__ import annotations

import math

import pytest
import torch
from _tinyfusion_toys import ResStack

from trainforge_tinyfusion import GatedDepth, LinearAnneal, make_groups, make_options


@pytest.mark.parametrize(("n", "m"), [(1, 2), (2, 4), (1, 4), (3, 4), (7, 14)])
def test_options_are_all_n_of_m_patterns(n, m):
    opt = make_options(n, m)
    assert opt.shape == (math.comb(m, n), m)
    assert torch.all(opt.sum(1) == n)
    assert len({tuple(r.tolist()) for r in opt}) == opt.shape[0]  # all distinct


def test_groups_from_keep_block_and_mixed():
    assert make_groups(8, 1, 2) == [(1, 2)] * 4
    assert make_groups(28, 2, 4) == [(2, 4)] * 7
    mixed = [[2, 4], [2, 4], [3, 4], [2, 4], [3, 4], [2, 4], [2, 4]]
    assert sum(n for n, _ in make_groups(28, groups=mixed)) == 16  # the spec's 16-layer example


def test_sampled_masks_are_valid_n_m_per_sample():
    torch.manual_seed(0)
    model = ResStack([1.0] * 8)
    gates = GatedDepth(model, [(2, 4), (1, 4)], tau=1.0, scaling=1.0)
    with torch.no_grad():
        for g in gates.gumbel_gates:
            g.normal_()
    mask = gates.sample_mask(64)
    assert mask.shape == (64, 8)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(mask[:, :4].sum(1) == 2) and torch.all(mask[:, 4:].sum(1) == 1)
    # per-sample draws: not every row the same
    assert len({tuple(r.tolist()) for r in mask}) > 1


def test_gradients_reach_every_gate_logit():
    torch.manual_seed(0)
    model = ResStack([1.0] * 4)
    gates = GatedDepth(model, [(1, 2), (1, 2)], tau=1.0, scaling=1.0)
    model(torch.randn(32, 16)).pow(2).mean().backward()
    for g in gates.gumbel_gates:
        assert g.grad is not None and torch.all(g.grad != 0)


def test_mask_applies_block_or_identity_exactly():
    torch.manual_seed(0)
    model = ResStack([1.0] * 4).double()
    x = torch.randn(5, 16, dtype=torch.float64)
    ref_full = model(x)
    gates = GatedDepth(model, [(1, 2), (1, 2)])
    gates.set_mode("off")
    assert torch.equal(model(x), ref_full)
    # decision mode with logits favouring layers 1 and 2 == a plain loop over those blocks
    with torch.no_grad():
        gates.gumbel_gates[0].copy_(torch.tensor([0.0, 1.0]))  # option 1 of (1,2): keep layer 1
        gates.gumbel_gates[1].copy_(torch.tensor([1.0, 0.0]))  # keep layer 2
    gates.set_mode("decision")
    assert gates.decisions() == [1, 2]
    h = x  # an independent plain re-implementation of blocks 1 and 2
    for j in (1, 2):
        blk = model.blocks[j]
        h = h + blk.scale * (
            torch.tanh(h @ blk.fc1.weight.T + blk.fc1.bias) @ blk.fc2.weight.T + blk.fc2.bias
        )
    torch.testing.assert_close(model(x), model.head(h), rtol=0, atol=1e-12)
    gates.remove()
    assert torch.equal(model(x), ref_full)  # hooks gone: the full model again


def test_all_ones_mask_reproduces_unpruned_model():
    torch.manual_seed(1)
    model = ResStack([1.0] * 4)
    x = torch.randn(6, 16)
    ref = model(x)
    gates = GatedDepth(model, [(1, 2), (2, 2)])
    gates.sample_mask = lambda batch: torch.ones(batch, 4)  # force every block on
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


def test_low_temperature_is_deterministic_and_follows_argmax():
    torch.manual_seed(0)
    model = ResStack([1.0] * 4)
    gates = GatedDepth(model, [(2, 4)], tau=1e-3, scaling=100.0)
    with torch.no_grad():
        gates.gumbel_gates[0].copy_(
            torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, 0.0])
        )  # option 4: (1, 3)
    masks = torch.cat([gates.sample_mask(256) for _ in range(4)])
    expected = make_options(2, 4)[4]
    assert torch.all(masks == expected)
    assert gates.confidence()[0] > 0.99
    # while at high temperature with uniform logits the choice varies
    gates.tau = 4.0
    with torch.no_grad():
        gates.gumbel_gates[0].fill_(0.02)
    assert len({tuple(r.tolist()) for r in gates.sample_mask(256)}) > 1


def test_hf_tuple_outputs_are_gated_on_the_first_element():
    class TupleBlock(torch.nn.Module):
        def forward(self, hidden_states, extra=None):
            return (hidden_states + 1.0, "cache")

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([TupleBlock(), TupleBlock()])

    m = M()
    gates = GatedDepth(m, [(1, 2)])
    with torch.no_grad():
        gates.gumbel_gates[0].copy_(torch.tensor([0.0, 1.0]))  # keep layer 1 only
    gates.set_mode("decision")
    x = torch.zeros(3, 2)
    out0 = m.layers[0](x)
    assert isinstance(out0, tuple) and out0[1] == "cache"
    assert torch.equal(out0[0], x)  # skipped: identity
    assert torch.equal(m.layers[1](out0[0])[0], x + 1.0)


def test_linear_anneal_matches_reference_schedule():
    sched = LinearAnneal(4.0, 0.1, total_steps=11)
    assert sched.value(0) == 4.0
    assert sched.value(10) == pytest.approx(0.1)
    assert sched.value(5) == pytest.approx(4.0 + (0.1 - 4.0) * 0.5)
    model = ResStack([1.0] * 2)
    gates = GatedDepth(model, [(1, 2)])
    sched(gates, 10)
    assert gates.tau == pytest.approx(0.1)
