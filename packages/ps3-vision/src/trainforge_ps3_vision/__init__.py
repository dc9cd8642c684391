"""trainforge-ps3-vision: Scaling Vision Pre-Training to 4K Resolution (arXiv:2503.19903)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-ps3-vision")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
