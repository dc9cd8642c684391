"""trainforge-pela: Learning Parameter-Efficient Models with Low-Rank Approximation (PELA) (arXiv:2310.10700)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-pela")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
