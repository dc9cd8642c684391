"""Lazy imports of optional packages, with an error that says what to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from trainforge_core.errors import MissingOptionalDependency


def require(module: str, *, extra: str, distribution: str = "trainforge-core") -> ModuleType:
    """Import ``module`` or raise :class:`MissingOptionalDependency` naming the extra.

    ``require("tokenizers", extra="text")`` tells the user to
    ``pip install 'trainforge-core[text]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingOptionalDependency(
            f"{module!r} is not installed; it is needed here. "
            f"Install it with: pip install '{distribution}[{extra}]'"
        ) from exc


def is_installed(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
