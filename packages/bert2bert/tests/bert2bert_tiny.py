"""Tiny configs of the four supported architectures (no weights, no hub)."""

from __future__ import annotations

import torch
import transformers as T

VOCAB = 61


def config(arch: str, hidden: int, heads: int, ffn: int, layers: int, kv_heads: int | None = None):
    if arch == "bert":
        return T.BertConfig(
            vocab_size=VOCAB,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=ffn,
            num_hidden_layers=layers,
            max_position_embeddings=32,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    if arch == "roberta":
        return T.RobertaConfig(
            vocab_size=VOCAB,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=ffn,
            num_hidden_layers=layers,
            max_position_embeddings=34,
            pad_token_id=1,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
    if arch == "gpt2":
        return T.GPT2Config(
            vocab_size=VOCAB,
            n_embd=hidden,
            n_head=heads,
            n_inner=ffn,
            n_layer=layers,
            n_positions=32,
            bos_token_id=0,
            eos_token_id=0,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    if arch == "llama":
        return T.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads or heads,
            intermediate_size=ffn,
            num_hidden_layers=layers,
            max_position_embeddings=32,
            tie_word_embeddings=True,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        )
    raise ValueError(arch)


CLASSES = {
    "bert": T.BertForMaskedLM,
    "roberta": T.RobertaForMaskedLM,
    "gpt2": T.GPT2LMHeadModel,
    "llama": T.LlamaForCausalLM,
}
ARCHS = tuple(CLASSES)


def model(arch: str, *args, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    m = CLASSES[arch](config(arch, *args, **kwargs)).eval()
    # Random, non-trivial norm gains and biases so a wrong map cannot hide behind 1s and 0s.
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def ids(batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)
