"""trainforge-optim-bench: Fantastic Pretraining Optimizers and Where to Find Them (arXiv:2509.02046)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-optim-bench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
