"""trainforge-bert2bert: bert2BERT: Towards Reusable Pretrained Language Models (arXiv:2110.07143)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-bert2bert")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
