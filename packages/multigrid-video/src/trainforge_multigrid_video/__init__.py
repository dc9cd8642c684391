"""trainforge-multigrid-video: A Multigrid Method for Efficiently Training Video Models (arXiv:1912.00998)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-multigrid-video")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
