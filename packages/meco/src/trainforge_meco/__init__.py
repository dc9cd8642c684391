"""trainforge-meco: metadata conditioning then cooldown (Gao et al., ICML 2025).

Prepend each training document's metadata (its URL's host) to it with the metadata tokens
excluded from the loss, then train the last 10% of steps on plain documents from a disjoint
pool with the same optimizer and LR schedule. See the README for the method card.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from trainforge_meco.formatting import (
    IGNORE_INDEX,
    URL_MODES,
    MeCoExample,
    MeCoFormatter,
    SpecialIds,
    masked_lm_loss,
    resolve_special_ids,
    url_host,
    url_to_metadata,
)
from trainforge_meco.packing import (
    MeCoCollator,
    PackedSequences,
    block_causal_mask,
    pack_documents,
    restore_all_masked,
)
from trainforge_meco.schedule import (
    MeCoDataset,
    MeCoSchedule,
    meco_lr_lambda,
    split_pools,
)

try:
    __version__ = version("trainforge-meco")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"


def __getattr__(name: str) -> Any:
    # The Trainer callback imports transformers' Trainer machinery: load it on first use.
    if name == "MeCoPhaseCallback":
        from trainforge_meco.hf import MeCoPhaseCallback

        return MeCoPhaseCallback
    raise AttributeError(f"module 'trainforge_meco' has no attribute {name!r}")


__all__ = [
    "IGNORE_INDEX",
    "URL_MODES",
    "MeCoCollator",
    "MeCoDataset",
    "MeCoExample",
    "MeCoFormatter",
    "MeCoPhaseCallback",
    "MeCoSchedule",
    "PackedSequences",
    "SpecialIds",
    "__version__",
    "block_causal_mask",
    "masked_lm_loss",
    "meco_lr_lambda",
    "pack_documents",
    "resolve_special_ids",
    "restore_all_masked",
    "split_pools",
    "url_host",
    "url_to_metadata",
]
