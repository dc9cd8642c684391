"""The paper's parameter grouping for matrix optimisers.

Matrix optimisers (Muon, Scion) update the 2-D weights of the hidden layers; embeddings,
the output head, norms and biases go to AdamW (Signum for Scion) at a fraction of the matrix
learning rate (Levanter's ``MuonConfig.create_mask``: "Embedding" or "lm_head" in the path
-> adamw, Linear weights -> muon, everything else -> adamw).
Weight decay: 2-D parameters decay, 1-D ones (norms, biases) do not (the usual mask).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from trainforge_core.errors import NoEffectWarning

log = logging.getLogger(__name__)


@dataclass
class ParamGrouping:
    """Which parameter went where, by name (each parameter exactly once)."""

    matrix: list[str] = field(default_factory=list)
    adam_decay: list[str] = field(default_factory=list)
    adam_no_decay: list[str] = field(default_factory=list)
    matrix_params: list[nn.Parameter] = field(default_factory=list, repr=False)
    adam_decay_params: list[nn.Parameter] = field(default_factory=list, repr=False)
    adam_no_decay_params: list[nn.Parameter] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        return (
            f"matrix: {len(self.matrix)} tensors / {count(self.matrix_params):,} params; "
            f"adamw (decay): {len(self.adam_decay)} / {count(self.adam_decay_params):,}; "
            f"adamw (no decay): {len(self.adam_no_decay)} / {count(self.adam_no_decay_params):,}"
        )


def _embedding_and_head_ids(model: nn.Module) -> set[int]:
    ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out):
        head = get_out()
        if head is not None and getattr(head, "weight", None) is not None:
            ids.add(id(head.weight))
    return ids


def param_groups_for_matrix_opt(
    model: nn.Module, extra_adam_names: tuple[str, ...] = ("lm_head", "embed")
) -> ParamGrouping:
    """Split ``model``'s trainable parameters the paper's way (see the module docstring).

    A parameter goes to AdamW when it belongs to an ``nn.Embedding``, is the model's output
    embedding (``get_output_embeddings()``), or its name contains one of
    ``extra_adam_names``; otherwise 2-D parameters are matrix parameters. Tied weights are
    counted once. Warns with ``NoEffectWarning`` and raises nothing when no 2-D hidden
    weight exists (the caller decides: :func:`build_optimizer` raises).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(extra_adam_names, tuple) or not all(
        isinstance(n, str) for n in extra_adam_names
    ):
        raise TypeError(f"extra_adam_names must be a tuple of strings, got {extra_adam_names!r}")
    special = _embedding_and_head_ids(model)
    grouping = ParamGrouping()
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        is_special = id(p) in special or any(k in name for k in extra_adam_names)
        if p.ndim == 2 and not is_special:
            grouping.matrix.append(name)
            grouping.matrix_params.append(p)
        elif p.ndim >= 2:
            grouping.adam_decay.append(name)
            grouping.adam_decay_params.append(p)
        else:
            grouping.adam_no_decay.append(name)
            grouping.adam_no_decay_params.append(p)
    if not grouping.matrix:
        import warnings

        warnings.warn(
            f"{type(model).__name__} has no 2-D hidden weight for a matrix optimiser",
            NoEffectWarning,
            stacklevel=2,
        )
    log.info("param_groups_for_matrix_opt: %s", grouping.summary())
    return grouping


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """All trainable parameters: 2-D+ with ``weight_decay``, 1-D without (tied ones once)."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
