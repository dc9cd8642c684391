"""trainforge-sophia: the Sophia optimizer (Liu et al., ICLR 2024), SophiaG and SophiaH.

``SophiaG`` / ``SophiaH`` are ``torch.optim.Optimizer``s with the reference code's update;
``gnb_loss`` and ``hutchinson_diag`` are the Hessian estimators; ``maybe_update_hessian``
runs the every-k-steps estimate on a fresh batch; ``SophiaCallback`` (in
``trainforge_sophia.hf``) does it inside a ``transformers.Trainer``.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_sophia.hessian import (
    gnb_loss,
    hutchinson_diag,
    maybe_update_hessian,
    rademacher_like,
)
from trainforge_sophia.optimizer import SophiaG, SophiaH, decay_groups

try:
    __version__ = version("trainforge-sophia")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "SophiaG",
    "SophiaH",
    "__version__",
    "decay_groups",
    "gnb_loss",
    "hutchinson_diag",
    "maybe_update_hessian",
    "rademacher_like",
]
