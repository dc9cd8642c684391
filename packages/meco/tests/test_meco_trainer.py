from __future__ import annotations

import pytest
import torch

from trainforge_meco import (
    MeCoCollator,
    MeCoDataset,
    MeCoFormatter,
    MeCoPhaseCallback,
    MeCoSchedule,
    meco_lr_lambda,
    pack_documents,
    split_pools,
)


def _rows(char_tok, seed: int):
    gen = torch.Generator().manual_seed(seed)
    fmt = MeCoFormatter(char_tok)
    docs = [
        (f"https://s{i % 4}.com", torch.randint(0, 200, (12,), generator=gen).tolist())
        for i in range(40)
    ]
    meta, cool = split_pools(docs, 0.25, seed=seed)
    meta_rows = pack_documents([fmt(ids, url) for url, ids in meta], 32, "pad", pad_id=258)
    cool_rows = pack_documents([fmt(ids) for _, ids in cool], 32, "pad", pad_id=258)
    return [meta_rows[i] for i in range(len(meta_rows))], [
        cool_rows[i] for i in range(len(cool_rows))
    ]


def test_hf_trainer_run_switches_at_ninety_percent_on_one_schedule(char_tok, tmp_path) -> None:
    pytest.importorskip("accelerate")  # transformers' Trainer needs it (our test group has it)
    from transformers import Trainer, TrainingArguments

    from trainforge_core.models import tiny_llama

    meta, cool = _rows(char_tok, 0)
    total = 10
    schedule = MeCoSchedule(total)
    dataset = MeCoDataset(meta, cool, schedule, examples_per_step=2)
    callback = MeCoPhaseCallback(schedule, dataset)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=total,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=1,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    model = tiny_llama(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=MeCoCollator(),
        callbacks=[callback],
    )
    trainer.train()
    assert callback.phase_log == [(0, "metadata"), (9, "cooldown")]
    assert callback.switch_step == schedule.cooldown_start == 9
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    # one cosine (1 warm-up step, floor 0.1) through the switch: no restart, no re-warm-up
    curve = meco_lr_lambda(total, warmup_ratio=0.1, min_lr_ratio=0.1)
    assert lrs == pytest.approx([1e-3 * curve(s) for s in range(total)], rel=1e-5)
    assert callback.lr_at_switch == pytest.approx(lrs[9], rel=1e-5)


def test_callback_rejects_a_mismatched_run_length(char_tok, tmp_path) -> None:
    from types import SimpleNamespace

    callback = MeCoPhaseCallback(MeCoSchedule(100))
    with pytest.raises(ValueError, match="max_steps=50 must equal"):
        callback.on_train_begin(SimpleNamespace(max_steps=50), None, None)
    with pytest.raises(TypeError, match="MeCoSchedule"):
        MeCoPhaseCallback(100)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MeCoDataset"):
        MeCoPhaseCallback(MeCoSchedule(10), dataset=[1, 2])  # type: ignore[arg-type]


def test_callback_detects_a_dataset_that_lags_the_step_count(char_tok) -> None:
    from types import SimpleNamespace

    meta, cool = _rows(char_tok, 1)
    schedule = MeCoSchedule(10)
    dataset = MeCoDataset(meta, cool, schedule, examples_per_step=1)
    it = iter(dataset)
    for _ in range(3):  # the dataset has only served 3 examples
        next(it)
    callback = MeCoPhaseCallback(schedule, dataset)
    with pytest.raises(RuntimeError, match="examples_per_step must equal"):
        callback.on_step_begin(None, SimpleNamespace(global_step=9), None)
