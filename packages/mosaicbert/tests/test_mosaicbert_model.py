"""The model against a plain padded float64 re-implementation, padding invariance, ALiBi
extrapolation, the masked-only head, every attention backend, and save / load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from trainforge_mosaicbert import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
    alibi_slopes,
    flash_attn_available,
)
from trainforge_mosaicbert.testing import ragged_batch, tiny_config


def _ln(mod, x):
    return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)


def reference_encoder(
    model: MosaicBertModel, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """MosaicBERT written out on the padded batch, in float64, with an explicit softmax."""
    cfg = model.config
    h, d = cfg.num_attention_heads, cfg.hidden_size
    hd = d // h
    p = {k: v.double() for k, v in model.state_dict().items()}
    emb = model.embeddings
    x = (
        p["embeddings.word_embeddings.weight"][ids]
        + p["embeddings.token_type_embeddings.weight"][0]
    )
    x = F.layer_norm(
        x, (d,), p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], emb.LayerNorm.eps
    )
    b, s = ids.shape
    m = torch.tensor(alibi_slopes(h), dtype=torch.float64)
    pos = torch.arange(s)
    bias = -m[:, None, None] * (pos[None, :] - pos[:, None]).abs()
    bias = bias[None] + torch.where(mask.bool(), 0.0, -math.inf)[:, None, None, :].double()
    for i in range(cfg.num_hidden_layers):
        pre = f"encoder.layer.{i}."
        qkv = x @ p[pre + "attention.self.Wqkv.weight"].T + p[pre + "attention.self.Wqkv.bias"]
        q, k, v = qkv.view(b, s, 3, h, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, s, d)
        out = (
            ctx @ p[pre + "attention.output.dense.weight"].T
            + p[pre + "attention.output.dense.bias"]
        )
        x = F.layer_norm(
            out + x,
            (d,),
            p[pre + "attention.output.LayerNorm.weight"],
            p[pre + "attention.output.LayerNorm.bias"],
            cfg.layer_norm_eps,
        )
        f = cfg.intermediate_size
        gv = x @ p[pre + "mlp.gated_layers.weight"].T
        hmid = F.gelu(gv[..., :f]) * gv[..., f:]
        out = hmid @ p[pre + "mlp.wo.weight"].T + p[pre + "mlp.wo.bias"]
        x = F.layer_norm(
            out + x,
            (d,),
            p[pre + "mlp.layernorm.weight"],
            p[pre + "mlp.layernorm.bias"],
            cfg.layer_norm_eps,
        )
    return x


@pytest.mark.parametrize("heads", [4, 2])
def test_encoder_matches_padded_float64_reference(heads):
    torch.manual_seed(0)
    model = MosaicBertModel(tiny_config(num_attention_heads=heads)).eval()
    ids, mask = ragged_batch([11, 5, 8], 12)
    out = model(ids, mask).last_hidden_state.double()
    ref = reference_encoder(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(out[real], ref[real], rtol=1e-4, atol=1e-4)
    assert (out[~real] == 0).all()  # padded positions are never computed


def test_real_token_outputs_identical_at_pad_16_and_48():
    torch.manual_seed(1)
    model = MosaicBertModel(tiny_config()).eval()
    ids16, mask16 = ragged_batch([16, 9, 3], 16, seed=3)
    ids48 = F.pad(ids16, (0, 32))
    mask48 = F.pad(mask16, (0, 32))
    with torch.no_grad():
        a = model(ids16, mask16).last_hidden_state
        b = model(ids48, mask48).last_hidden_state
    torch.testing.assert_close(a[mask16.bool()], b[mask48.bool()], rtol=0, atol=1e-5)
    torch.testing.assert_close(
        model(ids48, mask48).pooler_output, model(ids16, mask16).pooler_output, rtol=0, atol=1e-5
    )


def test_model_built_for_32_tokens_runs_on_96():
    torch.manual_seed(2)
    model = MosaicBertModel(tiny_config(alibi_starting_size=32)).eval()
    ids, mask = ragged_batch([96, 70], 96)
    with torch.no_grad():
        model(ids[:, :20], mask[:, :20])
        assert model.encoder.alibi_size == 32
        out = model(ids, mask).last_hidden_state.double()
    assert model.encoder.alibi_size == 96
    ref = reference_encoder(model, ids, mask)
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], rtol=1e-4, atol=1e-4)


def test_masked_only_head_gives_the_full_head_loss():
    torch.manual_seed(3)
    model = MosaicBertForMaskedLM(tiny_config()).eval()
    ids, mask = ragged_batch([14, 9, 6], 16, seed=5)
    labels = torch.full_like(ids, -100)
    chosen = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3) & mask.bool()
    labels[chosen] = ids[chosen]
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
        full = model(ids, mask).logits  # head on every position
    ref = F.cross_entropy(full[chosen].double(), ids[chosen])
    torch.testing.assert_close(out.loss.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits[chosen], full[chosen], rtol=1e-5, atol=1e-5)
    assert (out.logits[~chosen] == 0).all()


def test_masked_only_head_gradients_match_full_head():
    torch.manual_seed(4)
    model = MosaicBertForMaskedLM(tiny_config())
    ids, mask = ragged_batch([10, 7], 12, seed=6)
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 5], labels[0, 9] = ids[0, 2], ids[1, 5], ids[0, 9]
    model(ids, mask, labels=labels).loss.backward()
    g1 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits = model(ids, mask).logits
    sel = labels != -100
    F.cross_entropy(logits[sel], labels[sel]).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g1[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_backend_equals_sdpa_on_cpu():
    torch.manual_seed(5)
    sdpa = MosaicBertForMaskedLM(tiny_config(attn_impl="sdpa")).eval()
    flex = MosaicBertForMaskedLM(tiny_config(attn_impl="flex")).eval()
    flex.load_state_dict(sdpa.state_dict())
    ids, mask = ragged_batch([13, 4, 9], 16, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(
            flex(ids, mask).logits, sdpa(ids, mask).logits, rtol=1e-5, atol=1e-5
        )


def test_auto_backend_is_sdpa_on_cpu():
    from trainforge_mosaicbert import resolve_attn_impl

    assert resolve_attn_impl("auto", torch.device("cpu"), torch.float32) == "sdpa"
    assert resolve_attn_impl("auto", torch.device("cpu"), torch.bfloat16) == "sdpa"


@pytest.mark.skipif(
    not (torch.cuda.is_available() and flash_attn_available()), reason="flash-attn on CUDA needed"
)
@pytest.mark.gpu
def test_flash_varlen_equals_sdpa_on_gpu():
    torch.manual_seed(6)
    sdpa = MosaicBertForMaskedLM(tiny_config(attn_impl="sdpa", hidden_size=64)).cuda().eval()
    flash = (
        MosaicBertForMaskedLM(tiny_config(attn_impl="flash_varlen", hidden_size=64)).cuda().eval()
    )
    flash.load_state_dict(sdpa.state_dict())
    ids, mask = ragged_batch([13, 4, 9], 16, seed=7)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a = flash(ids.cuda(), mask.cuda()).logits.float()
        b = sdpa(ids.cuda(), mask.cuda()).logits.float()
    torch.testing.assert_close(a, b, rtol=0, atol=2e-2)


def test_bf16_autocast_forward_close_to_fp32():
    torch.manual_seed(7)
    model = MosaicBertModel(tiny_config()).eval()
    ids, mask = ragged_batch([12, 7], 12, seed=8)
    with torch.no_grad():
        ref = model(ids, mask).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids, mask).last_hidden_state
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref)[mask.bool()].abs().max() < 0.1


def test_save_pretrained_round_trip_through_auto_classes(tmp_path):
    torch.manual_seed(8)
    model = MosaicBertForMaskedLM(tiny_config()).eval()
    ids, mask = ragged_batch([10, 6], 10, seed=9)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mosaic_bert"
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is MosaicBertForMaskedLM
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, mask).logits, model(ids, mask).logits, rtol=0, atol=0
        )
    sd = loaded.state_dict()
    assert not any("alibi" in k for k in sd)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(sd[k], v, rtol=0, atol=0)
    # the encoder alone loads from the MLM checkpoint
    enc = AutoModel.from_pretrained(tmp_path)
    assert type(enc) is MosaicBertModel


def test_sequence_classification_loss_and_round_trip(tmp_path):
    torch.manual_seed(9)
    model = MosaicBertForSequenceClassification(tiny_config(num_labels=3)).eval()
    ids, mask = ragged_batch([8, 5, 3], 8, seed=10)
    labels = torch.tensor([0, 2, 1])
    out = model(ids, mask, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    # padding does not change the prediction
    with torch.no_grad():
        wide = model(F.pad(ids, (0, 20)), F.pad(mask, (0, 20))).logits
    torch.testing.assert_close(wide, out.logits, rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask).logits, out.logits, rtol=0, atol=0)
    reg = MosaicBertForSequenceClassification(tiny_config(num_labels=1))
    r = reg(ids, mask, labels=torch.tensor([0.5, -1.0, 2.0]))
    torch.testing.assert_close(
        r.loss, F.mse_loss(r.logits.squeeze(-1), torch.tensor([0.5, -1.0, 2.0]))
    )


def test_config_json_round_trip(tmp_path):
    cfg = tiny_config(attn_impl="flex", max_sequence_length=64, low_precision_layernorm=False)
    cfg.save_pretrained(tmp_path)
    back = MosaicBertConfig.from_pretrained(tmp_path)
    assert (back.attn_impl, back.max_sequence_length, back.low_precision_layernorm) == (
        "flex",
        64,
        False,
    )


def test_bert_base_parameter_counts():
    # The paper: MosaicBERT-Base 137M with GLU width 3072; the 2/3 option ~ BERT-Base 110M.
    with torch.device("meta"):
        full = MosaicBertForMaskedLM(MosaicBertConfig())
        small = MosaicBertForMaskedLM(MosaicBertConfig(intermediate_size=2048))
    n_full = sum(p.numel() for p in full.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert 136e6 < n_full < 138.5e6
    assert 108e6 < n_small < 111e6
