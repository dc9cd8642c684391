"""PELATrainer: a transformers Trainer that trains the compressed student with PELALoss."""

from __future__ import annotations

import copy

import pytest
import torch

from trainforge_pela import compress_linear_layers, low_rank_layers

transformers = pytest.importorskip("transformers")


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, 8), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def test_trainer_steps_the_student_with_the_pela_loss(tmp_path):
    from trainforge_pela.hf import PELATrainer

    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(cfg).eval()
    student = compress_linear_layers(copy.deepcopy(teacher), 2.0, skip=("classifier", "pooler"))
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    t_before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
    )
    trainer = PELATrainer(
        model=student,
        args=args,
        train_dataset=_Pairs(),
        teacher=teacher,
        pela_kwargs={"alpha": 1.0, "lam": 1.0},
    )
    trainer.train()
    assert set(trainer.last_pela_parts) == {"total", "task", "fd", "logit", "wpr"}
    assert trainer.last_pela_parts["fd"] > 0 and trainer.last_pela_parts["wpr"] > 0
    logged = [h for h in trainer.state.log_history if "pela_fd" in h]
    assert logged
    moved = [n for n, p in student.named_parameters() if not torch.equal(p, before[n])]
    assert any(".0.weight" in n for n in moved)  # the low-rank factors are trained
    assert all(torch.equal(p, t_before[n]) for n, p in teacher.named_parameters())
    assert len(low_rank_layers(student)) == 12
