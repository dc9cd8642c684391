"""grow_depth: structure, independence of copies, KV-cache correctness, function
preservation of ``zero`` (and not of ``stack``), saving, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_core.models import tiny_llama
from trainforge_gstack import GrowthWarning, depth_plan, find_layout, grow_depth, renumber_layers

VOCAB = 97


def llama(layers: int = 2, tie: bool = True, seed: int = 0) -> nn.Module:
    return tiny_llama(
        seed=seed,
        num_layers=layers,
        hidden_size=32,
        num_heads=4,
        num_kv_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    ).eval()


def gpt2(layers: int = 2, **extra: object) -> nn.Module:
    cfg = transformers.GPT2Config(
        n_layer=layers,
        n_embd=32,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
        **extra,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def neox(layers: int = 2) -> nn.Module:
    cfg = transformers.GPTNeoXConfig(
        num_hidden_layers=layers,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
    )
    torch.manual_seed(0)
    return transformers.GPTNeoXForCausalLM(cfg).eval()


def mistral(layers: int = 2) -> nn.Module:
    cfg = transformers.MistralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    return transformers.MistralForCausalLM(cfg).eval()


MAKERS = {"llama": llama, "gpt2": gpt2, "gpt_neox": neox, "mistral": mistral}


def blocks(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(find_layout(model).layers)


def tokens(seed: int = 0, n: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, n), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x).logits


@torch.no_grad()
def incremental_logits(model: nn.Module, x: torch.Tensor, prefix: int = 5) -> torch.Tensor:
    out = model(input_ids=x[:, :prefix], use_cache=True)
    past, pieces = out.past_key_values, [out.logits]
    for t in range(prefix, x.shape[1]):
        out = model(input_ids=x[:, t : t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        pieces.append(out.logits)
    return torch.cat(pieces, dim=1)


# -- the plan -------------------------------------------------------------------------------
def test_plans_follow_the_reference_orders():
    assert depth_plan(3, 4, "stack").sources == (0, 1, 2) * 4  # stackingpt.py stacking_list
    assert depth_plan(2, 3, "interleave").sources == (0, 0, 0, 1, 1, 1)
    zero = depth_plan(2, 2, "zero")
    assert zero.sources == (0, 0, 1, 1) and zero.zeroed == (False, True, False, True)
    rand = depth_plan(2, 2, "random")
    assert rand.sources == (0, 0, 1, 1) and rand.fresh == (True,) * 4  # milk.py groups
    assert depth_plan(2, None, [1, 1, 0]).sources == (1, 1, 0)
    assert len(depth_plan(6)) == 24  # default g = 4


# -- structure ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(MAKERS))
def test_stack_structure_copies_and_config(family):
    small = MAKERS[family]()
    big = grow_depth(small, 4, "stack")
    small_blocks, big_blocks = blocks(small), blocks(big)
    assert len(big_blocks) == 8 and big.config.num_hidden_layers == 8
    assert small.config.num_hidden_layers == 2 and len(small_blocks) == 2  # input untouched
    for i, block in enumerate(big_blocks):
        src = small_blocks[i % 2].state_dict()
        for name, tensor in block.state_dict().items():
            assert torch.equal(tensor, src[name]), (i, name)
    # Everything outside the blocks (embeddings, final norm, head) is equal.
    small_sd, big_sd = small.state_dict(), big.state_dict()
    layers_path = find_layout(small).layers + "."
    outside = [k for k in small_sd if not k.startswith(layers_path)]
    assert outside
    for k in outside:
        assert torch.equal(small_sd[k], big_sd[k]), k
    # No storage is shared between copies, nor with the small model.
    ptrs = [p.data_ptr() for p in big.parameters()]
    assert len(ptrs) == len(set(ptrs))
    assert not set(ptrs) & {p.data_ptr() for p in small.parameters()}


def test_an_inplace_edit_of_one_copy_leaves_the_others():
    big = grow_depth(llama(), 4, "stack")
    layers = big.model.layers
    before = layers[4].self_attn.q_proj.weight.clone()
    with torch.no_grad():
        layers[0].self_attn.q_proj.weight.add_(1.0)
    assert torch.equal(layers[4].self_attn.q_proj.weight, before)
    assert not torch.equal(layers[0].self_attn.q_proj.weight, before)


def test_explicit_list_and_interleave():
    small = llama(layers=3)
    big = grow_depth(small, op=[2, 0, 0, 1])
    assert len(big.model.layers) == 4 and big.config.num_hidden_layers == 4
    for i, s in enumerate([2, 0, 0, 1]):
        assert torch.equal(
            big.model.layers[i].mlp.up_proj.weight, small.model.layers[s].mlp.up_proj.weight
        )
    inter = grow_depth(small, 2, "interleave")
    for i in range(6):
        assert torch.equal(
            inter.model.layers[i].mlp.up_proj.weight, small.model.layers[i // 2].mlp.up_proj.weight
        )


@pytest.mark.parametrize("tie", [True, False])
def test_tied_embeddings_stay_tied(tie):
    big = grow_depth(llama(tie=tie), 4)
    assert (big.lm_head.weight is big.model.embed_tokens.weight) is tie
    assert big.config.tie_word_embeddings is tie


def test_layer_idx_renumbered_and_blocks_see_the_grown_config():
    big = grow_depth(llama(), 4)
    assert [b.self_attn.layer_idx for b in big.model.layers] == list(range(8))
    assert all(b.self_attn.config is big.config for b in big.model.layers)


# -- KV cache ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["stack", "interleave", "zero", "random"])
@pytest.mark.parametrize("family", sorted(MAKERS))
def test_cached_decoding_equals_the_full_forward(family, op):
    big = grow_depth(MAKERS[family](), 4, op)
    x = tokens()
    torch.testing.assert_close(incremental_logits(big, x), logits(big, x), atol=1e-5, rtol=1e-5)


def test_without_renumbering_the_cache_is_wrong():
    """The negative control of the test above: the copies' stale layer_idx breaks decoding."""
    big = grow_depth(llama(), 4)
    x = tokens()
    for i, block in enumerate(big.model.layers):
        block.self_attn.layer_idx = i % 2
    assert (incremental_logits(big, x) - logits(big, x)).abs().max() > 1e-2
    assert renumber_layers(big) == 6
    torch.testing.assert_close(incremental_logits(big, x), logits(big, x), atol=1e-5, rtol=1e-5)


def test_generate_with_and_without_cache_agree():
    big = grow_depth(llama(), 4)
    x = tokens(n=4)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = big.generate(x, use_cache=True, **kwargs)
        uncached = big.generate(x, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_gpt2_inverse_layer_idx_scaling_follows_the_new_index():
    big = grow_depth(gpt2(scale_attn_by_inverse_layer_idx=True), 4)
    for i, block in enumerate(big.transformer.h):
        assert block.attn.scaling == pytest.approx(block.attn.head_dim**-0.5 / (i + 1))
    x = tokens()
    torch.testing.assert_close(incremental_logits(big, x), logits(big, x), atol=1e-5, rtol=1e-5)


# -- function preservation --------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(MAKERS))
def test_zero_preserves_the_function_and_stack_does_not(family):
    small = MAKERS[family]()
    x = tokens()
    ref = logits(small, x)
    torch.testing.assert_close(logits(grow_depth(small, 4, "zero"), x), ref, atol=1e-5, rtol=0)
    # G_stack changes the function (documented): the paper argues this is fine.
    assert (logits(grow_depth(small, 4, "stack"), x) - ref).abs().max() > 1e-2


def test_zero_blocks_are_identities_with_zeroed_outputs():
    big = grow_depth(llama(), 3, "zero")
    for i, block in enumerate(big.model.layers):
        zeroed = i % 3 != 0
        assert bool(block.self_attn.o_proj.weight.abs().sum() == 0) is zeroed
        assert bool(block.mlp.down_proj.weight.abs().sum() == 0) is zeroed
        assert block.mlp.up_proj.weight.abs().sum() > 0


# -- persistence ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(MAKERS))
def test_grown_model_saves_and_reloads(family, tmp_path):
    big = grow_depth(MAKERS[family](), 4, "stack")
    big.save_pretrained(tmp_path)
    again = type(big).from_pretrained(tmp_path).eval()
    assert again.config.num_hidden_layers == 8
    x = tokens()
    torch.testing.assert_close(logits(again, x), logits(big, x), atol=1e-6, rtol=0)
    torch.testing.assert_close(incremental_logits(again, x), logits(big, x), atol=1e-5, rtol=1e-5)
    sd, sd2 = big.state_dict(), again.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_training_a_copy_updates_only_that_copy():
    big = grow_depth(llama(), 2).train()
    opt = torch.optim.SGD(big.model.layers[0].parameters(), lr=0.1)
    before = big.model.layers[2].self_attn.q_proj.weight.clone()
    big(input_ids=tokens(), labels=tokens()).loss.backward()
    opt.step()
    assert torch.equal(big.model.layers[2].self_attn.q_proj.weight, before)


# -- warnings and bad input -------------------------------------------------------------------
def test_factor_outside_the_papers_range_warns():
    with pytest.warns(GrowthWarning, match="outside"):
        grow_depth(llama(layers=1), 8)
    with pytest.warns(NoEffectWarning):
        grow_depth(llama(), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grow_depth(llama(), 4)
        grow_depth(llama(), op=[0, 1, 0, 1, 0, 1, 0, 1, 0, 1])  # explicit lists: no warning


@pytest.mark.parametrize("factor", [0, -2, 1.5, 2.0, "4", True])
def test_bad_factor(factor):
    with pytest.raises(ValueError, match="factor"):
        grow_depth(llama(), factor)


@pytest.mark.parametrize("op", [[0, 2], [-1, 0], [0, 5, 1]])
def test_out_of_range_layer_list(op):
    with pytest.raises(ValueError, match="out of range"):
        grow_depth(llama(), op=op)


def test_other_bad_ops():
    with pytest.raises(ValueError, match="op must be one of"):
        grow_depth(llama(), 2, "duplicate")
    with pytest.raises(ValueError, match="must not be empty"):
        grow_depth(llama(), op=[])
    with pytest.raises(TypeError, match="integers"):
        grow_depth(llama(), op=[0, 1.0])
    with pytest.raises(TypeError, match="sequence"):
        grow_depth(llama(), op=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="explicit list"):
        grow_depth(llama(), 2, [0, 1, 0])
    with pytest.raises(ValueError, match="seed"):
        grow_depth(llama(), 2, "random", seed=-1)


def test_unsupported_models():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        grow_depth("llama", 2)
    with pytest.raises(TypeError, match="config"):
        grow_depth(nn.Sequential(nn.Linear(2, 2)), 2)
    bert = transformers.BertModel(
        transformers.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=VOCAB,
        )
    )
    with pytest.raises(ValueError, match=r"unsupported model.*bert"):
        grow_depth(bert, 2)
    with pytest.raises(ValueError, match="no submodule"):
        grow_depth(bert, 2, layers_attr="encoder.blocks")
    with pytest.raises(ValueError, match="ModuleList"):
        grow_depth(bert, 2, layers_attr="encoder")
    with pytest.raises(TypeError, match="layers_attr"):
        grow_depth(llama(), 2, layers_attr=3)


def test_explicit_layers_attr_grows_an_unlisted_decoder():
    bert = transformers.BertModel(
        transformers.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=VOCAB,
        )
    )
    big = grow_depth(bert, 2, layers_attr="encoder.layer")
    assert len(big.encoder.layer) == 4 and big.config.num_hidden_layers == 4
    with pytest.raises(ValueError, match="output projections"):
        grow_depth(bert, 2, "zero", layers_attr="encoder.layer")


def test_per_layer_types_follow_their_source_block(tmp_path):
    """Qwen2 (not in LAYOUTS, grown through layers_attr) keeps a sliding/full type per layer."""
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        use_sliding_window=True,
        sliding_window=4,
        layer_types=["full_attention", "sliding_attention"],
    )
    torch.manual_seed(0)
    small = transformers.Qwen2ForCausalLM(cfg).eval()
    big = grow_depth(small, 2, layers_attr="model.layers")
    assert big.config.layer_types == ["full_attention", "sliding_attention"] * 2
    assert [b.self_attn.sliding_window for b in big.model.layers] == [None, 4, None, 4]
    x = tokens()
    torch.testing.assert_close(incremental_logits(big, x), logits(big, x), atol=1e-5, rtol=1e-5)
    big.save_pretrained(tmp_path)
    again = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(again, x), logits(big, x), atol=1e-6, rtol=0)


def _tiny(family: str) -> nn.Module:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )
    if family == "qwen3":
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=8, **common))
    if family == "gemma":
        return transformers.GemmaForCausalLM(transformers.GemmaConfig(head_dim=8, **common))
    if family == "phi":
        return transformers.PhiForCausalLM(transformers.PhiConfig(**common))
    if family == "olmo":
        return transformers.OlmoForCausalLM(transformers.OlmoConfig(**common))
    return transformers.LlamaModel(transformers.LlamaConfig(**common))  # bare, no LM head


@pytest.mark.parametrize("family", ["qwen3", "gemma", "phi", "olmo", "bare-llama"])
def test_decoders_sharing_the_llama_layout_are_found_generically(family):
    # They used to be refused (only four model types were known).
    torch.manual_seed(0)
    small = _tiny(family).eval()
    layout = find_layout(small)
    assert layout.layers == ("layers" if family == "bare-llama" else "model.layers")
    assert len(layout.output_projections) == 2
    big = grow_depth(small, 2, "zero").eval()  # function-preserving: outputs unchanged
    assert big.config.num_hidden_layers == 4
    x = tokens()
    if family == "bare-llama":
        want, got = small(x).last_hidden_state, big(x).last_hidden_state
    else:
        want, got = logits(small, x), logits(big, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
