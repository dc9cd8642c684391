"""Scaling out (2 gloo ranks, FSDP2 and DDP on CPU): grow from a DCP checkpoint of a sharded
small model, and a clear error (never a hang) when asked to grow a wrapped model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge_core.distributed import run_on_ranks
from trainforge_core.models import tiny_llama
from trainforge_gstack import grow_depth, load_for_growth

pytestmark = pytest.mark.distributed

VOCAB, SEQ = 40, 6


def _small(seed: int = 0) -> nn.Module:
    return tiny_llama(seed=seed, num_layers=2, hidden_size=16, num_heads=2, vocab_size=VOCAB,
                      max_position_embeddings=SEQ).double()  # fmt: skip


def _batch(rank: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(10 + rank))


def _step(model: nn.Module, batches: list[torch.Tensor]) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = sum(model(input_ids=b, labels=b).loss for b in batches) / len(batches)
    loss.backward()
    opt.step()


def _sharded_then_grown(rank: int, world_size: int, ckpt: str) -> dict[str, torch.Tensor]:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world_size,))
    model = _small()
    for block in model.model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    _step(model, [_batch(rank)])  # one step on this rank's half of the global batch
    # Growing the sharded model is refused with the fix, on every rank (no collective hangs).
    with pytest.raises(TypeError, match="FSDP-sharded.*load_for_growth"):
        grow_depth(model, 2)
    dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=ckpt)
    dist.barrier()
    plain = load_for_growth(_small(seed=5), ckpt, key="model")
    ddp = nn.parallel.DistributedDataParallel(plain)
    with pytest.raises(TypeError, match=r"ddp\.module"):
        grow_depth(ddp, 2)
    big = grow_depth(ddp.module, 2)
    # The grown model shards again and trains.
    for block in big.model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(big, mesh=mesh)
    _step(big, [_batch(rank)])
    return {k: v.detach().clone() for k, v in plain.state_dict().items()}


def test_grow_from_a_sharded_checkpoint_equals_one_process(tmp_path):
    ranks = run_on_ranks(_sharded_then_grown, 2, str(tmp_path / "ckpt"), timeout=240)
    ref = _small()
    _step(ref, [_batch(0), _batch(1)])  # the single process on the global batch
    want = ref.state_dict()
    for got in ranks:
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)
    # And the grown model from it is the single process's grown model.
    single = load_for_growth(_small(seed=5), tmp_path / "ckpt", key="model")
    for a, b in zip(grow_depth(single, 2).parameters(), grow_depth(ref, 2).parameters(),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
