"""trainforge-w2pgnn: When to Pre-Train Graph Neural Networks? From Data Generation Perspective!
(arXiv:2303.16458).

Graphon bases fitted on pre-training graphs, and the pre-training feasibility of a downstream
graph set: minus the Gromov-Wasserstein distance between its graphon and the closest convex
combination of the basis.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_w2pgnn.ego import EgoNetworks
from trainforge_w2pgnn.feasibility import (
    SPLITS,
    FeasibilityConfig,
    FeasibilityResult,
    GraphonBasis,
    feasibility,
    fit_mixture,
)
from trainforge_w2pgnn.graphon import (
    METHODS,
    BarycenterConfig,
    Graphon,
    align_graphs,
    estimate_graphon,
    graph_adjacency,
    resize_graphon,
    sample_graphs,
    synthetic_graphon,
)
from trainforge_w2pgnn.gw import entropic_gw, gw_distance
from trainforge_w2pgnn.topo import TOPO_NAMES, topo_features

try:
    __version__ = version("trainforge-w2pgnn")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "METHODS",
    "SPLITS",
    "TOPO_NAMES",
    "BarycenterConfig",
    "EgoNetworks",
    "FeasibilityConfig",
    "FeasibilityResult",
    "Graphon",
    "GraphonBasis",
    "__version__",
    "align_graphs",
    "entropic_gw",
    "estimate_graphon",
    "feasibility",
    "fit_mixture",
    "graph_adjacency",
    "gw_distance",
    "resize_graphon",
    "sample_graphs",
    "synthetic_graphon",
    "topo_features",
]
