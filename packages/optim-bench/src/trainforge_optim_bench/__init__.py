"""trainforge-optim-bench: the optimisers and the fair-tuning harness of "Fantastic
Pretraining Optimizers and Where to Find Them" (arXiv:2509.02046)."""

from importlib.metadata import PackageNotFoundError, version

from trainforge_optim_bench.adam_variants import CautiousAdamW, NAdamW, Signum
from trainforge_optim_bench.build import (
    KNOBS,
    MATRIX_OPTIMIZERS,
    OPTIMIZERS,
    build_optimizer,
    resolve_hparams,
)
from trainforge_optim_bench.combined import GroupedOptimizer
from trainforge_optim_bench.grouping import ParamGrouping, param_groups_for_matrix_opt
from trainforge_optim_bench.newton_schulz import newton_schulz5, newton_schulz_flops
from trainforge_optim_bench.presets import (
    BASELINES,
    GRIDS,
    PAPER_130M_1X_STEPS,
    PAPER_LOSS_130M_1X,
    baseline,
    split_config,
)
from trainforge_optim_bench.scaling import (
    DataLaw,
    ScalingLawHparams,
    effective_data,
    fit_data_law,
    speedup,
)
from trainforge_optim_bench.schedule import WarmupStableDecay, wsd_factor
from trainforge_optim_bench.soap import SOAP
from trainforge_optim_bench.tuner import CoordinateDescentTuner, TuneResult

try:
    __version__ = version("trainforge-optim-bench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "BASELINES",
    "GRIDS",
    "KNOBS",
    "MATRIX_OPTIMIZERS",
    "OPTIMIZERS",
    "PAPER_130M_1X_STEPS",
    "PAPER_LOSS_130M_1X",
    "SOAP",
    "CautiousAdamW",
    "CoordinateDescentTuner",
    "DataLaw",
    "GroupedOptimizer",
    "NAdamW",
    "ParamGrouping",
    "ScalingLawHparams",
    "Signum",
    "TuneResult",
    "WarmupStableDecay",
    "__version__",
    "baseline",
    "build_optimizer",
    "effective_data",
    "fit_data_law",
    "newton_schulz5",
    "newton_schulz_flops",
    "param_groups_for_matrix_opt",
    "resolve_hparams",
    "speedup",
    "split_config",
    "wsd_factor",
]
