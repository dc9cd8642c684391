"""load_for_growth reads a torch.distributed.checkpoint (DCP) directory into a plain small
model (one process here; 2 sharded ranks in test_gstack_distributed.py); wrapped models are
refused with the fix."""

from __future__ import annotations

import pytest
import torch
import torch.distributed.checkpoint as dcp

from trainforge_core.models import tiny_llama
from trainforge_gstack import grow_depth, load_for_growth

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def small(seed: int = 0, layers: int = 2) -> torch.nn.Module:
    return tiny_llama(seed=seed, num_layers=layers, hidden_size=16, num_heads=2, vocab_size=40,
                      max_position_embeddings=8)  # fmt: skip


def test_round_trip_then_grow(tmp_path):
    src = small(seed=0)
    dcp.save({"model": src.state_dict()}, checkpoint_id=tmp_path)
    got = load_for_growth(small(seed=1), tmp_path, key="model")
    for (name, a), b in zip(got.state_dict().items(), src.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert got.lm_head.weight is got.model.embed_tokens.weight  # ties survive the load
    assert grow_depth(got, 2).config.num_hidden_layers == 4
    flat = tmp_path / "flat"
    dcp.save(src.state_dict(), checkpoint_id=flat)
    assert torch.equal(load_for_growth(small(seed=2), flat).model.norm.weight,
                       src.model.norm.weight)  # fmt: skip


def test_bad_checkpoint_input(tmp_path):
    with pytest.raises(ValueError, match="not a torch.distributed.checkpoint"):
        load_for_growth(small(), tmp_path / "missing")
    with pytest.raises(TypeError, match="checkpoint_id"):
        load_for_growth(small(), 3)
    dcp.save({"model": small().state_dict()}, checkpoint_id=tmp_path)
    with pytest.raises(TypeError, match="key"):
        load_for_growth(small(), tmp_path, key=3)
    with pytest.raises(ValueError, match="key='model'"):
        load_for_growth(small(), tmp_path)  # saved under "model"
    with pytest.raises(ValueError, match="config"):
        load_for_growth(small(layers=3), tmp_path, key="model")  # a block more than saved
    with pytest.raises(TypeError, match="nn.Module"):
        load_for_growth("model", tmp_path)


class _Compiled(torch.nn.Module):
    """What torch.compile returns (OptimizedModule keeps the model as ``_orig_mod``), without
    the seconds that importing dynamo costs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = model
        self.config = model.config


def test_compiled_wrapper_is_refused_with_the_fix():
    compiled = _Compiled(small())
    with pytest.raises(TypeError, match="_orig_mod"):
        grow_depth(compiled, 2)
    assert grow_depth(compiled._orig_mod, 2).config.num_hidden_layers == 4
