"""Index maps, the depth map with the top-r remainder rule, and depth expansion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from trainforge_bert2bert import ExpansionPlan, bert2bert, depth_map, draw_map, expand_depth

sys.path.insert(0, str(Path(__file__).parent))
from bert2bert_tiny import config, ids, model


def test_draw_map_identity_prefix_and_range():
    g = draw_map(5, 13, torch.Generator().manual_seed(0))
    assert g[:5].tolist() == list(range(5))
    assert g.min() >= 0 and g.max() < 5 and g.numel() == 13
    assert draw_map(4, 8, mapping="cyclic").tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert draw_map(3, 3).tolist() == [0, 1, 2]


def test_plan_is_seeded_and_heads_move_in_whole_blocks():
    a = ExpansionPlan.from_configs(
        config("bert", 32, 4, 64, 2), config("bert", 48, 6, 96, 4), seed=5
    )
    b = ExpansionPlan.from_configs(
        config("bert", 32, 4, 64, 2), config("bert", 48, 6, 96, 4), seed=5
    )
    c = ExpansionPlan.from_configs(
        config("bert", 32, 4, 64, 2), config("bert", 48, 6, 96, 4), seed=6
    )
    assert all(torch.equal(x, y) for x, y in ((a.g_hidden, b.g_hidden), (a.g_ffn, b.g_ffn)))
    assert not (torch.equal(a.g_hidden, c.g_hidden) and torch.equal(a.g_ffn, c.g_ffn))
    idx, cnt, new = a.index("H")
    per_head = idx.view(6, 8)
    assert torch.equal(per_head % 8, torch.arange(8).expand(6, 8))  # whole heads copied
    assert torch.equal(per_head[:, 0] // 8, a.g_heads)
    assert new.sum() == 16 and cnt.min() >= 1


def test_gqa_plan_keeps_query_heads_with_their_group():
    plan = ExpansionPlan.from_configs(
        config("llama", 32, 4, 64, 2, kv_heads=2), config("llama", 64, 8, 128, 2, kv_heads=4)
    )
    rep = 2
    assert torch.equal(plan.g_heads // rep, plan.g_kv_heads.repeat_interleave(rep))


def test_depth_map_top_r_remainder():
    assert depth_map(2, 5) == [0, 1, 0, 1, 1]
    assert depth_map(3, 8) == [0, 1, 2, 0, 1, 2, 1, 2]
    assert depth_map(4, 4) == [0, 1, 2, 3]
    assert depth_map(12, 24)[12:] == list(range(12))


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_depth_2_to_5_copies_tensors(arch):
    small = model(arch, 32, 4, 64, 2)
    deep = expand_depth(small, 5)
    layers = {"bert": "bert.encoder.layer", "gpt2": "transformer.h", "llama": "model.layers"}[arch]
    src, dst = small.state_dict(), deep.state_dict()
    for i, j in enumerate([0, 1, 0, 1, 1]):
        for name, t in dst.items():
            if name.startswith(f"{layers}.{i}."):
                assert torch.equal(t, src[name.replace(f"{layers}.{i}.", f"{layers}.{j}.", 1)])
    for name, t in dst.items():
        if not name.startswith(layers + "."):
            assert torch.equal(t, src[name]), name
    # Copies, not shared storage: training one layer must not move its twin.
    first, twin = deep.get_submodule(f"{layers}.0"), deep.get_submodule(f"{layers}.2")
    p0, p2 = next(first.parameters()), next(twin.parameters())
    assert p0.data_ptr() != p2.data_ptr()


def test_width_and_depth_in_one_call_match_composition():
    small = model("bert", 32, 4, 64, 2)
    big_cfg = config("bert", 48, 6, 96, 5)
    plan = ExpansionPlan.from_configs(small.config, big_cfg, seed=2)
    direct = bert2bert(small, big_cfg, "aki", plan=plan)
    from trainforge_bert2bert import expand_width

    composed = expand_depth(expand_width(small, plan, "aki"), 5)
    assert direct.config.num_hidden_layers == 5 and direct.config.hidden_size == 48
    a, b = direct.state_dict(), composed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = ids()
    with torch.no_grad():
        assert torch.isfinite(direct(input_ids=x).logits).all()
