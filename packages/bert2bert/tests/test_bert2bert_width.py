"""Width expansion: exact function preservation (FPI), AKI's provenance, LM-head handling."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from trainforge_bert2bert import ExpansionPlan, bert2bert, expand_width

sys.path.insert(0, str(Path(__file__).parent))
from bert2bert_tiny import ARCHS, config, ids, model


def _hidden(m, x):
    return m(input_ids=x, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_2x_fpi_duplicates_every_hidden_state(arch):
    """D 32->64, H 4->8 (head dim 8), F 64->128 with equal duplicate counts: every hidden
    state of the big model is the small one's, duplicated by g_D (max err < 1e-5)."""
    small = model(arch, 32, 4, 64, 2)
    plan = ExpansionPlan.from_configs(small.config, config(arch, 64, 8, 128, 2), mapping="cyclic")
    big = expand_width(small, plan, "fpi").eval()
    x = ids()
    with torch.no_grad():
        hs, hb = _hidden(small, x), _hidden(big, x)
        assert len(hs) == len(hb) == 3
        for s, b in zip(hs, hb, strict=True):
            assert (b - s[..., plan.g_hidden]).abs().max() < 1e-5
        # The untied, split head keeps the logits too.
        assert (small(input_ids=x).logits - big(input_ids=x).logits).abs().max() < 1e-5


def _ffn_ref64(w1, b1, w2, b2, x):
    """Plain float64 FFN (GELU), independent of the model code."""
    h = torch.nn.functional.gelu(x @ w1.T.double() + b1.double())
    return h @ w2.T.double() + b2.double()


def test_nonuniform_ffn_path_is_exact_and_full_model_only_close():
    small = model("bert", 32, 4, 64, 2).double()
    plan = ExpansionPlan.from_configs(small.config, config("bert", 48, 6, 96, 2), seed=3)
    counts = torch.bincount(plan.g_hidden, minlength=32)
    assert counts.max() > counts.min()  # really non-uniform
    big = expand_width(small, plan, "fpi")
    x = torch.randn(5, 32, dtype=torch.float64)
    for layer in range(2):
        s = small.bert.encoder.layer[layer]
        b = big.bert.encoder.layer[layer]
        ref = _ffn_ref64(
            s.intermediate.dense.weight,
            s.intermediate.dense.bias,
            s.output.dense.weight,
            s.output.dense.bias,
            x,
        )
        with torch.no_grad():
            got = b.output.dense(b.intermediate(x[:, plan.g_hidden]))
        assert (got - ref[:, plan.g_hidden]).abs().max() < 1e-10
    # The whole model goes through LayerNorm over unequal duplicates: close, not exact.
    xi = ids()
    with torch.no_grad():
        err = (small(input_ids=xi).logits - big(input_ids=xi).logits).abs().max().item()
    assert 1e-6 < err < 0.5


def test_aki_new_units_come_from_next_layer_top_layer_is_fpi():
    small = model("bert", 32, 4, 64, 3)
    plan = ExpansionPlan.from_configs(small.config, config("bert", 48, 6, 96, 3), seed=1)
    fpi = expand_width(small, plan, "fpi")
    aki = expand_width(small, plan, "aki")
    g_d, g_f = plan.g_hidden, plan.g_ffn
    c_d = torch.bincount(g_d, minlength=32).float()
    c_f = torch.bincount(g_f, minlength=64).float()
    new_f = torch.arange(96) >= 64
    hd = 8
    g_h = (plan.g_heads[:, None] * hd + torch.arange(hd)).reshape(-1)
    new_h = torch.arange(48) >= 32
    for layer in range(2):
        nxt = small.bert.encoder.layer[layer + 1]
        cur = small.bert.encoder.layer[layer]
        a = aki.bert.encoder.layer[layer]
        # W1: new rows = next layer's W1 rows g_F(j), in-dim split by C_D.
        want_new = nxt.intermediate.dense.weight[g_f[new_f]][:, g_d] / c_d[g_d]
        torch.testing.assert_close(a.intermediate.dense.weight[new_f], want_new)
        torch.testing.assert_close(
            a.intermediate.dense.bias[new_f], nxt.intermediate.dense.bias[g_f[new_f]]
        )
        want_old = cur.intermediate.dense.weight[:, g_d] / c_d[g_d]
        torch.testing.assert_close(a.intermediate.dense.weight[~new_f], want_old)
        # W2: new in-columns from the next layer, every column divided by C_F.
        w2 = a.output.dense.weight
        torch.testing.assert_close(
            w2[:, new_f], (nxt.output.dense.weight[g_d][:, g_f[new_f]] / c_f[g_f[new_f]])
        )
        torch.testing.assert_close(w2[:, ~new_f], cur.output.dense.weight[g_d][:, :64] / c_f)
        # Whole new heads (query rows) from the next layer.
        q = a.attention.self.query.weight
        torch.testing.assert_close(
            q[new_h], nxt.attention.self.query.weight[g_h[new_h]][:, g_d] / c_d[g_d]
        )
        # The residual-stream parameters stay the current layer's (FPI).
        torch.testing.assert_close(a.output.LayerNorm.weight, cur.output.LayerNorm.weight[g_d])
    top_a, top_f = aki.bert.encoder.layer[2], fpi.bert.encoder.layer[2]
    for (n, p), (_, q) in zip(top_a.named_parameters(), top_f.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    x = ids()
    with torch.no_grad():
        diff = (aki(input_ids=x).logits - small(input_ids=x).logits).abs().max()
    assert diff > 1e-3


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_aki_on_decoders_takes_new_units_from_next_layer(arch):
    small = model(arch, 32, 4, 64, 2)
    plan = ExpansionPlan.from_configs(small.config, config(arch, 64, 8, 128, 2), seed=0)
    aki = expand_width(small, plan, "aki")
    fpi = expand_width(small, plan, "fpi")
    sd_a, sd_f = aki.state_dict(), fpi.state_dict()
    name = (
        "transformer.h.{}.mlp.c_fc.weight"
        if arch == "gpt2"
        else "model.layers.{}.mlp.up_proj.weight"
    )
    new = torch.arange(128) >= 64
    # Conv1D is [in, out]: neurons are columns; Linear is [out, in]: neurons are rows.
    pick = (lambda t: t[:, new]) if arch == "gpt2" else (lambda t: t[new])
    keep = (lambda t: t[:, ~new]) if arch == "gpt2" else (lambda t: t[~new])
    # Layer 0 under AKI: old neurons == FPI of layer 0, new neurons == FPI of layer 1.
    fpi_next = expand_width(small, plan, "fpi").state_dict()[name.format(1)]
    assert torch.equal(keep(sd_a[name.format(0)]), keep(sd_f[name.format(0)]))
    assert torch.equal(pick(sd_a[name.format(0)]), pick(fpi_next))
    assert torch.equal(sd_a[name.format(1)], sd_f[name.format(1)])


def test_tied_head_kept_tied_scales_logits_untied_preserves_them():
    small = model("bert", 32, 4, 64, 1)
    big_cfg = config("bert", 64, 8, 128, 1)
    x = ids()
    tied = bert2bert(small, big_cfg, "fpi", mapping="cyclic", untie_lm_head=False).eval()
    untied = bert2bert(small, big_cfg, "fpi", mapping="cyclic").eval()
    assert tied.config.tie_word_embeddings and not untied.config.tie_word_embeddings
    assert tied.cls.predictions.decoder.weight is tied.bert.embeddings.word_embeddings.weight
    with torch.no_grad():
        ls, lt, lu = (m(input_ids=x).logits for m in (small, tied, untied))
        bias = small.cls.predictions.bias
    torch.testing.assert_close(lu, ls, atol=1e-5, rtol=0)
    # Tied: every hidden unit is counted twice, so logits - bias double.
    torch.testing.assert_close(lt - bias, 2 * (ls - bias), atol=1e-5, rtol=0)
    assert "tied" in str(tied.bert2bert_report) and tied.bert2bert_report.notes


def test_llama_grouped_query_attention_is_preserved():
    small = model("llama", 32, 4, 64, 2, kv_heads=2)
    big = bert2bert(small, config("llama", 64, 8, 128, 2, kv_heads=4), "fpi", mapping="cyclic")
    x = ids()
    with torch.no_grad():
        assert (small(input_ids=x).logits - big(input_ids=x).logits).abs().max() < 1e-5


def test_one_global_hidden_map_is_used_by_every_block():
    """The public implementation's pitfall: a map per block. Here every residual-stream
    tensor of every layer is indexed by the plan's single g_D."""
    small = model("bert", 32, 4, 64, 2)
    plan = ExpansionPlan.from_configs(small.config, config("bert", 48, 6, 96, 2), seed=7)
    big = expand_width(small, plan, "fpi")
    g = plan.g_hidden
    for name, p in small.named_parameters():
        if name.endswith("LayerNorm.weight"):
            assert torch.equal(big.get_parameter(name), p[g]), name
    emb = small.bert.embeddings.word_embeddings.weight
    assert torch.equal(big.bert.embeddings.word_embeddings.weight, emb[:, g])
