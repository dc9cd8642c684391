"""SLTrain on 2 gloo ranks equals one process on the global batch: DDP (same seed on every
rank, ``broadcast_buffers=False``, as the reference) and FSDP2 (``fully_shard``: the sparse
values sharded, the int32 supports kept whole on every rank); a DCP checkpoint of the
sharded model and optimizer resumes exactly; ``merge_sltrain`` of the sharded model gathers
the full weights. Tiny float64 layers, 3 AdamW steps, one spawn of 2 ranks for everything."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainforge_core.distributed import run_on_ranks
from trainforge_sltrain import apply_sltrain, merge_sltrain, sltrain_layers

pytestmark = pytest.mark.distributed

STEPS, N = 3, 8  # AdamW steps; examples per global batch (split evenly across 2 ranks)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(8, 12, dtype=torch.float64)
        self.mlp = nn.Linear(12, 6, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.tanh(self.attn(x)))


# The reference turns per-forward buffer broadcasts off (broadcast_buffers=False); torch
# versions that deprecate that argument name it forward_sync_buffers.
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = _Tiny()
    # sparsity 0.3: 28 and 21 sparse values, so one shards unevenly over 2 ranks
    apply_sltrain(model, rank=2, sparsity=0.3, alpha=4, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in sltrain_layers(model).values():  # B != 0: every gradient is non-zero
            layer.lora_B.copy_(0.3 * torch.randn(layer.lora_B.shape, generator=gen))
    return model


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(50 + step)
    x = torch.randn(N, 8, generator=gen, dtype=torch.float64)
    return x, torch.randn(N, 6, generator=gen, dtype=torch.float64)


def _train(model, steps, rank=0, world_size=1, first=0):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    losses = []
    for step in range(first, first + steps):
        x, y = (t.chunk(world_size)[rank] for t in _batch(step))
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
    return opt, losses


def _mean_over_ranks(losses):
    import torch.distributed as dist

    t = torch.stack(losses)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def _full(model):
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def _on_ranks(rank, world_size, ckpt_dir):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Shard

    out = {}
    # DDP: identical seeds give identical supports; nothing re-sent each forward.
    model = _model()
    ddp = nn.parallel.DistributedDataParallel(model, **_NO_BUFFER_SYNC)
    _, losses = _train(ddp, STEPS, rank, world_size)
    out["ddp"] = (_mean_over_ranks(losses), _full(model))

    # FSDP2: every SLTrain layer and the root sharded over the 2 ranks.
    mesh = init_device_mesh("cpu", (world_size,))

    def sharded(seed):
        m = _model(seed)
        for layer in sltrain_layers(m).values():
            fully_shard(layer, mesh=mesh)
        return fully_shard(m, mesh=mesh)

    model = sharded(0)
    value = model.attn.sparse_value
    assert isinstance(value, DTensor) and value.placements == (Shard(0),)
    out["local_values"] = value.to_local().numel()
    out["index"] = (type(model.attn.sparse_index).__name__, model.attn.sparse_index.dtype)
    opt, losses = _train(model, STEPS, rank, world_size)
    out["fsdp"] = (_mean_over_ranks(losses), _full(model))

    # DCP: save model + optimizer, load into a model built with another seed (other supports)
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.save(state, checkpoint_id=ckpt_dir)
    fresh = sharded(1)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2, weight_decay=0.1)
    loaded = {
        "model": get_model_state_dict(fresh),
        "optim": get_optimizer_state_dict(fresh, fresh_opt),
    }
    dcp.load(loaded, checkpoint_id=ckpt_dir)
    set_model_state_dict(fresh, loaded["model"])
    set_optimizer_state_dict(fresh, fresh_opt, loaded["optim"])
    out["dcp_equal"] = all(
        torch.equal(a, b) for a, b in zip(_full(model).values(), _full(fresh).values(), strict=True)
    )
    for m, o in ((model, opt), (fresh, fresh_opt)):  # one more step each: resumes exactly
        x, y = (t.chunk(world_size)[rank] for t in _batch(STEPS))
        F.mse_loss(m(x), y).backward()
        o.step()
        o.zero_grad()
    out["resumed_equal"] = all(
        torch.equal(a, b) for a, b in zip(_full(model).values(), _full(fresh).values(), strict=True)
    )
    # merge of the sharded model: full nn.Linear weights on every rank
    merge_sltrain(model)
    out["merged"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out["merged_out"] = model(_batch(9)[0]).detach()
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    # The time-out only guards against a hang: on an idle 2-core machine the run takes about
    # 20 s, but on a shared, loaded one importing torch.distributed in two fresh processes
    # alone took over a minute (default time-out 120 s).
    return run_on_ranks(_on_ranks, 2, str(tmp_path_factory.mktemp("dcp")), timeout=600.0)


@pytest.fixture(scope="module")
def single():
    model = _model()
    _, losses = _train(model, STEPS)
    return [loss.item() for loss in losses], _full(model)


def _assert_state_close(got, want):
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=k)


def test_ddp_equals_one_process(ranks, single):
    losses, state = single
    for out in ranks:
        got_losses, got_state = out["ddp"]
        torch.testing.assert_close(got_losses, losses, rtol=1e-10, atol=1e-12)
        _assert_state_close(got_state, state)
        assert got_state["attn.sparse_index"].dtype == torch.int32


def test_fsdp2_equals_one_process_with_sharded_values(ranks, single):
    losses, state = single
    assert [out["local_values"] for out in ranks] == [14, 14]  # 28 values, half per rank
    for out in ranks:
        assert out["index"] == ("Tensor", torch.int32)  # a plain buffer, whole on each rank
        got_losses, got_state = out["fsdp"]
        torch.testing.assert_close(got_losses, losses, rtol=1e-10, atol=1e-12)
        _assert_state_close(got_state, state)


def test_dcp_round_trip_resumes_exactly(ranks):
    for out in ranks:
        assert out["dcp_equal"] and out["resumed_equal"]


def test_merge_of_a_sharded_model_gathers(ranks):
    # The sharded model took STEPS + 1 steps (the last after the DCP round trip); merging it
    # used to fail (the materialisation mixed DTensor shards and plain tensors).
    model = _model()
    _train(model, STEPS + 1)
    merge_sltrain(model)
    want = model.state_dict()
    want_out = model(_batch(9)[0]).detach()
    for out in ranks:
        _assert_state_close(out["merged"], want)
        torch.testing.assert_close(out["merged_out"], want_out, rtol=1e-10, atol=1e-12)
