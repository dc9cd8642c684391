"""Grow from a ``torch.distributed.checkpoint`` (DCP) checkpoint of the small model.

Growth copies whole blocks, so it needs every parameter in full. A model sharded with FSDP2
(``fully_shard``) holds one shard per rank: save it with DCP, load the checkpoint into a
plain (unsharded) small model with :func:`load_for_growth` (DCP reshards on load, from any
number of ranks to one process or to every rank), grow that, then shard the grown model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainforge_gstack.depth import _refuse_wrapped


def load_for_growth(
    model: nn.Module, checkpoint_id: str | os.PathLike[str], *, key: str | None = None
) -> nn.Module:
    """Load a DCP checkpoint (saved from one or many ranks, sharded or not) into ``model``.

    Args:
        model: the small model, plain (not DDP / FSDP-wrapped), built from the same config
            as the checkpointed one; its tensors are overwritten in place.
        checkpoint_id: the directory ``torch.distributed.checkpoint.save`` wrote.
        key: where the model's state dict sits in the saved dict, for checkpoints saved as
            ``{"model": ..., "optim": ...}`` (then ``key="model"``); None when the model's
            state dict was saved directly.

    Returns ``model``, ready for :func:`~trainforge_gstack.grow_depth`. Works in a single
    process and inside an initialised process group (every rank then loads the full model).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    model = _refuse_wrapped(model)
    if not isinstance(checkpoint_id, str | os.PathLike):
        raise TypeError(f"checkpoint_id must be a path, got {type(checkpoint_id).__name__}")
    path = Path(checkpoint_id)
    if not (path / ".metadata").is_file():
        raise ValueError(
            f"checkpoint_id={str(path)!r} is not a torch.distributed.checkpoint directory "
            "(no .metadata file); save the small model with dcp.save first"
        )
    if key is not None and (not isinstance(key, str) or not key):
        raise TypeError(f"key must be None or a non-empty string, got {key!r}")
    state = model.state_dict()
    target: dict[str, Any] = state if key is None else {key: state}
    try:
        dcp.load(target, checkpoint_id=str(path))
    except (Exception, CheckpointException) as exc:  # DCP's error names the keys; add the fix
        raise ValueError(
            f"could not load {str(path)!r} into {type(model).__name__}: {exc}. The model "
            "must be built from the checkpointed model's config"
            + ("" if key is not None else "; pass key='model' if it was saved as {'model': ...}")
        ) from exc
    with torch.no_grad():
        model.load_state_dict(state)
    return model
