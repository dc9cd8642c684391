"""trainforge-core: the shared base of every trainforge technique package."""

from importlib.metadata import PackageNotFoundError, version

from trainforge_core.errors import (
    MissingOptionalDependency,
    NoEffectWarning,
    TrainforgeError,
    UnknownTechniqueError,
)
from trainforge_core.registry import available_techniques, get_technique
from trainforge_core.report import Curve, DemoReport, MetricRow
from trainforge_core.surgery import Replacement, count_parameters, replace_modules
from trainforge_core.technique import Paper, Technique

try:
    __version__ = version("trainforge-core")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "Curve",
    "DemoReport",
    "MetricRow",
    "MissingOptionalDependency",
    "NoEffectWarning",
    "Paper",
    "Replacement",
    "Technique",
    "TrainforgeError",
    "UnknownTechniqueError",
    "__version__",
    "available_techniques",
    "count_parameters",
    "get_technique",
    "replace_modules",
]
