import math

import pytest
import torch

from trainforge_core.bench import median_time, peak_memory
from trainforge_core.data import kjv_lm_data
from trainforge_core.models import tiny_llama, tiny_llama_config
from trainforge_core.surgery import count_parameters
from trainforge_core.train import TrainConfig, evaluate_lm, lr_lambda, train_lm


def test_tiny_llama_is_reproducible_and_sized():
    a, b = (
        tiny_llama(seed=3, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2),
        tiny_llama(seed=3, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2),
    )
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    cfg = a.config
    assert cfg.intermediate_size == 96 and cfg.tie_word_embeddings
    # closed form: tied embedding + per layer (4 attn d*d + 3 mlp d*f + 2 norms) + final norm
    d, f, v, L = 32, 96, 300, 2
    assert count_parameters(a) == v * d + L * (4 * d * d + 3 * d * f + 2 * d) + d


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_size": 30, "num_heads": 4}, "divisible"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_kv_heads": 3}, "num_kv_heads"),
    ],
)
def test_bad_model_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_llama_config(**kwargs)


def test_training_lowers_held_out_loss():
    data = kjv_lm_data(2048)
    model = tiny_llama(vocab_size=data.vocab_size, hidden_size=32, num_layers=1, num_heads=2)
    start = evaluate_lm(model, data, seq_len=32, batch_size=8, max_batches=4)
    assert abs(start - math.log(data.vocab_size)) < 0.5  # an untrained model is near uniform
    seen = []
    cfg = TrainConfig(
        steps=30,
        batch_size=8,
        seq_len=32,
        eval_every=15,
        eval_batches=4,
        warmup_steps=3,
        progress=False,
    )
    result = train_lm(
        model,
        torch.optim.AdamW(model.parameters(), lr=1e-2),
        data,
        cfg,
        after_step=lambda step, m, opt, batch: seen.append(step),
    )
    assert seen == list(range(30)) and result.eval_steps == [15, 30]
    assert result.final_eval_loss < start - 1.0
    assert result.steps_to_reach(result.final_eval_loss) in (15, 30)
    assert result.median_step_time > 0


def test_lr_schedule_warms_up_and_decays():
    f = lr_lambda(TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert f(55) == pytest.approx(0.55)
    assert lr_lambda(TrainConfig(schedule="constant"))(77) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": -1}, "steps"),
        ({"warmup_steps": 500}, "warmup"),
        ({"schedule": "linear"}, "schedule"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"min_lr_ratio": 2.0}, "min_lr_ratio"),
    ],
)
def test_bad_train_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_train_rejects_non_optimizer():
    data = kjv_lm_data(2048)
    model = tiny_llama(vocab_size=data.vocab_size, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(TypeError, match="optimizer"):
        train_lm(model, "adam", data)


def test_bench_measures_time_and_memory():
    t = median_time(lambda: sum(range(1000)), warmup=1, repeats=5)
    assert 0 < t.p25 <= t.median <= t.p75
    assert 0.8 < peak_memory(lambda: torch.ones(25_000_000)) / 1e8 < 1.3
    with pytest.raises(ValueError):
        median_time(lambda: None, repeats=0)
    with pytest.raises(TypeError):
        peak_memory(3)
    with pytest.raises(ValueError, match="device"):
        peak_memory(lambda: None, device="meta")
