"""grow_width: ``split`` and ``zero`` preserve the function of a Llama model exactly, grow
heads in proportion, and reject sizes they cannot grow to."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from trainforge_core.models import tiny_llama
from trainforge_gstack import grow_depth, grow_width

VOCAB = 97


def llama(tie: bool = True, kv: int = 2, seed: int = 0) -> nn.Module:
    model = tiny_llama(
        seed=seed,
        num_layers=2,
        hidden_size=32,
        num_heads=4,
        num_kv_heads=kv,
        intermediate_size=48,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    # Non-trivial norm weights, so a wrong norm rule cannot hide behind all-ones.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model.eval()


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x).logits


X = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize(
    ("op", "hidden"), [("split", 64), ("split", 96), ("zero", 48), ("zero", 64)]
)
def test_width_growth_preserves_the_function(op, hidden, tie):
    small = llama(tie=tie)
    big = grow_width(small, hidden, op)
    assert big.config.hidden_size == hidden
    assert (big.lm_head.weight is big.model.embed_tokens.weight) is tie
    torch.testing.assert_close(logits(big, X), logits(small, X), atol=2e-5, rtol=0)


def test_split_with_noise_preserves_the_function_and_breaks_symmetry():
    small = llama()
    plain = grow_width(small, 64, "split")
    noisy = grow_width(small, 64, "split", split_noise=0.2, seed=1)
    torch.testing.assert_close(logits(noisy, X), logits(small, X), atol=2e-5, rtol=0)
    w_plain = plain.model.layers[0].mlp.up_proj.weight
    w_noisy = noisy.model.layers[0].mlp.up_proj.weight
    # Plain split: the two copies of a hidden unit are read with equal shares.
    assert torch.equal(w_plain[:, :32], w_plain[:, 32:])
    assert not torch.allclose(w_noisy[:, :32], w_noisy[:, 32:])
    # The shares of a unit's copies sum to one: rows repeat, columns add up to the source.
    src = small.model.layers[0].mlp.up_proj.weight
    torch.testing.assert_close(
        w_noisy[:, :32] + w_noisy[:, 32:], src.repeat(2, 1), atol=1e-6, rtol=0
    )


def test_split_structure_follows_net2net():
    small = llama()
    big = grow_width(small, 64, "split")
    cfg = big.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (8, 4, 8)
    assert cfg.intermediate_size == 96
    src = small.model.layers[1].self_attn.o_proj.weight  # [hidden, heads*hd]
    dst = big.model.layers[1].self_attn.o_proj.weight
    # Rows (written hidden units) repeated; columns (read head outputs) halved.
    torch.testing.assert_close(dst, src.repeat(2, 2) / 2, atol=0, rtol=0)


def test_zero_structure_follows_the_reference_zero_operator():
    small = llama()
    big = grow_width(small, 48, "zero")
    cfg = big.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (6, 3)
    assert cfg.rms_norm_eps == pytest.approx(small.config.rms_norm_eps * 32 / 48)
    up = big.model.layers[0].mlp.up_proj.weight  # [ff', hidden']
    assert torch.equal(up[:48, :32], small.model.layers[0].mlp.up_proj.weight)
    assert up[48:, :32].abs().sum() == 0  # new outputs from old inputs: zero
    assert up[:, 32:].abs().sum() > 0  # reading new inputs: fresh init (trainable)
    emb = big.model.embed_tokens.weight
    assert emb[:, 32:].abs().sum() == 0


def test_grown_width_then_depth_and_reload(tmp_path):
    small = llama()
    big = grow_depth(grow_width(small, 64, "split"), 2, "zero")
    torch.testing.assert_close(logits(big, X), logits(small, X), atol=2e-5, rtol=0)
    big.save_pretrained(tmp_path)
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(again, X), logits(big, X), atol=1e-6, rtol=0)


def test_width_growth_leaves_the_input_unchanged():
    small = llama()
    before = {k: v.clone() for k, v in small.state_dict().items()}
    grow_width(small, 64, "split", split_noise=0.1)
    grow_width(small, 48, "zero")
    assert all(torch.equal(v, before[k]) for k, v in small.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(hidden_size=32), ValueError, "larger than"),
        (dict(hidden_size=16), ValueError, "larger than"),
        (dict(hidden_size=64.0), ValueError, "hidden_size"),
        (dict(hidden_size=48, op="split"), ValueError, "integer multiple"),
        (dict(hidden_size=64, op="split", intermediate_size=100), ValueError, "multiple of 48"),
        (dict(hidden_size=64, intermediate_size=8), ValueError, "intermediate_size"),
        (dict(hidden_size=44, op="zero"), ValueError, "head_dim"),
        (dict(hidden_size=40, op="zero"), ValueError, "group size"),
        (dict(hidden_size=64, op="learn"), ValueError, "op must be one of"),
        (dict(hidden_size=64, split_noise=-1.0), ValueError, "split_noise"),
        (dict(hidden_size=64, split_noise=float("nan")), ValueError, "split_noise"),
        (dict(hidden_size=64, op="zero", split_noise=0.1), ValueError, "only applies"),
        (dict(hidden_size=64, seed=-3), ValueError, "seed"),
    ],
)
def test_bad_width_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        grow_width(llama(), **kwargs)


def test_width_rejects_unsupported_models():
    gpt2 = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_layer=1,
            n_embd=32,
            n_head=4,
            vocab_size=VOCAB,
            n_positions=16,
            bos_token_id=None,
            eos_token_id=None,
        )
    )
    with pytest.raises(ValueError, match=r"unsupported model for grow_width.*gpt2"):
        grow_width(gpt2, 64)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        grow_width(None, 64)


def test_mistral_width_growth_preserves_the_function():
    cfg = transformers.MistralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    small = transformers.MistralForCausalLM(cfg).eval()
    for op, hidden in (("split", 64), ("zero", 48)):
        torch.testing.assert_close(
            logits(grow_width(small, hidden, op), X), logits(small, X), atol=2e-5, rtol=0
        )
