"""trainforge-tinyfusion: TinyFusion: Diffusion Transformers Learned Shallow (arXiv:2412.01199)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-tinyfusion")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
