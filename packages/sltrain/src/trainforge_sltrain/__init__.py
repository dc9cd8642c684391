"""trainforge-sltrain: SLTrain, pretraining with sparse plus low-rank weights.

Each targeted linear weight becomes ``W = (alpha / rank) * B @ A + S`` with ``S`` on a fixed
random support (Han et al., "SLTrain: a sparse plus low-rank approach for parameter and
memory efficient pretraining", NeurIPS 2024, arXiv:2406.02214).
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_sltrain.linear import (
    DEFAULT_ALPHA,
    DEFAULT_RANK,
    DEFAULT_SPARSITY,
    SLTrainLinear,
    algorithm_costs,
    choose_algorithm,
    sltrain_linear_function,
    sltrain_linear_params,
    sparse_mac_cost,
)
from trainforge_sltrain.memory import optimizer_state_bytes, training_state_bytes
from trainforge_sltrain.model import (
    DEFAULT_TARGETS,
    SLTrainReport,
    apply_sltrain,
    load_sltrain,
    merge_sltrain,
    save_sltrain,
    sltrain_from_pretrained,
    sltrain_layers,
)

try:
    __version__ = version("trainforge-sltrain")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_RANK",
    "DEFAULT_SPARSITY",
    "DEFAULT_TARGETS",
    "SLTrainLinear",
    "SLTrainReport",
    "__version__",
    "algorithm_costs",
    "apply_sltrain",
    "choose_algorithm",
    "load_sltrain",
    "merge_sltrain",
    "optimizer_state_bytes",
    "save_sltrain",
    "sltrain_from_pretrained",
    "sltrain_layers",
    "sltrain_linear_function",
    "sltrain_linear_params",
    "sparse_mac_cost",
    "training_state_bytes",
]
