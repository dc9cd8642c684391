"""``MosaicBertConfig``: BERT's fields plus ALiBi, the attention backend and low-precision LN."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from trainforge_mosaicbert.attention import ATTN_IMPLS


class MosaicBertConfig(PretrainedConfig):
    """Configuration of a MosaicBERT encoder.

    Defaults are MosaicBERT-Base (``mosaicml/examples:examples/benchmarks/bert/yamls/main/
    mosaic-bert-base-uncased.yaml`` on top of ``BertConfig``'s defaults): vocab 30528 (30522
    padded to a multiple of 64), 768 wide, 12 layers, 12 heads, GLU width 3072 (137M
    parameters; ``intermediate_size=2048`` matches BERT-Base's 110M), attention dropout 0.

    MosaicBERT-specific fields:

    - ``alibi_starting_size`` (512): size of the ALiBi tensor built up front; longer batches
      rebuild it lazily (the model extrapolates).
    - ``max_sequence_length`` (None): a hard cap; longer inputs raise ``ValueError``. None lets
      ALiBi extrapolate to any length.
    - ``attn_impl`` ("auto"): "flash_varlen", "flex", "sdpa" or "auto" (see
      :mod:`trainforge_mosaicbert.attention`).
    - ``low_precision_layernorm`` (True): LayerNorms run in the autocast dtype.
    """

    model_type = "mosaic_bert"

    def __init__(
        self,
        vocab_size: int = 30528,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.0,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        classifier_dropout: float | None = None,
        alibi_starting_size: int = 512,
        max_sequence_length: int | None = None,
        attn_impl: str = "auto",
        low_precision_layernorm: bool = True,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("vocab_size", vocab_size),
            ("hidden_size", hidden_size),
            ("num_hidden_layers", num_hidden_layers),
            ("num_attention_heads", num_attention_heads),
            ("intermediate_size", intermediate_size),
            ("type_vocab_size", type_vocab_size),
            ("alibi_starting_size", alibi_starting_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a multiple of num_attention_heads "
                f"({num_attention_heads})"
            )
        if max_sequence_length is not None and (
            not isinstance(max_sequence_length, int)
            or isinstance(max_sequence_length, bool)
            or max_sequence_length <= 0
        ):
            raise ValueError(
                "max_sequence_length must be a positive integer or None, got "
                f"{max_sequence_length!r}"
            )
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        for name, p in (
            ("hidden_dropout_prob", hidden_dropout_prob),
            ("attention_probs_dropout_prob", attention_probs_dropout_prob),
        ):
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.alibi_starting_size = alibi_starting_size
        self.max_sequence_length = max_sequence_length
        self.attn_impl = attn_impl
        self.low_precision_layernorm = bool(low_precision_layernorm)
        super().__init__(
            pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs
        )
