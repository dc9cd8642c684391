"""Layouts found automatically: the DiT built here, transformers Llama / GPT-2, timm ViT."""

from __future__ import annotations

import pytest
import torch

from trainforge_tinyfusion import (
    GaussianDiffusion,
    TinyDiT,
    find_blocks,
    learn_depth_pruning,
    prune_layers,
    skipped_layers,
)

transformers = pytest.importorskip("transformers")


def _llama(layers=4):
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def _gpt2(layers=4):
    cfg = transformers.GPT2Config(
        vocab_size=64, n_embd=32, n_layer=layers, n_head=4, n_positions=64
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _lm_loss(model, ids):
    return model(input_ids=ids, labels=ids).loss


@pytest.mark.parametrize(("make", "path"), [(_llama, "model.layers"), (_gpt2, "transformer.h")])
def test_hf_decoders_search_export_and_save_pretrained(make, path, tmp_path):
    model = make()
    assert find_blocks(model)[0] == path
    ids = torch.randint(0, 64, (4, 12))
    res = learn_depth_pruning(model, [ids, ids.flip(0)], _lm_loss, keep=1, block=2, steps=3)
    assert len(res.kept) == 2 and len(find_blocks(res.model)[1]) == 2
    assert res.model.config.num_hidden_layers == 2
    skip = [j for j in range(4) if j not in res.kept]
    with torch.no_grad(), skipped_layers(model, skip):
        ref = model(input_ids=ids).logits
    with torch.no_grad():
        out = res.model(input_ids=ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # save_pretrained / from_pretrained round trip of the pruned model, and KV-cache generation
    res.model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, out, rtol=1e-5, atol=1e-5)
    gen = again.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 7)


def test_timm_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=4, num_classes=10
    ).eval()
    assert find_blocks(vit)[0] == "blocks"
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    loss = lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
    res = learn_depth_pruning(vit, [(x, y)], loss, keep=2, block=4, steps=2)
    assert len(res.model.blocks) == 2
    skip = [j for j in range(4) if j not in res.kept]
    with torch.no_grad(), skipped_layers(vit, skip):
        ref = vit(x)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), ref, rtol=1e-5, atol=1e-5)


def test_tiny_dit_search_and_export():
    torch.manual_seed(0)
    dit = TinyDiT(depth=4, hidden_size=32, num_heads=4)
    diff = GaussianDiffusion()
    x = torch.randn(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    res = learn_depth_pruning(
        dit, [(x, y)], lambda m, b: diff.loss(m, *b), keep=1, block=2, steps=2
    )
    assert res.model.depth == 2 and len(res.model.blocks) == 2
    res.model.eval()
    dit.eval()
    t = torch.full((8,), 500)
    skip = [j for j in range(4) if j not in res.kept]
    with torch.no_grad(), skipped_layers(dit, skip):
        ref = dit(x, t, y)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x, t, y), ref, rtol=0, atol=1e-6)
    fresh = TinyDiT(depth=2, hidden_size=32, num_heads=4)
    fresh.load_state_dict(res.model.state_dict(), strict=True)


def test_unrecognised_layout_is_a_clear_error():
    with pytest.raises(ValueError, match="no residual block stack"):
        find_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="blocks='dotted.path"):
        learn_depth_pruning(torch.nn.Linear(2, 2), [1], lambda m, b: 0, keep=1, block=2)
    with pytest.raises(ValueError, match="no submodule"):
        find_blocks(torch.nn.Linear(2, 2), blocks="encoder.layers")


def test_prune_layers_updates_layer_types_and_layer_idx():
    model = _llama(4)
    model.config.layer_types = ["full_attention"] * 3 + ["sliding_attention"]
    pruned = prune_layers(model, [1, 3])
    assert pruned.config.layer_types == ["full_attention", "sliding_attention"]
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1]
    assert model.config.num_hidden_layers == 4  # the original untouched
