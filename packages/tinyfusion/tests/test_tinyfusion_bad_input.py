"""Every public function rejects bad input with a clear error naming the argument."""

from __future__ import annotations

import warnings

import pytest
import torch
from _tinyfusion_toys import ResStack

from trainforge_core.errors import NoEffectWarning
from trainforge_tinyfusion import (
    GatedDepth,
    GaussianDiffusion,
    LinearAnneal,
    MaskedKD,
    TinyDiT,
    TinyFusionConfig,
    attach_lora,
    beta_feat_schedule,
    bi_score_pruning,
    bksdm_indices,
    detach_lora,
    find_blocks,
    importance_pruning,
    learn_depth_pruning,
    lora_parameters,
    make_groups,
    make_options,
    masked_feature_loss,
    massive_activation_mask,
    prune_layers,
    skipped_layers,
    uniform_layer_pairs,
)


def _loss(m, b):
    return m(b).pow(2).mean()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ResStack([1.0] * 4)


def test_keep_block_that_do_not_divide_depth(model):
    with pytest.raises(ValueError, match="block=3 does not divide the depth 4"):
        learn_depth_pruning(model, [torch.randn(2, 16)], _loss, keep=1, block=3)
    with pytest.raises(ValueError, match="cover 6 layers but the stack has 4"):
        make_groups(4, groups=[[1, 2], [2, 4]])
    with pytest.raises(ValueError, match="1 <= N <= M"):
        make_groups(4, groups=[[3, 2], [1, 2]])
    with pytest.raises(ValueError, match="keep must be a positive int"):
        make_groups(4, keep=0, block=2)
    with pytest.raises(ValueError, match="nothing to prune"):
        make_groups(4, keep=2, block=2)
    with pytest.raises(ValueError, match="either groups"):
        make_groups(4, keep=1, block=2, groups=[[1, 2], [1, 2]])
    with pytest.raises(TypeError, match="groups must be a sequence"):
        make_groups(4, groups=[1, 2])
    with pytest.raises(ValueError, match="1 <= n <= m"):
        make_options(3, 2)


def test_no_recognisable_stack():
    with pytest.raises(ValueError, match="no residual block stack"):
        learn_depth_pruning(torch.nn.Linear(2, 2), [torch.randn(1, 2)], _loss, keep=1, block=2)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        find_blocks("not a model")
    with pytest.raises(TypeError, match="blocks must be a dotted"):
        find_blocks(torch.nn.Linear(2, 2), blocks=3)
    with pytest.raises(ValueError, match="non-empty"):
        find_blocks(ResStack([1.0]), blocks="head")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_temperatures_out_of_range(model, bad):
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        GatedDepth(model, [(1, 2), (1, 2)], tau=bad)
    with pytest.raises(ValueError, match="scaling must be a finite number > 0"):
        GatedDepth(model, [(1, 2), (1, 2)], scaling=bad)
    with pytest.raises(ValueError, match="tau_range"):
        TinyFusionConfig(tau_range=(4.0, bad))
    with pytest.raises(ValueError, match="end must be a finite number > 0"):
        LinearAnneal(4.0, bad, 10)


def test_data_that_yields_no_batches(model):
    with pytest.raises(ValueError, match="data yielded no batches"):
        learn_depth_pruning(model, [], _loss, keep=1, block=2)
    with pytest.raises(ValueError, match="data yielded no batches"):
        learn_depth_pruning(model, [], _loss, keep=1, block=2, steps=3)
    with pytest.raises(ValueError, match="data yielded no batches"):
        importance_pruning(model, [], _loss, 2)
    with pytest.raises(ValueError, match="data yielded no batches"):
        bi_score_pruning(model, iter([]), _loss, 2)
    with pytest.raises(ValueError, match="one-shot iterator"):
        learn_depth_pruning(model, iter([torch.randn(2, 16)]), _loss, keep=1, block=2, steps=3)
    with pytest.raises(ValueError, match="pass steps="):
        learn_depth_pruning(model, (torch.randn(2, 16) for _ in range(2)), _loss, keep=1, block=2)
    with pytest.raises(TypeError, match="data must be an iterable"):
        learn_depth_pruning(model, torch.randn(2, 16), _loss, keep=1, block=2, steps=1)


def test_search_arguments(model):
    data = [torch.randn(2, 16)]
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        learn_depth_pruning(model, data, "mse", keep=1, block=2)
    with pytest.raises(TypeError, match="scalar tensor"):
        learn_depth_pruning(model, data, lambda m, b: 1.0, keep=1, block=2)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        learn_depth_pruning(model, data, _loss, keep=1, block=2, steps=0)
    with pytest.raises(TypeError, match="config must be a TinyFusionConfig"):
        learn_depth_pruning(model, data, _loss, keep=1, block=2, config={"lr": 1})
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        learn_depth_pruning(None, data, _loss, keep=1, block=2)
    with pytest.raises(ValueError, match="delta_w"):
        TinyFusionConfig(delta_w="dora")
    with pytest.raises(ValueError, match="ema_decay"):
        TinyFusionConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="lora_rank"):
        TinyFusionConfig(lora_rank=0)
    with pytest.raises(ValueError, match="lr must be"):
        TinyFusionConfig(lr=-1e-4)
    with pytest.raises(ValueError, match="total_steps"):
        LinearAnneal(4.0, 0.1, 0)
    with pytest.raises(ValueError, match="attr"):
        LinearAnneal(4.0, 0.1, 5, attr="lr")
    gates = GatedDepth(model, [(1, 2), (1, 2)])
    with pytest.raises(ValueError, match="mode must be"):
        gates.set_mode("train")
    with pytest.raises(TypeError, match="per_sample"):
        GatedDepth(model, [(1, 2), (1, 2)], per_sample="yes")


def test_prune_layers_and_baselines(model):
    with pytest.raises(ValueError, match="outside"):
        prune_layers(model, [0, 4])
    with pytest.raises(ValueError, match="strictly increasing"):
        prune_layers(model, [2, 1])
    with pytest.raises(ValueError, match="empty"):
        prune_layers(model, [])
    with pytest.raises(TypeError, match="sequence of layer indices"):
        prune_layers(model, 2)
    with pytest.raises(TypeError, match="hold ints"):
        prune_layers(model, [0.0, 1.0])
    data = [torch.randn(2, 16)]
    with pytest.raises(ValueError, match="num_keep must be an int in"):
        importance_pruning(model, data, _loss, 4)
    with pytest.raises(ValueError, match="num_keep must be an int in"):
        bi_score_pruning(model, data, _loss, 0)
    with pytest.raises(ValueError, match="max_batches"):
        importance_pruning(model, data, _loss, 2, max_batches=0)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        bi_score_pruning(model, data, None, 2)
    with pytest.raises(ValueError, match="must divide"):
        bksdm_indices(8, 3)
    with pytest.raises(ValueError, match="depth must be an int > 1"):
        bksdm_indices(1, 1)
    with pytest.raises(ValueError, match="outside"), skipped_layers(model, [7]):
        pass


def test_lora_bad_input(model):
    with pytest.raises(ValueError, match="rank must be a positive int"):
        attach_lora(model, rank=0)
    with pytest.raises(ValueError, match="alpha must be"):
        attach_lora(model, alpha=float("nan"))
    with pytest.raises(TypeError, match="exclude must be a sequence"):
        attach_lora(model, exclude="head")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        attach_lora("model")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        lora_parameters(None)
    with pytest.raises(TypeError, match="merge must be a bool"):
        detach_lora(model, merge="yes")
    with pytest.warns(NoEffectWarning, match="no LoRA adapters"):
        detach_lora(model)
    with pytest.warns(NoEffectWarning, match="no linear layer"):
        attach_lora(torch.nn.Sequential(torch.nn.ReLU()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attach_lora(model, exclude=["head"])
    assert not hasattr(model.head, "lora_a")


def test_kd_bad_input(model):
    with pytest.raises(ValueError, match="must divide teacher_depth"):
        uniform_layer_pairs(3, 8)
    with pytest.raises(ValueError, match="student_depth must be a positive int"):
        uniform_layer_pairs(0, 8)
    with pytest.raises(ValueError, match="k_sigma"):
        massive_activation_mask(torch.randn(2, 3), k_sigma=0)
    with pytest.raises(ValueError, match="batch dimension"):
        massive_activation_mask(torch.randn(3))
    with pytest.raises(ValueError, match="feature shapes differ"):
        masked_feature_loss(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(TypeError, match="must be tensors"):
        masked_feature_loss([1.0], torch.randn(1))
    with pytest.raises(ValueError, match="epoch must be an int in"):
        beta_feat_schedule(5, 5)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        beta_feat_schedule(0, 0)
    student = prune_layers(model, [1, 3])
    with pytest.raises(ValueError, match="out of range"):
        MaskedKD(student, model, [(0, 9)])
    with pytest.raises(ValueError, match="alpha_kd"):
        MaskedKD(student, model, alpha_kd=1.5)
    kd = MaskedKD(student, model)
    with pytest.raises(RuntimeError, match="run the student and the teacher"):
        kd.feature_loss()
    with pytest.raises(ValueError, match="differ"):
        kd.loss(torch.randn(2, 3), torch.randn(2, 4), torch.tensor(0.0))


def test_dit_bad_input():
    with pytest.raises(ValueError, match="patch_size=3 must divide input_size=8"):
        TinyDiT(input_size=8, patch_size=3)
    with pytest.raises(ValueError, match="num_heads=5 must divide"):
        TinyDiT(hidden_size=32, num_heads=5)
    with pytest.raises(ValueError, match="depth must be a positive int"):
        TinyDiT(depth=0)
    with pytest.raises(ValueError, match="num_timesteps"):
        GaussianDiffusion(num_timesteps=1)
    diff = GaussianDiffusion()
    with pytest.raises(ValueError, match="steps must be an int in"):
        diff.ddim_sample(
            TinyDiT(depth=1, hidden_size=16), (1, 1, 8, 8), torch.zeros(1, dtype=torch.long), 0
        )
