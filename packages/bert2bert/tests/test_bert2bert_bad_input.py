"""Every public function rejects bad input with a clear error naming the problem."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import transformers as T

from trainforge_bert2bert import (
    Dims,
    ExpansionPlan,
    TwoStageSubModelCallback,
    adapter_for,
    aki_tensor,
    bert2bert,
    depth_map,
    draw_map,
    expand_depth,
    expand_width,
    fpi_tensor,
    submodel_depths,
    train_submodel,
)
from trainforge_core.errors import NoEffectWarning

sys.path.insert(0, str(Path(__file__).parent))
from bert2bert_tiny import config, model


@pytest.fixture(scope="module")
def small():
    return model("bert", 32, 4, 64, 2)


@pytest.mark.parametrize(
    ("big", "word"),
    [
        (dict(hidden=16, heads=2, ffn=64, layers=2), "hidden"),
        (dict(hidden=32, heads=4, ffn=32, layers=2), "ffn"),
        (dict(hidden=32, heads=4, ffn=64, layers=1), "layers"),
        (dict(hidden=64, heads=4, ffn=128, layers=2), "head dimension"),
    ],
)
def test_target_smaller_or_head_dim_change_names_the_dimension(small, big, word):
    cfg = config("bert", big["hidden"], big["heads"], big["ffn"], big["layers"])
    with pytest.raises(ValueError, match=word):
        bert2bert(small, cfg)
    with pytest.raises(ValueError, match=word):
        ExpansionPlan.from_configs(small.config, cfg)


def test_mismatched_configs(small):
    other = config("bert", 64, 8, 128, 2)
    other.vocab_size = 99
    with pytest.raises(ValueError, match="vocab_size"):
        bert2bert(small, other)
    with pytest.raises(ValueError, match="model_type"):
        bert2bert(small, config("gpt2", 64, 8, 128, 2))
    with pytest.raises(TypeError, match="big_config"):
        bert2bert(small, {"hidden_size": 64})


def test_unsupported_architecture():
    with pytest.raises(TypeError, match="unsupported architecture BertModel"):
        bert2bert(T.BertModel(config("bert", 32, 4, 64, 1)), config("bert", 64, 8, 128, 1))
    with pytest.raises(TypeError, match="unsupported architecture"):
        expand_depth(torch.nn.Linear(2, 2), 3)
    with pytest.raises(TypeError, match="transformers model"):
        adapter_for("bert")
    with pytest.raises(TypeError, match="model_type"):
        ExpansionPlan.from_configs(T.T5Config(), T.T5Config())


def test_bad_method_plan_and_layers(small):
    cfg = config("bert", 64, 8, 128, 2)
    with pytest.raises(ValueError, match="method"):
        bert2bert(small, cfg, method="net2net")
    plan = ExpansionPlan.from_configs(config("bert", 16, 2, 32, 2), cfg)
    with pytest.raises(ValueError, match="plan was drawn"):
        bert2bert(small, cfg, plan=plan)
    with pytest.raises(ValueError, match="plan was drawn"):
        expand_width(small, plan)
    with pytest.raises(TypeError, match="plan must be an ExpansionPlan"):
        expand_width(small, "plan")
    with pytest.raises(ValueError, match="num_layers"):
        expand_depth(small, 1)
    with pytest.raises(TypeError, match="num_layers"):
        expand_depth(small, 2.5)


def test_plan_and_map_bad_input():
    d = Dims(2, 32, 4, 4, 64, 8)
    with pytest.raises(TypeError, match="Dims"):
        ExpansionPlan.from_dims(d, (2, 64))
    with pytest.raises(ValueError, match="mapping"):
        ExpansionPlan.from_dims(d, d, mapping="sorted")
    with pytest.raises(TypeError, match="seed"):
        ExpansionPlan.from_dims(d, d, seed="0")
    with pytest.raises(ValueError, match="smaller"):
        draw_map(8, 4)
    with pytest.raises(ValueError, match="target"):
        draw_map(4, 0)
    with pytest.raises(ValueError, match="source_layers"):
        depth_map(0, 4)
    with pytest.raises(ValueError, match="smaller"):
        depth_map(4, 2)
    with pytest.raises(ValueError, match="kind"):
        ExpansionPlan.from_dims(d, d).index("Q")
    gqa = Dims(2, 32, 4, 2, 64, 8)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        ExpansionPlan.from_dims(gqa, Dims(2, 64, 8, 2, 64, 8))


def test_tensor_primitives_reject_unknown_kind():
    from trainforge_bert2bert import Role

    d = Dims(1, 4, 1, 1, 8, 4)
    plan = ExpansionPlan.from_dims(d, Dims(1, 8, 2, 2, 16, 4))
    with pytest.raises(ValueError, match="kind"):
        fpi_tensor(torch.ones(4, 4), Role("linear", "Z", "D"), plan)
    with pytest.raises(ValueError, match="kind"):
        aki_tensor(torch.ones(4, 4), torch.ones(4, 4), Role("linear", "Z", "D"), plan)
    with pytest.raises(TypeError, match="plan"):
        fpi_tensor(torch.ones(4, 4), Role("linear", "D", "D"), None)
    with pytest.raises(TypeError, match="role"):
        fpi_tensor(torch.ones(4, 4), ("linear", "D", "D"), plan)
    with pytest.raises(ValueError, match="next_weight"):
        aki_tensor(torch.ones(4, 4), torch.ones(4, 3), Role("linear", "D", "D"), plan)
    # And the primitive itself, against a literal formula: in-split, out-copy.
    w = torch.randn(4, 4, dtype=torch.float64)
    got = fpi_tensor(w, Role("linear", "D", "D"), plan)
    g, c = plan.g_hidden, torch.bincount(plan.g_hidden, minlength=4).double()
    want = torch.stack([torch.stack([w[g[o], g[i]] / c[g[i]] for i in range(8)]) for o in range(8)])
    assert torch.equal(got, want)


def test_no_growth_warns(small):
    with pytest.warns(NoEffectWarning):
        same = bert2bert(small, small.config)
    assert same.config.hidden_size == 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bert2bert(small, config("bert", 64, 8, 128, 2))


def test_two_stage_bad_input(small):
    with pytest.raises(ValueError, match="stage1_steps"):
        TwoStageSubModelCallback(stage1_steps=-1, block=2)
    with pytest.raises(ValueError, match="block"):
        TwoStageSubModelCallback(stage1_steps=3, block=0)
    with pytest.raises(ValueError, match="block"):
        submodel_depths(2, 3)
    with pytest.raises(ValueError, match="num_layers"):
        submodel_depths(0, 1)
    with pytest.raises(ValueError, match="depth"), train_submodel(small, 5, 1):
        pass
    with pytest.raises(ValueError, match="block"), train_submodel(small, 2, 3):
        pass
    with pytest.raises(TypeError, match="unsupported"), train_submodel(torch.nn.Linear(1, 1), 1, 1):
        pass
