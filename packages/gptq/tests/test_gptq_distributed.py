"""Data-parallel calibration on 2 gloo ranks equals one process on the whole calibration
set: each layer's Hessian and sequence count are summed over the ranks before GPTQ runs.
Float64 Hessians; the quantized weights agree to 1e-6 (the Hessians differ only in the
order of their float64 sums) and the ranks' models are identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge_core.distributed import run_on_ranks
from trainforge_gptq import GPTQConfig, quantize_model

pytestmark = pytest.mark.distributed

CFG = GPTQConfig(bits=4, group_size=32)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(32, 64), nn.Linear(64, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


class _TinyLM(nn.Module):
    """A decoder-shaped model in plain torch (blocks at ``model.layers``), so the ranks do
    not import transformers: the data-parallel path does not depend on the architecture."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(64, 32)
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(32, 64)

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        h = self.embed(input_ids)
        for block in self.model.layers:
            h = block(h)
        return self.head(h)


def _model():
    return _TinyLM().eval()


def _calib():
    return torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(0))


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _quantize(rank, world_size, data_parallel):
    shard = _calib().chunk(world_size)[rank]
    # batches of 2 sequences: the same per-batch sizes as the single process's
    q, rep = quantize_model(
        _model(),
        list(shard.split(2)),
        CFG,
        pack_weights=False,
        progress=False,
        dtype=torch.float64,
        data_parallel=data_parallel,
    )
    return _weights(q), rep.n_sequences


def _both(rank, world_size):
    return _quantize(rank, world_size, True), _quantize(rank, world_size, False)


def test_two_ranks_equal_one_process():
    single, n = _quantize(0, 1, False)
    ((w0, n0), (l0, _)), ((w1, n1), _) = run_on_ranks(_both, 2, timeout=600)  # a hang guard
    assert n == n0 == n1 == 8
    for k in single:
        assert torch.equal(w0[k], w1[k]), k  # every rank ends with the same model
        torch.testing.assert_close(w0[k], single[k], atol=1e-6, rtol=0, msg=k)
    # without the all-reduce a rank quantizes from its own shard: the comparison can fail
    assert any(not torch.allclose(l0[k], single[k], atol=1e-6, rtol=0) for k in single)
