"""trainforge-ul2: UL2: Unifying Language Learning Paradigms (arXiv:2205.05131)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-ul2")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
