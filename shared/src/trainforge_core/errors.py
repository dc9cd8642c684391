"""Exceptions and warnings shared by every trainforge package."""

from __future__ import annotations


class TrainforgeError(Exception):
    """Base class of trainforge's own errors."""


class UnknownTechniqueError(TrainforgeError, LookupError):
    """A slug that names no installed technique."""


class MissingOptionalDependency(TrainforgeError, ImportError):
    """An optional package is needed for this feature; the message names the extra."""


class NoEffectWarning(UserWarning):
    """A call that was asked to change something changed nothing (for example, surgery
    whose predicate matched no module)."""
