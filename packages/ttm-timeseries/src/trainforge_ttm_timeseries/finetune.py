"""The reference's few-shot fine-tuning recipe on ``transformers.Trainer``.

ibm-granite/granite-tsfm:notebooks/hfdemo/tinytimemixer/full_benchmarking/ttm_full_benchmarking.py
(few-shot block): backbone frozen (the decoder keeps its pretrained mode unless asked),
AdamW + OneCycleLR at the fine-tuning learning rate, evaluation on a validation split every
epoch, early stopping (patience 10, threshold 0) and the best checkpoint loaded at the end.

Because it is a plain ``Trainer``, it scales out like any other: launched with
``torchrun --nproc-per-node N script.py`` the Trainer wraps the model in DDP and shards the
batches; ``per_device_train_batch_size`` is then per process (global batch = N times it) and
the OneCycle schedule is sized from the global batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from trainforge_ttm_timeseries.modeling import TTMForPrediction


def _require_accelerate() -> None:
    try:
        import accelerate  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "fewshot_trainer needs transformers.Trainer, which needs accelerate: "
            "pip install 'trainforge-ttm-timeseries[trainer]'"
        ) from None


def time_split(dataset: Dataset, valid_fraction: float = 0.1) -> tuple[Subset, Subset]:
    """Split windows in time order: the first ``1 - valid_fraction`` for training, the last
    ``valid_fraction`` for validation (the reference splits train/valid by time, never at
    random). With overlapping windows, use separate datasets built from disjoint time ranges
    instead if the validation horizons must not overlap the training ones."""
    if not isinstance(dataset, Dataset) or not hasattr(dataset, "__len__"):
        raise TypeError(f"dataset must be a sized torch Dataset, got {type(dataset).__name__}")
    if isinstance(valid_fraction, bool) or not 0.0 < float(valid_fraction) < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction!r}")
    n = len(dataset)
    n_valid = max(1, round(n * float(valid_fraction)))
    if n - n_valid < 1:
        raise ValueError(f"{n} windows are too few to split off a validation set")
    return Subset(dataset, range(n - n_valid)), Subset(dataset, range(n - n_valid, n))


def fewshot_trainer(
    model: TTMForPrediction,
    train_dataset: Dataset,
    eval_dataset: Dataset,
    output_dir: str,
    *,
    learning_rate: float = 1e-3,
    num_train_epochs: float = 50,
    per_device_train_batch_size: int = 64,
    early_stopping_patience: int | None = 10,
    early_stopping_threshold: float = 0.0,
    freeze_backbone: bool = True,
    seed: int = 0,
    **training_args: Any,
):
    """A ``transformers.Trainer`` set up with the reference's few-shot recipe; call
    ``.train()`` on it (then ``.evaluate(test)`` or :func:`~trainforge_ttm_timeseries.
    pretraining.predict`).

    Defaults are the reference's (granite-tsfm ``ttm_full_benchmarking.py``): lr 1e-3 (it
    runs an LR finder when none is given; pass the one you chose), 50 epochs, batch 64,
    early stopping with patience 10 and threshold 0 on the validation loss, the best
    checkpoint restored at the end. The decoder is left in its mode; switch it first with
    :func:`~trainforge_ttm_timeseries.pretraining.finetune_recipe` (``decoder_mode=
    "mix_channel"``) to fine-tune with channel mixing. ``early_stopping_patience=None``
    evaluates every epoch without stopping early. Extra keyword arguments go to
    ``TrainingArguments`` (for instance ``max_steps``, ``dataloader_num_workers``).
    """
    if not isinstance(model, TTMForPrediction):
        raise TypeError(f"model must be a TTMForPrediction, got {type(model).__name__}")
    for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
        if not isinstance(ds, Dataset) or not hasattr(ds, "__len__"):
            raise TypeError(f"{name} must be a sized torch Dataset, got {type(ds).__name__}")
        if len(ds) == 0:
            raise ValueError(f"{name} is empty")
    if not isinstance(output_dir, str) or not output_dir:
        raise TypeError(f"output_dir must be a non-empty path string, got {output_dir!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if not num_train_epochs > 0:
        raise ValueError(f"num_train_epochs must be positive, got {num_train_epochs!r}")
    if (
        isinstance(per_device_train_batch_size, bool)
        or not isinstance(per_device_train_batch_size, int)
        or per_device_train_batch_size < 1
    ):
        raise ValueError(
            f"per_device_train_batch_size must be a positive int, got "
            f"{per_device_train_batch_size!r}"
        )
    if early_stopping_patience is not None and (
        not isinstance(early_stopping_patience, int) or early_stopping_patience < 1
    ):
        raise ValueError(
            f"early_stopping_patience must be a positive int or None, got "
            f"{early_stopping_patience!r}"
        )
    for key in ("optimizers", "callbacks"):
        if key in training_args:
            raise TypeError(f"{key} is set by the recipe; build the Trainer yourself to change it")
    _require_accelerate()
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    if freeze_backbone:
        model.freeze_backbone(True)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    defaults: dict[str, Any] = dict(
        output_dir=output_dir,
        learning_rate=learning_rate,
        num_train_epochs=num_train_epochs,
        per_device_train_batch_size=per_device_train_batch_size,
        per_device_eval_batch_size=per_device_train_batch_size,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to="none",
        seed=seed,
        # Every trainable parameter is used in each forward (the frozen backbone has no
        # gradients to reduce): no extra autograd traversal under DDP.
        ddp_find_unused_parameters=False,
        use_cpu=not torch.cuda.is_available(),
    )
    defaults.update(training_args)
    args = TrainingArguments(**defaults)
    # OneCycle over the run, sized from the global batch (every process steps once per
    # global batch under DDP; the reference sizes it from the one-process batch).
    global_batch = (
        args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    )
    if args.max_steps > 0:
        total = args.max_steps
    else:
        total = math.ceil(len(train_dataset) / global_batch) * math.ceil(args.num_train_epochs)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=total)
    callbacks = []
    if early_stopping_patience is not None:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=early_stopping_patience,
                early_stopping_threshold=early_stopping_threshold,
            )
        )
    return Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        callbacks=callbacks,
        optimizers=(optimizer, scheduler),
    )
