"""G_random in depth as the reference builds it (tongxuluo/prts:prts_lit/scaling/milk.py): a
separately initialised target whose block groups replace the frozen small blocks one group
at a time."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainforge_core.models import tiny_llama
from trainforge_gstack import PhaseIn, grow_depth, phase_in_of, renumber_layers

VOCAB = 97


def llama(layers: int = 2, seed: int = 0) -> nn.Module:
    return tiny_llama(
        seed=seed,
        num_layers=layers,
        hidden_size=32,
        num_heads=4,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    ).eval()


def x(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def out(model: nn.Module) -> torch.Tensor:
    return model(input_ids=x()).logits


def test_target_is_a_separately_initialised_model():
    small = llama(seed=1)
    big = grow_depth(small, 2, "random", seed=3)
    cfg = big.config
    torch.manual_seed(3)
    fresh = type(small)(cfg)  # what milk.py's trg_model is: the target from its config
    for mine, ref in zip(big.model.layers, fresh.model.layers, strict=True):
        for (name, a), b in zip(mine.state_dict().items(), ref.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    # No target block is a copy of a small block; embeddings / norm / head are copied.
    for block in big.model.layers:
        for src in small.model.layers:
            assert not torch.equal(block.self_attn.q_proj.weight, src.self_attn.q_proj.weight)
    assert torch.equal(big.model.embed_tokens.weight, small.model.embed_tokens.weight)
    assert torch.equal(big.model.norm.weight, small.model.norm.weight)
    again = grow_depth(small, 2, "random", seed=3)
    assert torch.equal(
        again.model.layers[2].mlp.up_proj.weight, big.model.layers[2].mlp.up_proj.weight
    )


def test_groups_switch_at_the_reference_steps():
    small = llama()
    big = grow_depth(small, 4, "random", phase_in_steps=3)
    phase = phase_in_of(big)
    assert isinstance(phase, PhaseIn) and phase.num_groups == 2 and phase.total_steps == 4
    # Step 0: every group runs its small block (mask 0 at current_step 0): the small model.
    torch.testing.assert_close(out(big), out(small), atol=1e-6, rtol=0)
    seen = []
    for _ in range(5):
        seen.append(phase.active_groups())
        phase.step()
    # group j runs its target blocks once step_count > 3 j (MaskSchedule.get_mask > 0).
    assert seen == [0, 1, 1, 1, 2]
    assert phase.done and len(phase.sources) == 0
    assert "forward" not in vars(big.model.layers[0])  # a plain model again
    assert phase_in_of(small) is None


def test_half_phased_model_equals_its_hand_built_mix():
    small = llama()
    big = grow_depth(small, 2, "random", phase_in_steps=5, seed=1)
    phase = phase_in_of(big)
    phase.step()  # group 0 (target blocks 0, 1) active; group 1 still small block 1
    mix = grow_depth(small, 2, "random", seed=1)
    phase_in_of(mix).finish()
    layers = [mix.model.layers[0], mix.model.layers[1], copy.deepcopy(small.model.layers[1])]
    mix.model.layers = nn.ModuleList(layers)
    mix.config.num_hidden_layers = 3
    renumber_layers(mix)  # own KV-cache slots (the forward builds a cache)
    torch.testing.assert_close(out(big), out(mix), atol=1e-6, rtol=0)


def test_only_active_target_blocks_get_gradients_and_small_blocks_stay_frozen():
    small = llama()
    big = grow_depth(small, 2, "random", phase_in_steps=10).train()
    phase = phase_in_of(big)
    phase.step()
    big(input_ids=x(), labels=x()).loss.backward()
    grads = [b.self_attn.q_proj.weight.grad for b in big.model.layers]
    assert grads[0] is not None and grads[1] is not None
    assert grads[2] is None and grads[3] is None  # group 1 not switched in yet
    assert all(not p.requires_grad for p in phase.sources.parameters())
    assert all(p.grad is None for p in phase.sources.parameters())


def test_state_dict_is_the_target_model_and_reloads(tmp_path):
    small = llama()
    big = grow_depth(small, 2, "random")
    keys = set(big.state_dict())
    assert keys == set(type(small)(big.config).state_dict())
    phase_in_of(big).finish()
    big.save_pretrained(tmp_path)
    again = type(small).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(out(again), out(big.eval()), atol=1e-6, rtol=0)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.scale = nn.Parameter(torch.ones(4))  # no initialiser reaches it

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.lin(h) * self.scale


class _Net(nn.Module):
    def __init__(self, block: type[nn.Module]) -> None:
        super().__init__()
        self.config = type("C", (), {"model_type": "toy", "num_hidden_layers": 2})()
        self.blocks = nn.ModuleList([block(), block()])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            h = b(h)
        return h


class _Resettable(_Block):
    def reset_parameters(self) -> None:
        nn.init.normal_(self.scale)


def test_non_transformers_models_are_reinitialised_or_refused():
    # It used to keep copies of the small blocks silently as the "fresh" ones.
    with pytest.raises(ValueError, match=r"cannot initialise parameter 'scale'"):
        grow_depth(_Net(_Block), 2, "random", layers_attr="blocks")
    torch.manual_seed(0)
    net = _Net(_Resettable)
    big = grow_depth(net, 2, "random", layers_attr="blocks")
    for block in big.blocks:
        assert not torch.equal(block.lin.weight, net.blocks[0].lin.weight)
        assert not torch.equal(block.lin.weight, net.blocks[1].lin.weight)
        assert not torch.isnan(block.scale).any()


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_phase_in_steps(steps):
    with pytest.raises(ValueError, match="phase_in_steps"):
        grow_depth(llama(), 2, "random", phase_in_steps=steps)
    with pytest.raises(TypeError, match="nn.Module"):
        phase_in_of("model")
