"""trainforge-shiftaddvit: ShiftAddViT, multiplication-reduced vision transformers.

Binary (Hamming-space) linear-angular attention computed with additions, power-of-two
("shift") linear layers with straight-through training, and a mixture of multiplication and
shift experts with a latency-aware load-balancing loss (You et al., NeurIPS 2023,
arXiv:2306.06446), with :func:`reparameterize_vit` for timm ViTs and PVTv2.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_shiftaddvit.attention import (
    AddLinearAttention,
    BinaryCoder,
    binary_attention_reference,
    linear_angular_attention,
)
from trainforge_shiftaddvit.convert import (
    ReparamReport,
    ShiftAddConfig,
    count_multiplications,
    reparameterize_vit,
)
from trainforge_shiftaddvit.energy import UNIT_ENERGY_PJ, EnergyReport, energy_estimate
from trainforge_shiftaddvit.finetune import TwoStageResult, two_stage_finetune
from trainforge_shiftaddvit.moe import (
    LATENCY,
    MultShiftMoE,
    cv_squared,
    latency_balance_loss,
    moe_aux_loss,
)
from trainforge_shiftaddvit.shift import ShiftLinear, round_to_fixed, shift_range

try:
    __version__ = version("trainforge-shiftaddvit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "LATENCY",
    "UNIT_ENERGY_PJ",
    "AddLinearAttention",
    "BinaryCoder",
    "EnergyReport",
    "MultShiftMoE",
    "ReparamReport",
    "ShiftAddConfig",
    "ShiftLinear",
    "TwoStageResult",
    "__version__",
    "binary_attention_reference",
    "count_multiplications",
    "cv_squared",
    "energy_estimate",
    "latency_balance_loss",
    "linear_angular_attention",
    "moe_aux_loss",
    "reparameterize_vit",
    "round_to_fixed",
    "shift_range",
    "two_stage_finetune",
]
