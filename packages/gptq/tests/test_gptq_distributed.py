"""Data-parallel calibration on 2 gloo ranks equals one process on the whole calibration
set: each layer's Hessian and sequence count are summed over the ranks before GPTQ runs.
Float64 Hessians; the quantized weights agree to 1e-6 (the Hessians differ only in the
order of their float64 sums) and the ranks' models are identical."""

from __future__ import annotations

import pytest
import torch

from trainforge_core.distributed import run_on_ranks
from trainforge_core.models import tiny_llama
from trainforge_gptq import GPTQConfig, quantize_model

pytestmark = pytest.mark.distributed

CFG = GPTQConfig(bits=4, group_size=32)


def _model():
    return tiny_llama(seed=0, vocab_size=64, hidden_size=32, num_layers=1, num_heads=2).eval()


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
    ((w0, n0), (l0, _)), ((w1, n1), _) = run_on_ranks(_both, 2, timeout=120)
    assert n == n0 == n1 == 8
    for k in single:
        assert torch.equal(w0[k], w1[k]), k  # every rank ends with the same model
        torch.testing.assert_close(w0[k], single[k], atol=1e-6, rtol=0, msg=k)
    # without the all-reduce a rank quantizes from its own shard: the comparison can fail
    assert any(not torch.allclose(l0[k], single[k], atol=1e-6, rtol=0) for k in single)
