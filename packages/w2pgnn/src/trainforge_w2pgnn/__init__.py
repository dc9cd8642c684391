"""trainforge-w2pgnn: When to Pre-Train Graph Neural Networks? From Data Generation Perspective! (arXiv:2303.16458)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-w2pgnn")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
