"""trainforge-pela: parameter-efficient models by low-rank approximation (PELA).

PELA (Guo, Wang & Kankanhalli, CVPR 2024): replace a pre-trained transformer's Linear
layers by two thin ones initialised from a truncated SVD (:func:`apply_pela`), then recover
the lost accuracy with a short intermediate pre-training against the original model as the
teacher (:class:`PELALoss`: task loss + per-block feature distillation + logit distillation
+ a weight-perturbation regulariser; :func:`pela_pretrain`, ``trainforge_pela.hf.PELATrainer``).
:func:`merge_low_rank` folds the factors back into single Linears for export.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_pela.distill import (
    AUTO_BLOCK_PATTERNS,
    PRESETS,
    PELAConfig,
    PELALoss,
    PELAOutput,
    find_blocks,
    weight_pairs,
    weight_perturbation,
)
from trainforge_pela.lowrank import (
    DEFAULT_INFERENCE_PAD,
    DEFAULT_MIN_OUT_FEATURES,
    DEFAULT_SKIP,
    CompressedLayer,
    CompressionReport,
    LowRankLinear,
    apply_pela,
    compress_linear_layers,
    low_rank_factors,
    low_rank_layers,
    merge_low_rank,
    rank_for_ratio,
    set_inference_pad,
)
from trainforge_pela.train import PretrainResult, pela_pretrain

try:
    __version__ = version("trainforge-pela")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "AUTO_BLOCK_PATTERNS",
    "DEFAULT_INFERENCE_PAD",
    "DEFAULT_MIN_OUT_FEATURES",
    "DEFAULT_SKIP",
    "PRESETS",
    "CompressedLayer",
    "CompressionReport",
    "LowRankLinear",
    "PELAConfig",
    "PELALoss",
    "PELAOutput",
    "PretrainResult",
    "__version__",
    "apply_pela",
    "compress_linear_layers",
    "find_blocks",
    "low_rank_factors",
    "low_rank_layers",
    "merge_low_rank",
    "pela_pretrain",
    "rank_for_ratio",
    "set_inference_pad",
    "weight_pairs",
    "weight_perturbation",
]
