"""The learned search finds planted redundant layers; the export is the original restricted
to the kept layers."""

from __future__ import annotations

import copy

import pytest
import torch
from _tinyfusion_toys import ResStack

from trainforge_tinyfusion import (
    GatedDepth,
    TinyFusionConfig,
    attach_lora,
    detach_lora,
    learn_depth_pruning,
    prune_layers,
    skipped_layers,
)

PLANTED = [0, 3, 4, 7]  # the layers that matter; the others have output scale 0.05


def _planted_task(seed: int, planted: list[int] = PLANTED):
    torch.manual_seed(seed)
    teacher = ResStack([3.0 if i in planted else 0.05 for i in range(8)])
    x = torch.randn(256, 16)
    with torch.no_grad():
        y = teacher(x)
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    return teacher, batches


def _mse(model, batch):
    return ((model(batch[0]) - batch[1]) ** 2).mean()


# Two planted patterns with the important layer first and second in its pair, so neither a
# positional bias nor the argmax tie-break (first option when the gates did not move) can pass.
@pytest.mark.parametrize(("seed", "planted"), [(0, PLANTED), (1, [1, 2, 5, 6])])
@pytest.mark.parametrize("delta_w", ["lora", "full"])
def test_learned_choice_finds_planted_layers(seed, planted, delta_w):
    # Reference defaults (lr 1e-4 / 1e-3, tau 4 -> 0.1, scaling 100, EMA 0.999), 60 steps.
    teacher, batches = _planted_task(seed, planted)
    res = learn_depth_pruning(
        teacher, batches, _mse, keep=1, block=2, steps=60, config=TinyFusionConfig(delta_w=delta_w)
    )
    assert res.kept == planted
    # the EMA logits moved towards the planted option in every group (not a tie)
    ema = res.history["gates_ema"]
    for g, layer in enumerate(planted):
        first, second = ema[2 * g], ema[2 * g + 1]
        assert (first > second) if layer == 2 * g else (second > first), (g, first, second)
    assert len(res.model.blocks) == 4
    assert res.history["tau"][0] == 4.0 and res.history["tau"][-1] == pytest.approx(0.1)


def test_export_equals_original_restricted_and_lora_does_not_leak():
    teacher, batches = _planted_task(0)
    before = copy.deepcopy(teacher.state_dict())
    res = learn_depth_pruning(teacher, batches, _mse, keep=1, block=2, steps=20)
    # the input model is untouched (no hooks, no adapters, same weights)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert set(teacher.state_dict()) == set(before)
    x = batches[0][0]
    skip = [j for j in range(8) if j not in res.kept]
    with torch.no_grad(), skipped_layers(teacher, skip):
        ref = teacher(x)
    torch.testing.assert_close(res.model(x), ref, rtol=0, atol=1e-6)
    # the same through the gated model in decision mode (gates set to the decision)
    gated = copy.deepcopy(teacher)
    gates = GatedDepth(gated, [(1, 2)] * 4)
    with torch.no_grad():
        for b, (g, k) in enumerate(zip(gates.gumbel_gates, res.kept, strict=True)):
            g.copy_(torch.tensor([1.0, 0.0]) if k == 2 * b else torch.tensor([0.0, 1.0]))
    gates.set_mode("decision")
    assert gates.decisions() == res.kept
    with torch.no_grad():
        torch.testing.assert_close(gated(x), res.model(x), rtol=0, atol=1e-6)
    # exported weights are the original ones, no adapter keys
    sd = res.model.state_dict()
    assert not any("lora" in k for k in sd)
    for new_i, old_i in enumerate(res.kept):
        assert torch.equal(sd[f"blocks.{new_i}.fc1.weight"], before[f"blocks.{old_i}.fc1.weight"])


def test_merge_lora_keeps_the_learned_update():
    teacher, batches = _planted_task(0)
    res = learn_depth_pruning(
        teacher,
        batches,
        _mse,
        keep=1,
        block=2,
        steps=15,
        merge_lora=True,
        config=TinyFusionConfig(lr=1e-2),
    )
    plain = prune_layers(teacher, res.kept)
    diffs = [
        float((a - b).abs().max())
        for (k, a), b in zip(
            res.model.state_dict().items(), plain.state_dict().values(), strict=True
        )
    ]
    assert max(diffs) > 0  # the merged Delta W is in the export
    assert not any("lora" in k for k in res.model.state_dict())


def test_lora_starts_as_identity_and_merges_exactly():
    torch.manual_seed(0)
    model = ResStack([1.0] * 2).double()
    x = torch.randn(4, 16, dtype=torch.float64)
    ref = model(x)
    names = attach_lora(model, rank=4, alpha=8)
    assert len(names) == 5  # 2 blocks x 2 linears + head
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)  # B = 0 at init
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_b" in n:
                p.normal_()
    with_adapter = model(x)
    # an independent float64 reference of W + (alpha / r) B A on the head
    head = model.head
    w = head.weight + 2.0 * head.lora_b.weight @ head.lora_a.weight
    assert detach_lora(model, merge=True) == 5
    torch.testing.assert_close(model.head.weight, w)
    torch.testing.assert_close(model(x), with_adapter, rtol=1e-10, atol=1e-10)
    assert not any("lora" in k for k in model.state_dict())


def test_pruned_state_dict_round_trip():
    teacher, _ = _planted_task(0)
    pruned = prune_layers(teacher, [0, 3, 4, 7])
    fresh = ResStack([1.0] * 4)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    x = torch.randn(3, 16)
    for a, b in zip(fresh.blocks, pruned.blocks, strict=True):
        a.scale = b.scale
    torch.testing.assert_close(fresh(x), pruned(x), rtol=0, atol=0)


def test_nan_loss_steps_are_skipped():
    teacher, batches = _planted_task(0)
    calls = {"n": 0}

    def sometimes_nan(model, batch):
        calls["n"] += 1
        loss = _mse(model, batch)
        return loss * float("nan") if calls["n"] % 2 else loss

    res = learn_depth_pruning(teacher, batches, sometimes_nan, keep=1, block=2, steps=4)
    assert len(res.kept) == 4
