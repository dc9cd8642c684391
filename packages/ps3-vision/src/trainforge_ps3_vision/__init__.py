"""trainforge-ps3-vision: PS3 high-resolution vision encoding with top-down patch selection
(Shi et al., "Scaling Vision Pre-Training to 4K Resolution", arXiv:2503.19903)."""

from importlib.metadata import PackageNotFoundError, version

from trainforge_ps3_vision.encoder import (
    PS3Config,
    PS3Encoder,
    PS3Output,
    apply_ps3,
    attend_with_cache,
    full_patch_embed,
    scale_pos_embed,
    selected_patch_embed,
)
from trainforge_ps3_vision.losses import box_supervision_loss, localized_contrastive_loss
from trainforge_ps3_vision.selection import (
    boxes_to_map,
    map_to_grid,
    rescale_budget,
    selection_budget,
    selection_logits_to_probs,
    topk_select,
)

try:
    __version__ = version("trainforge-ps3-vision")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "PS3Config",
    "PS3Encoder",
    "PS3Output",
    "__version__",
    "apply_ps3",
    "attend_with_cache",
    "box_supervision_loss",
    "boxes_to_map",
    "full_patch_embed",
    "localized_contrastive_loss",
    "map_to_grid",
    "rescale_budget",
    "scale_pos_embed",
    "selected_patch_embed",
    "selection_budget",
    "selection_logits_to_probs",
    "topk_select",
]
