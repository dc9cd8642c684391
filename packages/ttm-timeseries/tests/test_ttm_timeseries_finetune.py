"""The few-shot recipe on transformers.Trainer: the reference's settings, early stopping on
the validation split restores the best epoch, and bad input is refused."""

from __future__ import annotations

import pytest
import torch
from transformers import EarlyStoppingCallback

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction
from trainforge_ttm_timeseries.finetune import fewshot_trainer, time_split
from trainforge_ttm_timeseries.pretraining import ForecastWindows


def _setup():
    torch.manual_seed(0)
    cfg = TTMConfig(
        context_length=32, patch_length=4, prediction_length=8, d_model=8, num_layers=1,
        decoder_num_layers=1, dropout=0.0, head_dropout=0.0,
    )  # fmt: skip
    series = torch.randn(200, 2, generator=torch.Generator().manual_seed(1)).cumsum(0).numpy()
    train = ForecastWindows(series[:145], 32, 8, stride=7)
    valid = ForecastWindows(series[120:], 32, 8, stride=8)
    return TTMForPrediction(cfg), train, valid


def test_recipe_settings_are_the_references(tmp_path):
    model, train, valid = _setup()
    trainer = fewshot_trainer(model, train, valid, str(tmp_path), num_train_epochs=3,
                              per_device_train_batch_size=8)  # fmt: skip
    args = trainer.args
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end and args.ddp_find_unused_parameters is False
    assert args.metric_for_best_model == "eval_loss" and not args.greater_is_better
    stop = [c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)]
    assert stop and stop[0].early_stopping_patience == 10
    assert stop[0].early_stopping_threshold == 0.0
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert model.config.decoder_mode == "common_channel"  # not forced to mix_channel
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    assert isinstance(opt, torch.optim.AdamW)
    assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR)
    assert sched.total_steps == 3 * 2  # 16 windows / batch 8, three epochs


def test_early_stopping_restores_the_best_epoch(tmp_path):
    model, train, valid = _setup()
    # A far too large learning rate: the validation loss gets worse after some epoch, the
    # run stops `patience` epochs later and the best epoch's weights come back.
    trainer = fewshot_trainer(
        model, train, valid, str(tmp_path), learning_rate=3.0, num_train_epochs=20,
        per_device_train_batch_size=8, early_stopping_patience=2, disable_tqdm=True,
    )  # fmt: skip
    trainer.train()
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    best = min(range(len(evals)), key=evals.__getitem__)
    assert len(evals) < 20 and len(evals) == best + 1 + 2, evals
    restored = trainer.evaluate()["eval_loss"]
    assert restored == pytest.approx(evals[best], rel=1e-6)


def test_time_split_and_bad_input(tmp_path):
    _, train, valid = _setup()
    fit, held = time_split(train, 0.25)
    assert list(fit.indices) == list(range(12)) and list(held.indices) == [12, 13, 14, 15]
    with pytest.raises(ValueError, match="valid_fraction"):
        time_split(train, 1.0)
    with pytest.raises(TypeError, match="sized torch Dataset"):
        time_split([1, 2, 3], 0.5)  # type: ignore[arg-type]
    model, _, _ = _setup()
    out = str(tmp_path)
    with pytest.raises(TypeError, match="TTMForPrediction"):
        fewshot_trainer(torch.nn.Linear(1, 1), train, valid, out)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="eval_dataset"):
        fewshot_trainer(model, train, None, out)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="learning_rate"):
        fewshot_trainer(model, train, valid, out, learning_rate=0)
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        fewshot_trainer(model, train, valid, out, per_device_train_batch_size=0)
    with pytest.raises(ValueError, match="early_stopping_patience"):
        fewshot_trainer(model, train, valid, out, early_stopping_patience=0)
    with pytest.raises(TypeError, match="optimizers is set by the recipe"):
        fewshot_trainer(model, train, valid, out, optimizers=(None, None))
    with pytest.raises(TypeError, match="output_dir"):
        fewshot_trainer(model, train, valid, "")
