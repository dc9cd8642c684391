"""trainforge-unlearnrec: Pre-training for Recommendation Unlearning (arXiv:2505.22649)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-unlearnrec")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
