"""Tiny reference models built from configs (never downloaded)."""

from __future__ import annotations

from typing import Any

import torch

from trainforge_core._optional import require


def tiny_llama_config(
    vocab_size: int = 2048,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    tie_word_embeddings: bool = True,
    **overrides: Any,
) -> Any:
    """A ``transformers.LlamaConfig`` for a small language model.

    ``intermediate_size`` defaults to the Llama ratio 8/3 * hidden rounded up to 32.
    """
    transformers = require("transformers", extra="lm")
    for name, value in {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "max_position_embeddings": max_position_embeddings,
    }.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
    kv = num_heads if num_kv_heads is None else num_kv_heads
    if kv <= 0 or num_heads % kv:
        raise ValueError(
            f"num_kv_heads={num_kv_heads} must be positive and divide num_heads={num_heads}"
        )
    if intermediate_size is None:
        intermediate_size = -(-int(hidden_size * 8 / 3) // 32) * 32
    return transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=kv,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        **overrides,
    )


def tiny_llama(seed: int = 0, **config_kwargs: Any) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` from :func:`tiny_llama_config`.

    Initialisation is reproducible under ``seed`` and leaves the global RNG untouched.
    """
    transformers = require("transformers", extra="lm")
    config = tiny_llama_config(**config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    return model
