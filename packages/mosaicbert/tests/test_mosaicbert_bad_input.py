"""Bad input gets a clear error naming the argument."""

from __future__ import annotations

import pytest
import torch

from trainforge_mosaicbert import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
    flash_attn_available,
    resolve_attn_impl,
)
from trainforge_mosaicbert.testing import ragged_batch, tiny_config


def test_heads_not_dividing_hidden_size():
    with pytest.raises(
        ValueError, match=r"hidden_size \(30\) must be a multiple of num_attention_heads \(4\)"
    ):
        MosaicBertConfig(hidden_size=30, num_attention_heads=4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attn_impl": "triton"}, "attn_impl must be one of"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"max_sequence_length": -1}, "max_sequence_length"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
        ({"alibi_starting_size": 0}, "alibi_starting_size"),
    ],
)
def test_config_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MosaicBertConfig(**kwargs)


def test_attention_mask_of_the_wrong_shape():
    model = MosaicBertModel(tiny_config())
    ids, mask = ragged_batch([5, 3], 6)
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        model(ids, mask[:, :5])
    with pytest.raises(ValueError, match="only 0 and 1"):
        model(ids, mask * 3)
    with pytest.raises(ValueError, match="token_type_ids"):
        model(ids, mask, token_type_ids=torch.zeros(2, 3, dtype=torch.long))


def test_input_ids_of_the_wrong_kind():
    model = MosaicBertModel(tiny_config())
    with pytest.raises(ValueError, match="input_ids must be an integer tensor"):
        model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="input_ids must be an integer tensor"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids"):
        model([[1, 2]])


def test_sequence_longer_than_a_fixed_size_configuration_allows():
    model = MosaicBertModel(tiny_config(max_sequence_length=16))
    ids, mask = ragged_batch([20], 20)
    with pytest.raises(ValueError, match="max_sequence_length=16"):
        model(ids, mask)


@pytest.mark.skipif(flash_attn_available(), reason="flash-attn is installed here")
def test_unavailable_backend_requested_by_name():
    with pytest.raises(ImportError, match="flash-attn"):
        MosaicBertModel(tiny_config(attn_impl="flash_varlen"))


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        resolve_attn_impl("magic", torch.device("cpu"), torch.float32)


@pytest.mark.skipif(not flash_attn_available(), reason="flash-attn not installed")
def test_flash_backend_on_cpu_tensors():
    with pytest.raises(ValueError, match="CUDA"):
        resolve_attn_impl("flash_varlen", torch.device("cpu"), torch.bfloat16)


def test_wrong_config_type():
    from transformers import BertConfig

    with pytest.raises(TypeError, match="MosaicBertConfig"):
        MosaicBertModel(BertConfig())


def test_mlm_labels_bad_input():
    model = MosaicBertForMaskedLM(tiny_config())
    ids, mask = ragged_batch([5, 3], 6)
    labels = torch.full_like(ids, -100)
    labels[1, 4] = 7  # a padded position
    with pytest.raises(ValueError, match="padded positions"):
        model(ids, mask, labels=labels)
    labels = torch.full_like(ids, -100)
    labels[0, 1] = 999
    with pytest.raises(ValueError, match="token id in"):
        model(ids, mask, labels=labels)
    with pytest.raises(ValueError, match="labels must have the shape"):
        model(ids, mask, labels=labels[:, :2])
    with pytest.raises(ValueError, match="output_hidden_states"):
        model(ids, mask, output_hidden_states=True)


def test_mlm_batch_without_masked_tokens_gives_zero_loss_not_nan():
    model = MosaicBertForMaskedLM(tiny_config())
    ids, mask = ragged_batch([5, 3], 6)
    out = model(ids, mask, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0


def test_classification_labels_bad_input():
    model = MosaicBertForSequenceClassification(tiny_config(num_labels=2))
    ids, mask = ragged_batch([5, 3], 6)
    with pytest.raises(ValueError, match="class ids"):
        model(ids, mask, labels=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="one row per sequence"):
        model(ids, mask, labels=torch.tensor([0, 1, 1]))
