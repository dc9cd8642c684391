"""SophiaG inside a transformers.Trainer through SophiaCallback."""

from __future__ import annotations

import pytest
import torch

from trainforge_sophia import SophiaG, decay_groups
from trainforge_sophia.hf import SophiaCallback


class _Windows(torch.utils.data.Dataset):
    def __init__(self, n=64, seq=12, vocab=40, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, vocab, (n, seq), generator=gen)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def test_trainer_runs_sophiag_with_gnb_estimates(tmp_path):
    transformers = pytest.importorskip("transformers")
    from trainforge_core.models import tiny_llama

    model = tiny_llama(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2,
                       max_position_embeddings=16)  # fmt: skip
    opt = SophiaG(decay_groups(model, 0.2), lr=1e-3, hessian_interval=3)
    callback = SophiaCallback(seed=0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=7, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, logging_steps=3, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, lr_scheduler_type="constant",
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Windows(),
                                   optimizers=(opt, None), callbacks=[callback])  # fmt: skip
    trainer.train()
    assert callback.estimates == 2  # after steps 3 and 6
    assert opt.param_groups[0]["hessian_updates"] == 2
    # bs recorded by the estimate: 2 micro-batches x 4 rows x 11 shifted predictions
    assert opt.param_groups[0]["n_predictions"] == 2 * 4 * 11
    logged = [row for row in trainer.state.log_history if "sophia/win_rate" in row]
    assert logged and 0.0 <= logged[-1]["sophia/win_rate"] <= 1.0


def test_callback_bad_input():
    with pytest.raises(ValueError, match="grad_clip"):
        SophiaCallback(grad_clip=-1.0)
    with pytest.raises(TypeError, match="hessian_data"):
        SophiaCallback(hessian_data=3)
    with pytest.raises(ValueError, match="seed"):
        SophiaCallback(seed=-1)


def _resume_trainer(out, hessian_data):
    transformers = pytest.importorskip("transformers")
    from trainforge_core.models import tiny_llama

    torch.manual_seed(0)
    model = tiny_llama(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2,
                       max_position_embeddings=16)  # fmt: skip
    opt = SophiaG(decay_groups(model, 0.2), lr=1e-2, hessian_interval=2)
    callback = SophiaCallback(hessian_data=hessian_data, seed=3)
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=10, per_device_train_batch_size=4, save_strategy="steps",
        save_steps=4, report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=100,
        lr_scheduler_type="constant",
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Windows(n=24),
                                   optimizers=(opt, None), callbacks=[callback])  # fmt: skip
    return trainer, model, callback


@pytest.mark.parametrize("own_data", [False, True], ids=["train_loader", "hessian_data"])
def test_resume_with_callback_is_exact(tmp_path, own_data):
    """Issue #14.4: 10 steps in one go == 4 steps, checkpoint, resume to 10 (estimates after
    steps 2, 4, ..., 10; the estimate data wraps around within the run)."""

    def data():  # a shuffled loader: its iteration draws from the global RNG
        if not own_data:
            return None
        return torch.utils.data.DataLoader(_Windows(n=12, seed=1), batch_size=4, shuffle=True)

    trainer, full, cb = _resume_trainer(tmp_path, data())
    trainer.train()
    assert cb.estimates == 5
    trainer, resumed, cb2 = _resume_trainer(tmp_path, data())
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert cb2.estimates == 5
    for (name, a), b in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name
