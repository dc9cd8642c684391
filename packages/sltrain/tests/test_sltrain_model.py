"""apply_sltrain / merge_sltrain / save and load on tiny Llamas; the paper's parameter count."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_core.models import tiny_llama, tiny_llama_config
from trainforge_core.surgery import count_parameters
from trainforge_sltrain import (
    SLTrainLinear,
    apply_sltrain,
    load_sltrain,
    merge_sltrain,
    optimizer_state_bytes,
    save_sltrain,
    sltrain_from_pretrained,
    sltrain_layers,
    sltrain_linear_params,
    training_state_bytes,
)

_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _model(seed=0):
    return tiny_llama(seed=seed, vocab_size=128, hidden_size=32, num_layers=2, num_heads=4)


def test_apply_replaces_attention_and_mlp_only():
    model = _model()
    emb = model.get_input_embeddings().weight.detach().clone()
    report = apply_sltrain(model, rank=4, sparsity=0.1, alpha=8, seed=0)
    layers = sltrain_layers(model)
    assert len(report.replaced) == len(layers) == 2 * len(_PROJ)
    assert all(n.rsplit(".", 1)[-1] in _PROJ for n in layers)
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, SLTrainLinear)
    assert torch.equal(model.get_input_embeddings().weight, emb)
    assert report.params_after == count_parameters(model) < report.params_before
    assert "14 linear layers" in str(report)
    out = model(input_ids=torch.randint(0, 128, (2, 8)), labels=torch.randint(0, 128, (2, 8)))
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "proj" in n
               and "lora_A" not in n)  # fmt: skip


def test_seed_makes_supports_reproducible():
    a, b, c = _model(), _model(), _model()
    apply_sltrain(a, rank=4, sparsity=0.1, seed=7)
    apply_sltrain(b, rank=4, sparsity=0.1, seed=7)
    apply_sltrain(c, rank=4, sparsity=0.1, seed=8)
    la, lb, lc = sltrain_layers(a), sltrain_layers(b), sltrain_layers(c)
    assert all(torch.equal(la[n].sparse_index, lb[n].sparse_index) for n in la)
    assert all(torch.equal(la[n].sparse_value, lb[n].sparse_value) for n in la)
    assert not all(torch.equal(la[n].sparse_index, lc[n].sparse_index) for n in la)
    # layers of one model get different supports (one generator, drawn in order)
    q0, q1 = la["model.layers.0.self_attn.q_proj"], la["model.layers.1.self_attn.q_proj"]
    assert not torch.equal(q0.sparse_index, q1.sparse_index)


def test_merge_gives_plain_linears_with_the_same_logits():
    model = _model()
    apply_sltrain(model, rank=4, sparsity=0.1, seed=0)
    with torch.no_grad():
        for layer in sltrain_layers(model).values():
            layer.lora_B.normal_(std=0.1)
    ids = torch.randint(0, 128, (2, 10))
    before = model(input_ids=ids).logits
    merged = merge_sltrain(model)
    assert len(merged) == 14 and not sltrain_layers(model)
    torch.testing.assert_close(model(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)
    with pytest.warns(NoEffectWarning):
        merge_sltrain(model)


def test_safetensors_round_trip_into_a_dense_model(tmp_path):
    model = _model()
    apply_sltrain(model, rank=4, sparsity=0.1, seed=3, alpha=16)
    with torch.no_grad():
        for layer in sltrain_layers(model).values():
            layer.lora_B.normal_(std=0.1)
    path = save_sltrain(model, tmp_path / "model.safetensors")
    fresh = _model(seed=5)  # dense, different init
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_sltrain(fresh, path)
    got = sltrain_layers(fresh)
    for name, layer in sltrain_layers(model).items():
        assert torch.equal(got[name].sparse_index, layer.sparse_index)
        assert got[name].alpha == 16 and got[name].sparse_index.dtype == torch.int32
    ids = torch.randint(0, 128, (2, 10))
    torch.testing.assert_close(
        fresh(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0
    )
    # state_dict round trip keeps the supports as well
    again = _model(seed=6)
    apply_sltrain(again, rank=4, sparsity=0.1, seed=99, alpha=16)
    again.load_state_dict(model.state_dict())
    assert all(
        torch.equal(sltrain_layers(again)[n].sparse_index, m.sparse_index)
        for n, m in sltrain_layers(model).items()
    )


def test_lowrank_baseline_is_sparsity_zero():
    model = _model()
    apply_sltrain(model, rank=4, sparsity=0.0)
    assert all(layer.nnz == 0 for layer in sltrain_layers(model).values())


def test_llama_60m_parameter_count_matches_the_paper():
    # andyjm3/SLTrain:configs/llama_60m.json (untied head); paper recipe r=128, delta=0.03.
    transformers = pytest.importorskip("transformers")
    config = tiny_llama_config(
        vocab_size=32000,
        hidden_size=512,
        num_layers=8,
        num_heads=8,
        intermediate_size=1376,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    full = sum(p.numel() for n, p in model.named_parameters() if "norm" not in n)
    shapes = [
        (m.in_features, m.out_features)
        for n, m in model.named_modules()
        if type(m) is nn.Linear and ("attn" in n or "mlp" in n)
    ]
    dense_linear = sum(i * o for i, o in shapes)
    full_state = training_state_bytes(model)["total"]
    apply_sltrain(model, rank=128, sparsity=0.03, alpha=32, seed=0)
    sl = sum(p.numel() for n, p in model.named_parameters() if "norm" not in n)
    closed = sum(sltrain_linear_params(i, o, 128, 0.03, bias=False) for i, o in shapes)
    linear = sum(p.numel() for n, p in model.named_parameters() if "proj" in n)
    assert (
        linear
        == closed
        == 8
        * (4 * (128 * 1024 + int(0.03 * 512 * 512)) + 3 * (128 * 1888 + int(0.03 * (512 * 1376))))
    )
    assert round(full / 1e6, 1) == 58.1 and round(sl / 1e6, 1) == 43.5
    assert round(closed / dense_linear, 2) == 0.43
    # parameters + gradients + Adam moments of the linear layers: under half of full-rank
    assert 4 * closed / (4 * dense_linear) < 0.5
    state = training_state_bytes(model)
    assert state["total"] < 0.8 * full_state  # embeddings stay dense: about 0.75x overall
    nnz = sum(m.nnz for m in sltrain_layers(model).values())
    assert 4 * nnz <= state["buffers"] < 4 * nnz + 4096  # int32 supports (+ rotary buffers)


def test_optimizer_state_bytes_counts_adam_moments():
    model = _model()
    apply_sltrain(model, rank=4, sparsity=0.1, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(
        input_ids=torch.randint(0, 128, (2, 8)), labels=torch.randint(0, 128, (2, 8))
    ).loss.backward()
    opt.step()
    n = count_parameters(model)
    n_tensors = len(list(model.parameters()))
    assert optimizer_state_bytes(opt) == 2 * 4 * n + 4 * n_tensors  # exp_avg, exp_avg_sq, step
    with pytest.raises(TypeError):
        optimizer_state_bytes(model)
    with pytest.raises(TypeError):
        training_state_bytes(opt)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(rank=0), ValueError, "rank"),
        (dict(rank=33), ValueError, "exceeds"),
        (dict(sparsity=1.0), ValueError, "sparsity"),
        (dict(sparsity=-0.01), ValueError, "sparsity"),
        (dict(alpha=-1), ValueError, "alpha"),
        (dict(targets=("nothing_here",)), ValueError, "match no"),
        (dict(targets=()), TypeError, "targets"),
        (dict(targets=(3,)), TypeError, "targets"),
        (dict(seed=-1), ValueError, "seed"),
    ],
)
def test_apply_bad_input(kwargs, error, match):
    model = _model()
    args = dict(rank=4, sparsity=0.1)
    args.update(kwargs)
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(error, match=match):
        apply_sltrain(model, **args)
    assert before == {n: type(m) for n, m in model.named_modules()}  # untouched
    with pytest.raises(TypeError):
        apply_sltrain("not a model", rank=4)


def test_save_load_bad_input(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="no SLTrainLinear"):
        save_sltrain(model, tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        load_sltrain(model, tmp_path / "missing.safetensors")
    from safetensors.torch import save_model

    save_model(model, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="metadata"):
        load_sltrain(model, tmp_path / "plain.safetensors")
    apply_sltrain(model, rank=4, sparsity=0.1, seed=0)
    path = save_sltrain(model, tmp_path / "ok.safetensors")
    other = tiny_llama(seed=0, vocab_size=128, hidden_size=32, num_layers=1, num_heads=4)
    with pytest.raises(ValueError, match="does not exist"):
        load_sltrain(other, path)
    with pytest.raises(TypeError):
        load_sltrain(None, path)
    with pytest.raises(TypeError):
        merge_sltrain(None)
    with pytest.raises(TypeError):
        sltrain_layers(None)
    meta = json.loads(
        __import__("safetensors").safe_open(str(path), "pt").metadata()["trainforge_sltrain"]
    )
    assert len(meta) == 14


def test_bf16_autocast_forward_and_backward():
    # Under autocast the materialised product is bf16 while the sparse values are fp32: the
    # scatter used to raise a dtype mismatch, and the backward mixed bf16 and fp32 GEMMs.
    torch.manual_seed(0)
    model = tiny_llama(num_layers=1, hidden_size=32, num_heads=4, vocab_size=64)
    apply_sltrain(model, rank=4, sparsity=0.1)
    ids = torch.randint(0, 64, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids, labels=ids).loss
    low.backward()
    low_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    full = model(ids, labels=ids).loss
    full.backward()
    assert abs(low.item() - full.item()) < 2e-2
    for g, p in zip(low_grads, model.parameters(), strict=True):
        assert g.dtype == p.dtype == torch.float32
        assert (g - p.grad).abs().max() <= 5e-2 * p.grad.abs().max() + 1e-6


def _trained_like(seed=0):
    model = _model()
    apply_sltrain(model, rank=4, sparsity=0.1, seed=seed, alpha=16)
    with torch.no_grad():
        for layer in sltrain_layers(model).values():
            layer.lora_B.normal_(std=0.1)
    return model


def test_save_pretrained_round_trip(tmp_path):
    # save_pretrained + from_pretrained used to give a dense model with random attn/MLP
    # weights, and load_sltrain refused the directory.
    model = _trained_like()
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(0, 128, (2, 10))
    want = model(input_ids=ids).logits
    rebuilt = sltrain_from_pretrained(tmp_path / "ckpt")
    assert set(sltrain_layers(rebuilt)) == set(sltrain_layers(model))
    torch.testing.assert_close(rebuilt(input_ids=ids).logits, want, atol=0, rtol=0)
    fresh = _model(seed=7)
    load_sltrain(fresh, tmp_path / "ckpt")
    torch.testing.assert_close(fresh(input_ids=ids).logits, want, atol=0, rtol=0)
    assert sltrain_layers(fresh)["model.layers.0.mlp.up_proj"].sparse_index.dtype == torch.int32
    # the rebuilt model saves again (config marker kept); merging drops the marker
    rebuilt.save_pretrained(tmp_path / "again")
    assert "trainforge_sltrain" in json.loads((tmp_path / "again" / "config.json").read_text())
    merge_sltrain(rebuilt)
    rebuilt.save_pretrained(tmp_path / "merged")
    assert "trainforge_sltrain" not in json.loads((tmp_path / "merged" / "config.json").read_text())


def test_trainer_checkpoint_loads(tmp_path):
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    class Ids(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            ids = torch.arange(10) * (i + 1) % 128
            return {"input_ids": ids, "labels": ids}

    model = _trained_like()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, save_steps=1,
        report_to=[], use_cpu=True, logging_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=Ids()).train()
    fresh = _model(seed=4)
    load_sltrain(fresh, tmp_path / "checkpoint-1")
    for (n, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_failed_load_leaves_the_model_unchanged(tmp_path):
    model = _trained_like()
    model.save_pretrained(tmp_path / "ckpt")
    wider = tiny_llama(seed=0, vocab_size=256, hidden_size=32, num_layers=2, num_heads=4)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match="unchanged"):
        load_sltrain(wider, tmp_path / "ckpt")  # embeddings do not fit: refused up front
    assert not sltrain_layers(wider)
    after = wider.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_from_pretrained_bad_input(tmp_path):
    with pytest.raises(TypeError):
        sltrain_from_pretrained(3)
    with pytest.raises(FileNotFoundError):
        sltrain_from_pretrained(tmp_path / "nowhere")
    _model().save_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match="not a model converted"):
        sltrain_from_pretrained(tmp_path / "dense")
    with pytest.raises(ValueError, match="not an SLTrain checkpoint"):
        load_sltrain(_model(), tmp_path / "dense")
    _trained_like().save_pretrained(tmp_path / "ok")
    with pytest.raises(TypeError, match="model_class"):
        sltrain_from_pretrained(tmp_path / "ok", model_class="llama")
    with pytest.raises(FileNotFoundError):
        load_sltrain(_model(), tmp_path)  # a directory without weights
