"""Techniques used together, as a user would combine them: each package stays independent,
so the combinations are tested here."""

from __future__ import annotations

import torch

from trainforge_core.data import kjv_lm_data
from trainforge_core.models import tiny_llama
from trainforge_core.train import TrainConfig, evaluate_lm, train_lm
from trainforge_gptq import GPTQConfig, quantize_model
from trainforge_gstack import grow_depth
from trainforge_sltrain import SLTrainLinear, apply_sltrain, merge_sltrain
from trainforge_sophia import SophiaG, maybe_update_hessian

SEQ, BATCH = 32, 8


def _small_model(data, layers=1):
    return tiny_llama(
        vocab_size=data.vocab_size, hidden_size=32, num_layers=layers, num_heads=2, seed=0
    )


def test_gptq_quantizes_a_gstack_grown_model():
    data = kjv_lm_data(2048)
    small = _small_model(data)
    train_lm(
        small,
        torch.optim.AdamW(small.parameters(), lr=1e-2),
        data,
        TrainConfig(
            steps=30, batch_size=BATCH, seq_len=SEQ, eval_every=30, eval_batches=2, progress=False
        ),
    )
    grown = grow_depth(small, factor=2, op="stack")
    assert grown.config.num_hidden_layers == 2
    before = evaluate_lm(grown, data, SEQ, BATCH, max_batches=2)
    calibration = data.sample_batch(16, SEQ, torch.Generator().manual_seed(1))
    _, report = quantize_model(
        grown, calibration, GPTQConfig(bits=4, group_size=32), progress=False
    )
    assert len(report.layers) == 2 * 7  # q, k, v, o, gate, up, down in both blocks
    after = evaluate_lm(grown, data, SEQ, BATCH, max_batches=2)
    assert after < before + 0.1  # 4-bit GPTQ keeps the grown model's held-out loss
    # the packed, grown model still decodes with its KV cache as it does without one
    prompt = data.eval[:8].unsqueeze(0)
    with torch.no_grad():
        cached = grown.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        plain = grown.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)


def test_sophia_trains_an_sltrain_model_and_merges_back():
    data = kjv_lm_data(2048)
    model = _small_model(data, layers=2)
    apply_sltrain(model, rank=4, sparsity=0.05, seed=0)
    layers = [m for m in model.modules() if isinstance(m, SLTrainLinear)]
    assert layers
    supports = [layer.sparse_index.clone() for layer in layers]
    optimizer = SophiaG(model.parameters(), lr=3e-3, rho=0.05, hessian_interval=5)
    generator = torch.Generator().manual_seed(0)

    def estimate(step, model, optimizer, batch):
        fresh = data.sample_batch(BATCH, SEQ, generator)
        maybe_update_hessian(optimizer, model, fresh)

    start = evaluate_lm(model, data, SEQ, BATCH, max_batches=2)
    result = train_lm(
        model,
        optimizer,
        data,
        TrainConfig(
            steps=25, batch_size=BATCH, seq_len=SEQ, eval_every=25, eval_batches=2, progress=False
        ),
        after_step=estimate,
    )
    assert result.final_eval_loss < start - 0.5
    assert optimizer.stats()["hessian_updates"] >= 4
    # the random support stays fixed during training
    assert all(torch.equal(s, m.sparse_index) for s, m in zip(supports, layers, strict=True))
    x = data.eval[:SEQ].unsqueeze(0)
    with torch.no_grad():
        logits = model(x).logits
        merge_sltrain(model)
        assert not any(isinstance(m, SLTrainLinear) for m in model.modules())
        torch.testing.assert_close(model(x).logits, logits, atol=1e-4, rtol=1e-4)
