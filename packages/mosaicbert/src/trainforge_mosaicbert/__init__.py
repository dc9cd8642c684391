"""trainforge-mosaicbert: MosaicBERT: A Bidirectional Encoder Optimized for Fast Pretraining (arXiv:2312.17482)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trainforge-mosaicbert")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
