"""Compression: rank rule, SVD initialisation against float64 maths, the layer filter, the
report, merge/export and state-dict round trips."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_pela import (
    LowRankLinear,
    apply_pela,
    compress_linear_layers,
    low_rank_factors,
    low_rank_layers,
    merge_low_rank,
    rank_for_ratio,
)


def test_rank_rule_matches_the_reference_formula():
    # floor(m*n / (ratio*(m+n))), guoyang9/PELA:DeiT/low_rank.py
    assert rank_for_ratio(768, 768, 2.0) == 192
    assert rank_for_ratio(3072, 768, 2.0) == 307  # 2359296 / 7680 = 307.2
    assert rank_for_ratio(2304, 768, 1.5) == 384
    assert rank_for_ratio(64, 256, 3.0) == 17


@pytest.mark.parametrize("ratio", [1.5, 2.0, 3.0])
def test_compressed_parameters_are_about_original_over_ratio(ratio):
    layer = nn.Linear(768, 768, bias=False)
    model = nn.Sequential(layer)
    report = apply_pela(model, ratio, skip=None)
    after = sum(p.numel() for p in model.parameters())
    assert after <= 768 * 768 / ratio
    assert after == pytest.approx(768 * 768 / ratio, rel=0.01)
    assert report.layers[0].params_after == after


def test_full_rank_reconstructs_the_weight():
    torch.manual_seed(0)
    w = torch.randn(48, 32, dtype=torch.float64)
    a, b, _ = low_rank_factors(w, 32)
    assert (b @ a - w).abs().max() < 1e-5
    w32 = w.float()
    a, b, _ = low_rank_factors(w32, 32)
    assert (b @ a - w32).abs().max() < 1e-5


@pytest.mark.parametrize("rank", [1, 5, 14])
def test_initial_error_is_the_eckart_young_sum(rank):
    torch.manual_seed(rank)
    lin = nn.Linear(40, 24).double()
    model = nn.Sequential(lin)
    w = lin.weight.detach().numpy().copy()
    sigma = np.linalg.svd(w, compute_uv=False)  # independent float64 reference
    expected = float((sigma[rank:] ** 2).sum())
    ratio = 40 * 24 / (rank * 64) - 1e-9  # the ratio that yields exactly this rank
    assert rank_for_ratio(24, 40, ratio) == rank
    report = apply_pela(model, ratio, skip=None)
    new = model[0]
    product = (new[1].weight @ new[0].weight).detach().numpy()
    measured = float(((product - w) ** 2).sum())
    assert measured == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert report.layers[0].init_error == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert report.layers[0].relative_error == pytest.approx(expected / (sigma**2).sum(), rel=1e-9)


def test_factors_split_the_singular_values_evenly():
    torch.manual_seed(3)
    w = torch.randn(20, 30, dtype=torch.float64)
    a, b, s = low_rank_factors(w, 6)
    # A = S^1/2 V^T has orthogonal rows with squared norms sigma; B = U S^1/2 likewise.
    torch.testing.assert_close(a @ a.T, torch.diag(s[:6]), atol=1e-10, rtol=0)
    torch.testing.assert_close(b.T @ b, torch.diag(s[:6]), atol=1e-10, rtol=0)


def test_low_rank_linear_computes_b_a_x_plus_bias():
    torch.manual_seed(0)
    layer = LowRankLinear(12, 20, rank=4).double()
    x = torch.randn(3, 12, dtype=torch.float64)
    ref = x @ layer[0].weight.T @ layer[1].weight.T + layer[1].bias
    torch.testing.assert_close(layer(x), ref)
    torch.testing.assert_close(torch.nn.functional.linear(x, layer.weight, layer.bias), ref)
    merged = layer.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), ref)


def test_vit_layer_filter_and_report(vit):
    before = sum(p.numel() for p in vit.parameters())
    report = apply_pela(vit, 2.0)
    names = {c.name for c in report.layers}
    expected = {
        f"blocks.{i}.{s}" for i in range(4) for s in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    }
    assert names == expected
    assert "head" in report.skipped
    assert type(vit.head) is nn.Linear
    assert isinstance(vit.blocks[0].mlp.fc1, LowRankLinear)
    assert report.params_before == before
    assert report.params_after == sum(p.numel() for p in vit.parameters())
    saved = sum(c.params_before - c.params_after for c in report.layers)
    assert report.params_before - report.params_after == saved
    assert "16 Linear layers replaced" in str(report)
    assert set(low_rank_layers(vit)) == expected


def test_skip_and_min_out_features():
    model = nn.Sequential()
    model.add_module("keep_me", nn.Linear(32, 32))
    model.add_module("tiny", nn.Linear(32, 9))  # out_features < 10: kept (DeiT/low_rank.py)
    model.add_module("big", nn.Linear(32, 32))
    report = apply_pela(model, 2.0, skip=("keep",))
    assert [c.name for c in report.layers] == ["big"]
    assert sorted(report.skipped) == ["keep_me", "tiny"]


def test_svd_init_keeps_outputs_close_at_mild_ratio(vit, images):
    ref = vit(images)
    student = compress_linear_layers(copy.deepcopy(vit), ratio=1.05)
    assert student is not vit
    out = student(images)
    # Random weights have a flat spectrum, so even rank ~half loses a lot; the output must
    # still correlate strongly.
    assert torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0) > 0.8


def test_nothing_matched_warns():
    model = nn.Sequential(nn.Conv2d(1, 2, 3))
    with pytest.warns(NoEffectWarning):
        report = apply_pela(model, 2.0)
    assert report.layers == []
    with pytest.warns(NoEffectWarning):
        merge_low_rank(model)


def test_second_compression_does_not_touch_factor_layers(vit):
    apply_pela(vit, 2.0)
    with pytest.warns(NoEffectWarning):
        again = apply_pela(vit, 2.0)
    assert again.layers == []


def test_merge_exports_the_original_architecture(vit, images):
    student = compress_linear_layers(copy.deepcopy(vit), 2.0)
    out = student(images)
    merged_names = merge_low_rank(student)
    assert len(merged_names) == 16 and not low_rank_layers(student)
    torch.testing.assert_close(student(images), out, atol=1e-5, rtol=1e-4)
    # The merged state dict loads into a fresh uncompressed model.
    fresh = copy.deepcopy(vit)
    fresh.load_state_dict(student.state_dict())
    torch.testing.assert_close(fresh(images), out, atol=1e-5, rtol=1e-4)


def test_state_dict_round_trip(vit, images, tmp_path):
    student = compress_linear_layers(copy.deepcopy(vit), 3.0)
    with torch.no_grad():  # move away from the SVD init so a reload cannot recompute it
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    out = student(images)
    keys = student.state_dict().keys()
    assert "blocks.0.mlp.fc1.0.weight" in keys and "blocks.0.mlp.fc1.1.bias" in keys
    torch.save(student.state_dict(), tmp_path / "s.pt")
    rebuilt = compress_linear_layers(copy.deepcopy(vit), 3.0, init="none")
    rebuilt.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    torch.testing.assert_close(rebuilt.eval()(images), out, atol=0, rtol=0)
    from safetensors.torch import load_file, save_file

    save_file(student.state_dict(), tmp_path / "s.safetensors")
    again = compress_linear_layers(copy.deepcopy(vit), 3.0, init="none")
    again.load_state_dict(load_file(tmp_path / "s.safetensors"))
    torch.testing.assert_close(again.eval()(images), out, atol=0, rtol=0)


def test_timm_swin_is_compressed_with_its_filter():
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    swin = SwinTransformer(
        img_size=32,
        patch_size=4,
        in_chans=1,
        num_classes=10,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 2),
        window_size=4,
    ).eval()
    x = torch.randn(2, 1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = apply_pela(
            swin, 1.5, skip=("norm", "head", "patch_embed", "downsample", "attn.proj")
        )
    names = {c.name for c in report.layers}
    assert names == {
        f"layers.{i}.blocks.0.{s}" for i in range(2) for s in ("attn.qkv", "mlp.fc1", "mlp.fc2")
    }
    assert swin(x).shape == (2, 10)


def test_transformers_bert_encoder_is_compressed(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, 64, (2, 10))
    report = apply_pela(bert, 2.0, skip=("classifier", "pooler"))
    assert len(report.layers) == 2 * 6  # q, k, v, attn out, intermediate, output per layer
    logits = bert(input_ids=ids).logits
    # Export: merge, save_pretrained, reload as a plain BERT with the same outputs.
    merge_low_rank(bert)
    bert.save_pretrained(tmp_path)
    reloaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded(input_ids=ids).logits, logits, atol=1e-5, rtol=1e-4)


def test_rank_multiple_rounds_the_reference_rank_down():
    # ViT-B's MLP at ratio 3: the reference's 204 is not a SIMD multiple (opt-in deviation).
    assert rank_for_ratio(3072, 768, 3.0) == 204
    assert rank_for_ratio(3072, 768, 3.0, multiple=1) == 204
    assert rank_for_ratio(3072, 768, 3.0, multiple=8) == 200
    assert rank_for_ratio(3072, 768, 3.0, multiple=16) == 192
    assert rank_for_ratio(3072, 768, 3.0, multiple=32) == 192
    assert rank_for_ratio(2304, 768, 3.0, multiple=16) == 192  # already a multiple
    # Below the multiple the reference rank is kept (rounding would give 0).
    assert rank_for_ratio(64, 64, 3.0) == 10
    assert rank_for_ratio(64, 64, 3.0, multiple=16) == 10


@pytest.mark.parametrize("multiple", [1, 8, 16])
def test_rank_multiple_parameter_counts(multiple):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 384), nn.GELU(), nn.Linear(384, 96))
    before = sum(p.numel() for p in model.parameters())
    weights = {i: model[i].weight.detach().clone() for i in (0, 2)}
    reference = copy.deepcopy(model)
    ref_report = apply_pela(reference, 3.0, skip=None)
    report = apply_pela(model, 3.0, skip=None, rank_multiple=multiple)
    rank = {1: 25, 8: 24, 16: 16}[multiple]  # floor(96*384 / (3*480)) = 25
    assert [c.rank for c in report.layers] == [rank, rank]
    assert [c.rank for c in ref_report.layers] == [25, 25]
    after = sum(p.numel() for p in model.parameters())
    assert after == 2 * rank * (96 + 384) + 384 + 96
    assert report.params_before == before and report.params_after == after
    # At least as compressed as asked, and as the reference's rule.
    assert 2 * rank * (96 + 384) <= 2 * 96 * 384 / 3
    assert after <= ref_report.params_after
    assert report.rank_multiple == multiple
    assert ("multiples of" in str(report)) == (multiple > 1)
    # Still the best rank-r approximation (Eckart-Young) of each weight.
    for w, c in zip((weights[0], weights[2]), report.layers, strict=True):
        sigma = torch.linalg.svdvals(w.double())
        assert c.init_error == pytest.approx(float((sigma[rank:] ** 2).sum()), rel=1e-4)


def test_rank_multiple_keeps_small_ranks():
    model = nn.Sequential(nn.Linear(64, 64))
    report = apply_pela(model, 3.0, skip=None, rank_multiple=16)
    assert report.layers[0].rank == 10
    wide = compress_linear_layers(
        nn.Sequential(nn.Linear(96, 384)), 3.0, skip=None, rank_multiple=16
    )
    assert wide[0].rank == 16


def test_rank_multiple_state_dict_reload(vit, images):
    student = copy.deepcopy(vit)
    apply_pela(student, 3.0, rank_multiple=16)
    state = student.state_dict()
    fresh = copy.deepcopy(vit)
    apply_pela(fresh, 3.0, init="none", rank_multiple=16)
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(images), student.eval()(images))
    other = copy.deepcopy(vit)
    apply_pela(other, 3.0, init="none")  # the reference's ranks (17) differ from 16
    with pytest.raises(RuntimeError, match="size mismatch"):
        other.load_state_dict(state)
