"""trainforge-shiftaddvit: ShiftAddViT: Mixture of Multiplication Primitives Towards Efficient Vision Transformer (arXiv:2306.06446)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-shiftaddvit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
