"""MosaicBERT as transformers ``PreTrainedModel``s.

Architecture after ``mosaicml/examples:examples/benchmarks/bert/src/bert_layers.py`` (read,
not copied): BERT with no learned positions (ALiBi instead), a GeGLU feed-forward block from
one fused bias-free Linear, post-LN residuals, every dense layer run on the real (unpadded)
tokens only, and an MLM head evaluated on the masked tokens (plus [CLS]) only.
Module and parameter names follow the reference (``Wqkv``, ``gated_layers``, ``wo``) so that
its checkpoints map by name.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from trainforge_mosaicbert.alibi import alibi_bias, alibi_slopes
from trainforge_mosaicbert.attention import UnpadContext, check_attn_impl, unpadded_attention
from trainforge_mosaicbert.configuration import MosaicBertConfig
from trainforge_mosaicbert.layernorm import LowPrecisionLayerNorm
from trainforge_mosaicbert.padding import unpad_input

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def _layer_norm(config: MosaicBertConfig, eps: float | None = None) -> nn.LayerNorm:
    cls = LowPrecisionLayerNorm if config.low_precision_layernorm else nn.LayerNorm
    return cls(config.hidden_size, eps=config.layer_norm_eps if eps is None else eps)


class MosaicBertEmbeddings(nn.Module):
    """Word + token-type embeddings, LayerNorm, dropout; no position embeddings (ALiBi)."""

    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = _layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class MosaicBertSelfAttention(nn.Module):
    """Fused QKV projection and attention over the unpadded tokens."""

    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, ctx: UnpadContext) -> torch.Tensor:
        qkv = self.Wqkv(hidden_states)
        p = self.dropout_p if self.training else 0.0
        return unpadded_attention(qkv, ctx, self.num_attention_heads, p)


class MosaicBertSelfOutput(nn.Module):
    """Output projection, dropout, post-LN residual."""

    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = _layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class MosaicBertAttention(nn.Module):
    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.self = MosaicBertSelfAttention(config)
        self.output = MosaicBertSelfOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, ctx: UnpadContext, subset_idx: torch.Tensor | None
    ) -> torch.Tensor:
        attn = self.self(hidden_states, ctx)
        if subset_idx is not None:
            # Last layer of the MLM path: only the rows whose outputs are used go on.
            attn = attn.index_select(0, subset_idx)
            hidden_states = hidden_states.index_select(0, subset_idx)
        return self.output(attn, hidden_states)


class MosaicBertGLUMLP(nn.Module):
    """GeGLU feed-forward: ``wo(GELU(x W_g) * (x W_v))``, W_g and W_v fused in one bias-free
    Linear of width ``2 * intermediate_size``; dropout; post-LN residual (reference:
    ``BertGatedLinearUnitMLP``, exact GELU)."""

    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.act = nn.GELU(approximate="none")
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm = _layer_norm(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gated, value = self.gated_layers(hidden_states).split(self.intermediate_size, dim=-1)
        out = self.wo(self.dropout(self.act(gated) * value))
        return self.layernorm(out + hidden_states)


class MosaicBertLayer(nn.Module):
    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.attention = MosaicBertAttention(config)
        self.mlp = MosaicBertGLUMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        ctx: UnpadContext,
        subset_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.mlp(self.attention(hidden_states, ctx, subset_idx))


class MosaicBertEncoder(nn.Module):
    """The layer stack over unpadded tokens, with the lazily grown ALiBi tensor."""

    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList(MosaicBertLayer(config) for _ in range(config.num_hidden_layers))
        # Plain attributes, not buffers: derived from the config, never in the state_dict, and
        # built at the first forward (so a meta-device init in from_pretrained cannot spoil them).
        self._alibi: torch.Tensor | None = None
        self._slopes: dict[torch.device, torch.Tensor] = {}

    @property
    def alibi_size(self) -> int:
        """Current side of the cached ALiBi tensor (0 before the first sdpa forward)."""
        return 0 if self._alibi is None else self._alibi.shape[-1]

    def slopes(self, device: torch.device) -> torch.Tensor:
        if device not in self._slopes:
            self._slopes[device] = torch.tensor(
                alibi_slopes(self.config.num_attention_heads), dtype=torch.float32, device=device
            )
        return self._slopes[device]

    def alibi(self, size: int, device: torch.device) -> torch.Tensor:
        """The ``[1, heads, n, n]`` ALiBi tensor with ``n >= size``, rebuilt when too small
        (reference: ``BertEncoder.rebuild_alibi_tensor``)."""
        current = self._alibi
        if current is None or current.shape[-1] < size:
            new_size = max(size, self.config.alibi_starting_size)
            if current is not None:
                log.info(
                    "MosaicBERT: growing the ALiBi tensor from %d to %d",
                    current.shape[-1],
                    new_size,
                )
            self._alibi = alibi_bias(self.slopes(device), new_size, device=device)
        elif current.device != device:
            self._alibi = current.to(device)
        return self._alibi

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        subset_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(rows, positions)``: final hidden states of the real tokens (or of the
        real tokens in ``subset_mask`` only) and their positions in the flattened batch."""
        batch, seqlen = hidden_states.shape[:2]
        hidden, indices, cu_seqlens, max_seqlen = unpad_input(hidden_states, attention_mask)
        ctx = UnpadContext(
            indices=indices,
            cu_seqlens=cu_seqlens,
            max_seqlen=max_seqlen,
            batch=batch,
            seqlen=seqlen,
            slopes=self.slopes(hidden.device),
            attn_impl=self.config.attn_impl,
            alibi_cache=self.alibi,
        )
        subset_idx = None
        if subset_mask is not None:
            subset_idx = torch.nonzero(subset_mask.flatten()[indices], as_tuple=False).flatten()
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            hidden = layer(hidden, ctx, subset_idx if i == last else None)
        positions = indices if subset_idx is None else indices[subset_idx]
        return hidden, positions


class MosaicBertPooler(nn.Module):
    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(first_token))


class MosaicBertPredictionHeadTransform(nn.Module):
    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        act = config.hidden_act
        self.transform_act_fn = ACT2FN[act] if isinstance(act, str) else act
        # The reference hard-codes eps 1e-12 here (BertPredictionHeadTransform).
        self.LayerNorm = _layer_norm(config, eps=1e-12)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class MosaicBertLMPredictionHead(nn.Module):
    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.transform = MosaicBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)  # weight tied to embeddings

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class MosaicBertOnlyMLMHead(nn.Module):
    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__()
        self.predictions = MosaicBertLMPredictionHead(config)

    def forward(self, sequence_output: torch.Tensor) -> torch.Tensor:
        return self.predictions(sequence_output)


class MosaicBertPreTrainedModel(PreTrainedModel):
    """Weight init and loading for MosaicBERT (BERT's: normal(0, initializer_range), zero
    biases, LayerNorm ones / zeros, transformers' default ``_init_weights``)."""

    config_class = MosaicBertConfig
    config: MosaicBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = False
    _no_split_modules: ClassVar[list[str]] = ["MosaicBertLayer"]

    def __init__(self, config: MosaicBertConfig, *args: object, **kwargs: object) -> None:
        if not isinstance(config, MosaicBertConfig):
            raise TypeError(f"config must be a MosaicBertConfig, got {type(config).__name__}")
        check_attn_impl(config.attn_impl)
        super().__init__(config, *args, **kwargs)


def _check_inputs(
    config: MosaicBertConfig,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    if input_ids.ndim != 2 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise ValueError(
            "input_ids must be an integer tensor of shape (batch, seqlen), got "
            f"shape {tuple(input_ids.shape)} and dtype {input_ids.dtype}"
        )
    batch, seqlen = input_ids.shape
    if batch == 0 or seqlen == 0:
        raise ValueError(f"input_ids must be non-empty, got shape {tuple(input_ids.shape)}")
    cap = config.max_sequence_length
    if cap is not None and seqlen > cap:
        raise ValueError(
            f"input_ids has {seqlen} positions but this configuration allows at most "
            f"max_sequence_length={cap} (set it to None to let ALiBi extrapolate)"
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(getattr(attention_mask, 'shape', ())) or type(attention_mask).__name__}"
        )
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    elif not isinstance(token_type_ids, torch.Tensor) or token_type_ids.shape != input_ids.shape:
        raise ValueError(
            f"token_type_ids must have the shape of input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(getattr(token_type_ids, 'shape', ())) or type(token_type_ids).__name__}"
        )
    return attention_mask, token_type_ids


def _no_extra_outputs(output_attentions: bool | None, output_hidden_states: bool | None) -> None:
    if output_attentions or output_hidden_states:
        raise ValueError(
            "MosaicBERT does not return attention maps or per-layer hidden states "
            "(output_attentions / output_hidden_states must be False or None)"
        )


class MosaicBertModel(MosaicBertPreTrainedModel):
    """The MosaicBERT encoder (embeddings, unpadded layer stack, optional [CLS] pooler)."""

    def __init__(self, config: MosaicBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = MosaicBertEmbeddings(config)
        self.encoder = MosaicBertEncoder(config)
        self.pooler = MosaicBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def encode_rows(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        subset_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Final hidden states of the real tokens only, unpadded: ``(rows [n, hidden],
        positions [n])`` with positions in the flattened ``batch * seqlen`` layout. With
        ``subset_mask`` (``[batch, seqlen]`` bool) the last layer computes only those rows."""
        attention_mask, token_type_ids = _check_inputs(
            self.config, input_ids, attention_mask, token_type_ids
        )
        embedded = self.embeddings(input_ids, token_type_ids)
        return self.encoder(embedded, attention_mask, subset_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,  # ignored: ALiBi has no positions
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        _no_extra_outputs(output_attentions, output_hidden_states)
        rows, positions = self.encode_rows(input_ids, attention_mask, token_type_ids)
        batch, seqlen = input_ids.shape
        flat = rows.new_zeros(batch * seqlen, rows.shape[-1]).index_copy(0, positions, rows)
        sequence_output = flat.view(batch, seqlen, -1)
        pooled = self.pooler(sequence_output[:, 0]) if self.pooler is not None else None
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (sequence_output, pooled)
        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled)


class MosaicBertForMaskedLM(MosaicBertPreTrainedModel):
    """MosaicBERT with the MLM head. With ``labels`` the head runs on the masked tokens only
    (``labels != -100``) and the last layer only on those tokens plus [CLS]; the returned
    logits are then zero at every unmasked position (as in the reference). Without labels the
    head runs on every position."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"
    }

    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__(config)
        self.bert = MosaicBertModel(config, add_pooling_layer=False)
        self.cls = MosaicBertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,  # ignored: ALiBi has no positions
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple[torch.Tensor, ...]:
        _no_extra_outputs(output_attentions, output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is None:
            seq = self.bert(input_ids, attention_mask, token_type_ids, return_dict=True)
            logits = self.cls(seq.last_hidden_state)
            return MaskedLMOutput(logits=logits) if return_dict else (logits,)
        attention_mask, token_type_ids = _check_inputs(
            self.config, input_ids, attention_mask, token_type_ids
        )
        if not isinstance(labels, torch.Tensor) or labels.shape != input_ids.shape:
            raise ValueError(
                f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(getattr(labels, 'shape', ())) or type(labels).__name__}"
            )
        masked = labels != IGNORE_INDEX
        if bool((masked & ~attention_mask.bool()).any()):
            raise ValueError(
                "labels mark padded positions (attention_mask == 0) for prediction; "
                "set them to -100"
            )
        bad = masked & ((labels < 0) | (labels >= self.config.vocab_size))
        if bool(bad.any()):
            raise ValueError(
                f"labels must be -100 or a token id in [0, {self.config.vocab_size}), got "
                f"{labels[bad][:4].tolist()}"
            )
        batch, seqlen = input_ids.shape
        subset = masked.clone()
        subset[:, 0] = True  # [CLS], as the reference keeps it for the pooler
        rows, positions = self.bert.encode_rows(input_ids, attention_mask, token_type_ids, subset)
        keep = masked.flatten()[positions]
        masked_positions = positions[keep]
        scores = self.cls(rows[keep])
        targets = labels.flatten()[masked_positions]
        if targets.numel() == 0:
            log.warning("MosaicBERT MLM batch without a masked token: loss is 0")
            loss = scores.sum() * 0.0
        else:
            loss = F.cross_entropy(scores.float(), targets)
        logits = scores.new_zeros(batch * seqlen, scores.shape[-1]).index_copy(
            0, masked_positions, scores
        )
        logits = logits.view(batch, seqlen, -1)
        if not return_dict:
            return (loss, logits)
        return MaskedLMOutput(loss=loss, logits=logits)


class MosaicBertForSequenceClassification(MosaicBertPreTrainedModel):
    """MosaicBERT with a linear classifier on the pooled [CLS] state (regression when
    ``num_labels == 1``; single- or multi-label classification otherwise, as in HF BERT)."""

    def __init__(self, config: MosaicBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = MosaicBertModel(config, add_pooling_layer=True)
        p = (
            config.classifier_dropout
            if config.classifier_dropout is not None
            else config.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,  # ignored: ALiBi has no positions
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.bert(
            input_ids,
            attention_mask,
            token_type_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.shape[0] != logits.shape[0]:
                raise ValueError(
                    f"labels must be a tensor with one row per sequence ({logits.shape[0]}), got "
                    f"{tuple(getattr(labels, 'shape', ())) or type(labels).__name__}"
                )
            problem = self.config.problem_type
            if problem is None:
                if self.num_labels == 1:
                    problem = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    problem = "single_label_classification"
                else:
                    problem = "multi_label_classification"
                self.config.problem_type = problem
            if problem == "regression":
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
            elif problem == "single_label_classification":
                if bool(((labels < 0) | (labels >= self.num_labels)).any()):
                    raise ValueError(
                        f"labels must be class ids in [0, {self.num_labels}), got "
                        f"{labels.tolist()[:8]}"
                    )
                loss = F.cross_entropy(logits.float().view(-1, self.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _register() -> None:
    AutoConfig.register(MosaicBertConfig.model_type, MosaicBertConfig, exist_ok=True)
    AutoModel.register(MosaicBertConfig, MosaicBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(MosaicBertConfig, MosaicBertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(
        MosaicBertConfig, MosaicBertForSequenceClassification, exist_ok=True
    )


_register()
