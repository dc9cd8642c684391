"""trainforge-core: the shared base of every trainforge technique package."""

from importlib.metadata import PackageNotFoundError, version

from trainforge_core.errors import (
    MissingOptionalDependency,
    NoEffectWarning,
    TrainforgeError,
    UnknownTechniqueError,
)
from trainforge_core.registry import available_techniques, find_technique, get_technique
from trainforge_core.report import Curve, DemoReport, MetricRow
from trainforge_core.technique import Paper, Technique, TechniqueInfo

try:
    __version__ = version("trainforge-core")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

# Names whose modules import torch load on first use, so `trainforge list` and `info`
# (which import this package) start without torch.
_LAZY = {
    "Replacement": "trainforge_core.surgery",
    "count_parameters": "trainforge_core.surgery",
    "replace_modules": "trainforge_core.surgery",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainforge_core' has no attribute {name!r}")


__all__ = [
    "Curve",
    "DemoReport",
    "MetricRow",
    "MissingOptionalDependency",
    "NoEffectWarning",
    "Paper",
    "Replacement",
    "Technique",
    "TechniqueInfo",
    "TrainforgeError",
    "UnknownTechniqueError",
    "__version__",
    "available_techniques",
    "count_parameters",
    "find_technique",
    "get_technique",
    "replace_modules",
]
