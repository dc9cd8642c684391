"""trainforge-tinyfusion: TinyFusion: Diffusion Transformers Learned Shallow (arXiv:2412.01199).

Learnable depth pruning: differentiable N:M layer masks (Gumbel-softmax) co-optimised with a
LoRA weight update, so the search picks the layers whose removal is most *recoverable*; the
pruned model is cut from the original weights. Plus the baselines (loss importance, ShortGPT BI
score, BK-SDM oracle) and masked knowledge distillation for recovery.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_tinyfusion.baselines import (
    bi_score_pruning,
    bksdm_indices,
    importance_pruning,
    skipped_layers,
)
from trainforge_tinyfusion.dit import GaussianDiffusion, TinyDiT
from trainforge_tinyfusion.gates import GatedDepth, LinearAnneal, make_groups, make_options
from trainforge_tinyfusion.kd import (
    MaskedKD,
    beta_feat_schedule,
    masked_feature_loss,
    massive_activation_mask,
    uniform_layer_pairs,
)
from trainforge_tinyfusion.layouts import find_blocks, prune_layers
from trainforge_tinyfusion.lora import attach_lora, detach_lora, lora_parameters
from trainforge_tinyfusion.search import PruningResult, TinyFusionConfig, learn_depth_pruning

try:
    __version__ = version("trainforge-tinyfusion")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "GatedDepth",
    "GaussianDiffusion",
    "LinearAnneal",
    "MaskedKD",
    "PruningResult",
    "TinyDiT",
    "TinyFusionConfig",
    "__version__",
    "attach_lora",
    "beta_feat_schedule",
    "bi_score_pruning",
    "bksdm_indices",
    "detach_lora",
    "find_blocks",
    "importance_pruning",
    "learn_depth_pruning",
    "lora_parameters",
    "make_groups",
    "make_options",
    "masked_feature_loss",
    "massive_activation_mask",
    "prune_layers",
    "skipped_layers",
    "uniform_layer_pairs",
]
