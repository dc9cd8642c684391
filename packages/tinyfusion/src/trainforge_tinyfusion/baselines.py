"""The baselines TinyFusion compares with.

* :func:`importance_pruning`: drop the layers whose removal raises the calibration loss least
  (the loss-based importance criterion the paper contrasts with learned recoverability).
* :func:`bi_score_pruning`: ShortGPT's Block Influence, as ``VainF/TinyFusion:prune_by_score.py``
  (cosine similarity of a block's input and output; the most similar blocks are removed; the
  last block is never removed).
* :func:`bksdm_indices`: the BK-SDM "oracle" pattern of the reference README (first half as
  encoder keeps the first layer of every group, second half as decoder keeps the last), to be
  applied with :func:`~trainforge_tinyfusion.layouts.prune_layers` (``prune_by_index.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainforge_tinyfusion.layouts import find_blocks, prune_layers
from trainforge_tinyfusion.search import LossFn, PruningResult, _check_loss_fn, _scalar_loss

logger = logging.getLogger(__name__)


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
    if not isinstance(x, torch.Tensor):
        raise TypeError("a block was called without a tensor as its first argument")
    return x


@contextlib.contextmanager
def skipped_layers(
    model: nn.Module, skip: Sequence[int], *, blocks: str | None = None
) -> Iterator[None]:
    """Inside the context, the blocks ``skip`` of ``model`` return their input (identity)."""
    _, stack = find_blocks(model, blocks)
    bad = [i for i in skip if not isinstance(i, int) or not 0 <= i < len(stack)]
    if bad:
        raise ValueError(f"skip={list(skip)} has indices outside [0, {len(stack)})")
    saved: dict[int, torch.Tensor] = {}
    handles = []
    for j in skip:

        def pre(module: nn.Module, args: tuple, kwargs: dict, j: int = j) -> None:
            saved[j] = _first_tensor(args, kwargs)

        def post(module: nn.Module, args: tuple, output: Any, j: int = j) -> Any:
            x = saved.pop(j)
            return (x, *output[1:]) if isinstance(output, tuple) else x

        handles.append(stack[j].register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(stack[j].register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _check_num_keep(num_keep: Any, depth: int) -> int:
    if isinstance(num_keep, bool) or not isinstance(num_keep, int) or not 1 <= num_keep < depth:
        raise ValueError(
            f"num_keep must be an int in [1, {depth - 1}] for a {depth}-layer stack, "
            f"got {num_keep!r}"
        )
    return num_keep


def _take(data: Iterable[Any], max_batches: int) -> list[Any]:
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise TypeError(f"data must be an iterable of batches, got {type(data).__name__}")
    if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches <= 0:
        raise ValueError(f"max_batches must be a positive int, got {max_batches!r}")
    out = []
    for batch in data:
        out.append(batch)
        if len(out) >= max_batches:
            break
    if not out:
        raise ValueError("data yielded no batches")
    return out


@torch.no_grad()
def _mean_loss(model: nn.Module, batches: list[Any], loss_fn: LossFn, seed: int) -> float:
    # The same seed for every evaluation, so stochastic losses (diffusion: random t and noise)
    # see the same draws whichever layer is removed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(sum(float(_scalar_loss(loss_fn(model, b))) for b in batches) / len(batches))


def importance_pruning(
    model: nn.Module,
    data: Iterable[Any],
    loss_fn: LossFn,
    num_keep: int,
    *,
    blocks: str | None = None,
    max_batches: int = 8,
    seed: int = 0,
) -> PruningResult:
    """Keep the ``num_keep`` layers whose removal (one at a time) raises ``loss_fn`` most.

    ``scores[j]`` = loss with block j replaced by the identity minus the full model's loss,
    averaged over the first ``max_batches`` batches of ``data`` with a fixed random seed.
    """
    _check_loss_fn(loss_fn)
    path, stack = find_blocks(model, blocks)
    depth = len(stack)
    _check_num_keep(num_keep, depth)
    batches = _take(data, max_batches)
    was_training = model.training
    model.eval()
    try:
        base = _mean_loss(model, batches, loss_fn, seed)
        scores = []
        for j in range(depth):
            with skipped_layers(model, [j], blocks=path):
                scores.append(_mean_loss(model, batches, loss_fn, seed) - base)
    finally:
        model.train(was_training)
    order = sorted(range(depth), key=lambda j: scores[j], reverse=True)
    kept = sorted(order[:num_keep])
    logger.info("importance_pruning: kept %s (loss increase per removed layer %s)", kept, scores)
    return PruningResult(
        kept, prune_layers(model, kept, blocks=path), "importance (loss)", depth, scores=scores
    )


def bi_score_pruning(
    model: nn.Module,
    data: Iterable[Any],
    loss_fn: LossFn,
    num_keep: int,
    *,
    blocks: str | None = None,
    max_batches: int = 8,
    seed: int = 0,
) -> PruningResult:
    """ShortGPT's Block Influence (``VainF/TinyFusion:prune_by_score.py``): the score of a block
    is the mean cosine similarity between its input and output hidden states (over tokens and
    samples); the ``depth - num_keep`` most similar blocks are removed, the last block never.

    ``loss_fn`` only drives forward passes here; its value is ignored.
    """
    _check_loss_fn(loss_fn)
    path, stack = find_blocks(model, blocks)
    depth = len(stack)
    _check_num_keep(num_keep, depth)
    batches = _take(data, max_batches)
    sims: list[list[float]] = [[] for _ in range(depth)]
    inputs: dict[int, torch.Tensor] = {}
    handles = []
    for j, blk in enumerate(stack):

        def pre(module: nn.Module, args: tuple, kwargs: dict, j: int = j) -> None:
            inputs[j] = _first_tensor(args, kwargs)

        def post(module: nn.Module, args: tuple, output: Any, j: int = j) -> None:
            out = output[0] if isinstance(output, tuple) else output
            sims[j].append(
                float(F.cosine_similarity(out.float(), inputs.pop(j).float(), dim=-1).mean())
            )

        handles.append(blk.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(blk.register_forward_hook(post))
    was_training = model.training
    model.eval()
    try:
        _mean_loss(model, batches, loss_fn, seed)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    scores = [sum(s) / len(s) for s in sims]
    # prune_by_score.py: topk(largest=True) over layer_scores[:-1] are removed.
    removable = sorted(range(depth - 1), key=lambda j: scores[j], reverse=True)
    removed = set(removable[: depth - num_keep])
    kept = [j for j in range(depth) if j not in removed]
    logger.info("bi_score_pruning: kept %s (cosine in/out %s)", kept, scores)
    return PruningResult(
        kept, prune_layers(model, kept, blocks=path), "BI score (ShortGPT)", depth, scores=scores
    )


def bksdm_indices(depth: int, num_keep: int) -> list[int]:
    """The reference README's BK-SDM oracle: split the stack into encoder (first half) and
    decoder (second half) and groups of ``depth // num_keep`` layers; keep the first layer of
    each encoder group and the last of each decoder group. ``bksdm_indices(28, 14)`` is
    ``[0, 2, ..., 12, 15, 17, ..., 27]`` as in ``VainF/TinyFusion:README.md``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth <= 1:
        raise ValueError(f"depth must be an int > 1, got {depth!r}")
    _check_num_keep(num_keep, depth)
    if depth % num_keep:
        raise ValueError(f"num_keep={num_keep} must divide depth={depth}")
    size = depth // num_keep
    kept = []
    for g in range(num_keep):
        start = g * size
        kept.append(start if start < depth // 2 else start + size - 1)
    return kept
