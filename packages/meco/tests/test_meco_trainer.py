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


class _RecordingCollator(MeCoCollator):
    """Records, per batch, whether each row carries metadata (starts with BOS "URL: ")."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[bool]] = []

    def __call__(self, features):
        self.batches.append([list(f["input_ids"][1:6]) == list(b"URL: ") for f in features])
        return super().__call__(features)


def _trainer(dataset, callback, tmp_path, total, batch=2, accumulation=1, collator=None):
    from transformers import Trainer, TrainingArguments

    from trainforge_core.models import tiny_llama

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=total,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
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
    return Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator or MeCoCollator(),
        callbacks=[callback] if callback is not None else [],
    )


def test_hf_trainer_run_switches_at_ninety_percent_on_one_schedule(char_tok, tmp_path) -> None:
    pytest.importorskip("accelerate")  # transformers' Trainer needs it (our test group has it)
    meta, cool = _rows(char_tok, 0)
    total = 10
    schedule = MeCoSchedule(total)
    dataset = MeCoDataset(meta, cool, schedule, examples_per_step=2)
    callback = MeCoPhaseCallback(schedule, dataset)
    collator = _RecordingCollator()
    trainer = _trainer(dataset, callback, tmp_path, total, collator=collator)
    trainer.train()
    # the data the model saw: metadata rows for steps 0-8, plain cooldown rows at step 9
    assert collator.batches == [[True, True]] * 9 + [[False, False]]
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
    # ... and a dataset that runs ahead (cooldown data during the metadata phase)
    for _ in range(6):
        next(it)  # serving its step 8
    with pytest.raises(RuntimeError, match="disagree"):
        callback.on_step_begin(None, SimpleNamespace(global_step=4), None)
    callback.on_step_begin(None, SimpleNamespace(global_step=8), None)  # in step: fine


@pytest.mark.parametrize("batch,accumulation", [(4, 1), (2, 2), (1, 1)])
def test_trainer_refuses_examples_per_step_that_is_not_the_global_batch(
    char_tok, tmp_path, batch, accumulation
) -> None:
    """examples_per_step=2 with 4 (or 2 x 2, or 1) examples per optimizer step would move the
    cooldown data to another step than the recorded switch: refused before any step."""
    pytest.importorskip("accelerate")
    meta, cool = _rows(char_tok, 2)
    schedule = MeCoSchedule(10)
    dataset = MeCoDataset(meta, cool, schedule, examples_per_step=2)
    callback = MeCoPhaseCallback(schedule, dataset)
    trainer = _trainer(dataset, callback, tmp_path, 10, batch, accumulation)
    with pytest.raises(ValueError, match=r"examples_per_step=2\) must equal"):
        trainer.train()
    assert callback.phase_log == [] and dataset.examples_served == 0


def test_callback_finds_the_trainers_dataset_and_checks_it(char_tok, tmp_path) -> None:
    pytest.importorskip("accelerate")
    meta, cool = _rows(char_tok, 3)
    schedule = MeCoSchedule(10)
    dataset = MeCoDataset(meta, cool, schedule, examples_per_step=1)
    trainer = _trainer(dataset, MeCoPhaseCallback(schedule), tmp_path, 10, batch=2)
    with pytest.raises(ValueError, match="must equal"):
        trainer.train()


def test_callback_warns_when_it_cannot_see_the_data(char_tok, tmp_path) -> None:
    from types import SimpleNamespace

    callback = MeCoPhaseCallback(MeCoSchedule(10))
    args = SimpleNamespace(
        max_steps=10, per_device_train_batch_size=2, gradient_accumulation_steps=1, world_size=1
    )
    with pytest.warns(UserWarning, match="cannot see a MeCoDataset"):
        callback.on_train_begin(args, None, None, train_dataloader=[1, 2])
    meta, cool = _rows(char_tok, 4)
    with pytest.raises(ValueError, match="use one MeCoSchedule"):
        MeCoPhaseCallback(MeCoSchedule(10), MeCoDataset(meta, cool, MeCoSchedule(20)))
