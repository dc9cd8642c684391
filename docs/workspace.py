"""The workspace as the documentation sees it: its members and each one's public API."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def members() -> dict[str, Path]:
    """Distribution name -> folder, for every workspace member (as the noxfile finds them)."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = {}
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(ROOT.glob(pattern)):
            if (folder / "pyproject.toml").exists():
                name = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]
                found[name] = folder
    return found


def public_api(module_name: str) -> list[tuple[str, str]]:
    """(public name, documented identifier) for each name in the module's ``__all__``.

    Classes and functions are documented where they are defined: a name that a package
    loads lazily (PEP 562) is invisible to static analysis at the package path.
    """
    module = importlib.import_module(module_name)
    api = []
    for name in getattr(module, "__all__", []):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        home = getattr(obj, "__module__", None) if callable(obj) else None
        api.append((name, f"{home}.{obj.__qualname__}" if home else f"{module_name}.{name}"))
    return api
