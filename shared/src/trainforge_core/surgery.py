"""Model surgery: swap modules that match a predicate, and say what changed."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from trainforge_core.errors import NoEffectWarning

Predicate = Callable[[str, nn.Module], bool]
Factory = Callable[[str, nn.Module], nn.Module]


@dataclass(frozen=True)
class Replacement:
    """One module swapped by :func:`replace_modules`."""

    name: str
    old: str
    new: str


def replace_modules(
    model: nn.Module,
    predicate: Predicate,
    factory: Factory,
    *,
    what: str = "replace_modules",
) -> list[Replacement]:
    """Replace every submodule ``m`` (at qualified name ``name``) for which
    ``predicate(name, m)`` holds with ``factory(name, m)``, in place.

    Matches are collected before anything changes, so a factory that returns a module
    containing the old one (a wrapper) is not visited again. Returns the replacements;
    warns :class:`NoEffectWarning` when nothing matched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(predicate) or not callable(factory):
        raise TypeError("predicate and factory must be callables taking (name, module)")
    matches = [(n, m) for n, m in model.named_modules() if n and predicate(n, m)]
    done: list[Replacement] = []
    for name, old in matches:
        new = factory(name, old)
        if not isinstance(new, nn.Module):
            raise TypeError(f"factory returned {type(new).__name__} for {name!r}, not an nn.Module")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
        done.append(Replacement(name, type(old).__name__, type(new).__name__))
    if not done:
        warnings.warn(
            f"{what}: no module matched; the model is unchanged", NoEffectWarning, stacklevel=2
        )
    return done


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (shared / tied tensors counted once)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
