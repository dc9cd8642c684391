"""Stage-1 sub-model training: only the sampled top block and the head get gradients."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from trainforge_bert2bert import TwoStageSubModelCallback, submodel_depths, train_submodel

sys.path.insert(0, str(Path(__file__).parent))
from bert2bert_tiny import ids, model


def test_submodel_depths():
    assert submodel_depths(6, 2) == [2, 4, 6]
    assert submodel_depths(5, 2) == [2, 4, 5]
    assert submodel_depths(3, 3) == [3]


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_gradients_outside_sampled_block_are_none(arch):
    big = model(arch, 32, 4, 64, 6).train()
    layers_path = {"bert": "bert.encoder.layer", "gpt2": "transformer.h", "llama": "model.layers"}
    x = ids()
    with train_submodel(big, depth=4, block=2) as sub:
        assert len(sub.get_submodule(layers_path[arch])) == 4
        out = sub(input_ids=x, labels=x)
        out.loss.backward()
    layers = big.get_submodule(layers_path[arch])
    assert len(layers) == 6  # restored
    for i, layer in enumerate(layers):
        for name, p in layer.named_parameters():
            if i in (2, 3):
                assert p.grad is not None and p.grad.abs().sum() > 0, (i, name)
            else:
                assert p.grad is None, (i, name)
    head = {"bert": "cls.predictions.transform", "gpt2": "transformer.ln_f", "llama": "model.norm"}
    assert all(p.grad is not None for p in big.get_submodule(head[arch]).parameters())
    assert all(p.requires_grad for p in big.parameters())  # flags restored


def test_submodel_forward_equals_truncated_model():
    """The sub-model of depth d is exactly the bottom d layers + the shared head."""

    big = model("gpt2", 32, 4, 64, 4)
    bottom = model("gpt2", 32, 4, 64, 2)
    bottom.load_state_dict(
        {
            k: v
            for k, v in big.state_dict().items()
            if not k.startswith(("transformer.h.2", "transformer.h.3"))
        }
    )
    x = ids()
    with torch.no_grad(), train_submodel(big, 2, 1):
        got = big(input_ids=x).logits
    torch.testing.assert_close(got, bottom(input_ids=x).logits)


def test_callback_samples_in_stage1_only_and_restores():
    big = model("bert", 32, 4, 64, 4).train()
    cb = TwoStageSubModelCallback(stage1_steps=3, block=2, seed=0)
    opt = torch.optim.AdamW(big.parameters(), lr=1e-3)
    x = ids()
    before = {n: p.detach().clone() for n, p in big.named_parameters()}
    for step in range(5):
        state = SimpleNamespace(global_step=step)
        cb.on_step_begin(None, state, None, model=big)
        n_layers = len(big.bert.encoder.layer)
        assert n_layers == (cb.sampled[-1] if step < 3 else 4)
        if step == 0:
            trained = set(range(cb.sampled[0] - 2, cb.sampled[0]))
        big(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        cb.on_step_end(None, state, None, model=big)
        assert len(big.bert.encoder.layer) == 4
        if step == 0:
            for i in range(4):
                p = big.bert.encoder.layer[i].output.dense.weight
                moved = not torch.equal(p, before[f"bert.encoder.layer.{i}.output.dense.weight"])
                assert moved == (i in trained), (i, cb.sampled)
            emb = big.bert.embeddings.position_embeddings.weight
            assert torch.equal(emb, before["bert.embeddings.position_embeddings.weight"])
    assert len(cb.sampled) == 3 and set(cb.sampled) <= {2, 4}


def test_callback_with_trainer(tmp_path):
    """Runs inside transformers.Trainer (stage 1 then stage 2) without error."""
    from transformers import Trainer, TrainingArguments

    big = model("bert", 32, 4, 64, 4).train()
    data = [{"input_ids": ids(1, 12, seed=s)[0], "labels": ids(1, 12, seed=s)[0]} for s in range(8)]
    cb = TwoStageSubModelCallback(stage1_steps=2, block=2)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=big, args=args, train_dataset=data, callbacks=[cb]).train()
    assert len(cb.sampled) == 2 and len(big.bert.encoder.layer) == 4
