"""trainforge-multigrid-video: A Multigrid Method for Efficiently Training Video Models
(Wu et al., arXiv:1912.00998): long and short cycles of (batch, frames, crop) shapes at
near-constant FLOPs per iteration, with the LR, sampler and BatchNorm to match."""

from importlib.metadata import PackageNotFoundError, version

from trainforge_multigrid_video.lr import MultigridLR
from trainforge_multigrid_video.models import check_variable_shape, tiny_video_cnn
from trainforge_multigrid_video.sampler import (
    GridIndex,
    MultigridDataset,
    ShortCycleBatchSampler,
    update_long_cycle,
)
from trainforge_multigrid_video.schedule import (
    DEFAULT_LONG_FACTORS,
    DEFAULT_SHORT_FACTORS,
    DEFAULT_SPATIAL_LONG_FACTORS,
    MultigridSchedule,
    Phase,
    short_cycle_pairs,
)
from trainforge_multigrid_video.subbn import (
    SubBatchNorm2d,
    SubBatchNorm3d,
    aggregate_sub_bn,
    convert_to_sub_bn,
    precise_bn,
    set_num_splits,
)

try:
    __version__ = version("trainforge-multigrid-video")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_LONG_FACTORS",
    "DEFAULT_SHORT_FACTORS",
    "DEFAULT_SPATIAL_LONG_FACTORS",
    "GridIndex",
    "MultigridDataset",
    "MultigridLR",
    "MultigridSchedule",
    "Phase",
    "ShortCycleBatchSampler",
    "SubBatchNorm2d",
    "SubBatchNorm3d",
    "__version__",
    "aggregate_sub_bn",
    "check_variable_shape",
    "convert_to_sub_bn",
    "precise_bn",
    "set_num_splits",
    "short_cycle_pairs",
    "tiny_video_cnn",
    "update_long_cycle",
]
