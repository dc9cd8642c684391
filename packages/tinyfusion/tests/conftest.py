"""Shared fixtures for the tinyfusion tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# the toy models live beside the tests; make them importable in every import mode
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI machine is shared: one intra-op thread avoids oversubscription stalls.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
