"""trainforge-gstack: grow a small transformers decoder into a deeper (or wider) one.

G_stack (Du et al., "Stacking Your Transformers", NeurIPS 2024): train a small model, stack
its blocks ``g = 4`` times, continue training. Also the other growth operators of the paper
(function-preserving ``zero`` in depth and width, ``split`` in width, ``random``) and the
paper's growth-timing rule.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_gstack.checkpoint import load_for_growth
from trainforge_gstack.depth import (
    DEFAULT_FACTOR,
    DEPTH_OPS,
    PHASE_IN_STEPS,
    DepthPlan,
    GrowthWarning,
    depth_plan,
    grow_depth,
    renumber_layers,
)
from trainforge_gstack.layouts import LAYOUTS, DecoderLayout, find_layout
from trainforge_gstack.phase import PhaseIn, phase_in_of
from trainforge_gstack.recipe import GStackRun, WindowStream, train_gstack
from trainforge_gstack.timing import GStackPlan, growth_timing_tokens, plan_gstack
from trainforge_gstack.width import WIDTH_OPS, grow_width

try:
    __version__ = version("trainforge-gstack")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_FACTOR",
    "DEPTH_OPS",
    "LAYOUTS",
    "PHASE_IN_STEPS",
    "WIDTH_OPS",
    "DecoderLayout",
    "DepthPlan",
    "GStackPlan",
    "GStackRun",
    "GrowthWarning",
    "PhaseIn",
    "WindowStream",
    "__version__",
    "depth_plan",
    "find_layout",
    "grow_depth",
    "grow_width",
    "growth_timing_tokens",
    "load_for_growth",
    "phase_in_of",
    "plan_gstack",
    "renumber_layers",
    "train_gstack",
]
