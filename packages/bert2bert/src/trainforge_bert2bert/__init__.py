"""trainforge-bert2bert: bert2BERT (Chen et al. 2021, arXiv:2110.07143).

Grow a pre-trained transformers model in width (function-preserving FPI or advanced
knowledge AKI initialisation) and depth (stacking), and pre-train it on in two stages.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_bert2bert.adapters import ADAPTERS, ArchAdapter, Role, adapter_for
from trainforge_bert2bert.expand import (
    GrowthReport,
    aki_tensor,
    bert2bert,
    expand_depth,
    expand_width,
    fpi_tensor,
)
from trainforge_bert2bert.plan import Dims, ExpansionPlan, depth_map, draw_map
from trainforge_bert2bert.two_stage import (
    TwoStageSubModelCallback,
    submodel_depths,
    train_submodel,
)

try:
    __version__ = version("trainforge-bert2bert")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "ADAPTERS",
    "ArchAdapter",
    "Dims",
    "ExpansionPlan",
    "GrowthReport",
    "Role",
    "TwoStageSubModelCallback",
    "__version__",
    "adapter_for",
    "aki_tensor",
    "bert2bert",
    "depth_map",
    "draw_map",
    "expand_depth",
    "expand_width",
    "fpi_tensor",
    "submodel_depths",
    "train_submodel",
]
