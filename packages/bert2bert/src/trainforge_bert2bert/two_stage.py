"""bert2BERT's two-stage pre-training (paper Sec. 4.4, Alg. 2) as a ``TrainerCallback``.

VERIFY: this part is described only in the paper (no public code implements it); the
sub-model set and the sampling rule below follow the paper's text as the spec reads it.

Stage 1 (the first ``stage1_steps`` optimizer steps): the sub-models are the bottom
``block, 2*block, ..., L_t`` layers of the grown model, sharing the embeddings and the head.
Each step samples one sub-model uniformly, runs only its layers and updates only its top
``block`` layers plus the head (the other parameters get no gradient, so the backward pass
is cheaper). Stage 2: the full model, untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from trainforge_bert2bert.adapters import adapter_for

log = logging.getLogger(__name__)


def submodel_depths(num_layers: int, block: int) -> list[int]:
    """Depths of the stage-1 sub-models: ``block, 2*block, ..., num_layers``."""
    for name, value in (("num_layers", num_layers), ("block", block)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if block > num_layers:
        raise ValueError(f"block ({block}) is larger than the model's {num_layers} layers")
    depths = list(range(block, num_layers, block))
    return [*depths, num_layers]


@contextmanager
def train_submodel(model: nn.Module, depth: int, block: int) -> Iterator[nn.Module]:
    """Inside the block, ``model`` runs only its bottom ``depth`` layers and only the top
    ``block`` of them plus the LM head (and final norm) require gradients. Everything is
    restored on exit (the layer list and every ``requires_grad`` flag)."""
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= len(layers):
        raise ValueError(f"depth must be an integer in [1, {len(layers)}], got {depth!r}")
    if not isinstance(block, int) or isinstance(block, bool) or not 1 <= block <= depth:
        raise ValueError(f"block must be an integer in [1, depth={depth}], got {block!r}")
    flags = {id(p): (p, p.requires_grad) for p in model.parameters()}
    trainable: set[int] = set()
    for layer in list(layers)[depth - block : depth]:
        trainable.update(id(p) for p in layer.parameters())
    for name in adapter.head_modules:
        trainable.update(id(p) for p in model.get_submodule(name).parameters())
    for p, _ in flags.values():
        p.requires_grad_(id(p) in trainable and flags[id(p)][1])
    adapter.set_layers(model, nn.ModuleList(list(layers)[:depth]))
    try:
        yield model
    finally:
        adapter.set_layers(model, layers)
        for p, flag in flags.values():
            p.requires_grad_(flag)


class TwoStageSubModelCallback(TrainerCallback):
    """Stage 1 of bert2BERT's two-stage pre-training for a ``transformers.Trainer``.

    ``stage1_steps``: optimizer steps of stage 1 (the paper's E_b; VERIFY, the paper tunes
    it per model). ``block``: layers per sub-model step, the paper's l_b (= the source
    model's depth, e.g. ``small.config.num_hidden_layers``). After stage 1 the callback does
    nothing (stage 2 trains the full model).
    """

    def __init__(self, stage1_steps: int, block: int, seed: int = 0) -> None:
        if not isinstance(stage1_steps, int) or isinstance(stage1_steps, bool) or stage1_steps < 0:
            raise ValueError(f"stage1_steps must be a non-negative integer, got {stage1_steps!r}")
        if not isinstance(block, int) or isinstance(block, bool) or block <= 0:
            raise ValueError(f"block must be a positive integer, got {block!r}")
        self.stage1_steps, self.block = stage1_steps, block
        self.generator = torch.Generator().manual_seed(seed)
        self._active: Any = None
        self.sampled: list[int] = []  # depth of the sub-model used at each stage-1 step

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any):
        if model is None or state.global_step >= self.stage1_steps:
            return
        self._exit()
        depths = submodel_depths(len(adapter_for(model).layers(model)), self.block)
        depth = depths[int(torch.randint(len(depths), (1,), generator=self.generator))]
        self.sampled.append(depth)
        self._active = train_submodel(model, depth, min(self.block, depth))
        self._active.__enter__()
        log.debug("stage 1 step %d: sub-model of %d layers", state.global_step, depth)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        self._exit()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        self._exit()

    def _exit(self) -> None:
        if self._active is not None:
            active, self._active = self._active, None
            active.__exit__(None, None, None)
