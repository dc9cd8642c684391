"""G_stack on several ranks: FSDP2 small model -> DCP checkpoint -> grow -> FSDP2 grown model.

Run from the workspace root (CPU and gloo here; on GPUs the same script uses NCCL):

    torchrun --nproc-per-node 2 packages/gstack/examples/scale_out.py

Each rank trains the sharded small model on its own batches, the ranks save one sharded DCP
checkpoint, every rank loads it in full into a plain small model (``load_for_growth``), grows
it with ``grow_depth`` (a sharded or DDP-wrapped model is refused: growth needs every
parameter in full), shards the grown model again and continues with a new AdamW.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from trainforge_core.models import tiny_llama
from trainforge_gstack import grow_depth, load_for_growth

VOCAB, SEQ, STEPS = 64, 16, 5


def shard(model: torch.nn.Module, mesh) -> torch.nn.Module:
    for block in model.model.layers:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def train(model: torch.nn.Module, rank: int, lr: float) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(rank)  # each rank its own batches
    for _ in range(STEPS):
        x = torch.randint(0, VOCAB, (4, SEQ), generator=gen)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def main() -> None:
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    mesh = init_device_mesh("cuda" if cuda else "cpu", (world,))

    def small() -> torch.nn.Module:
        return tiny_llama(seed=0, num_layers=2, hidden_size=32, num_heads=4,
                          vocab_size=VOCAB, max_position_embeddings=SEQ).to(device)  # fmt: skip

    model = shard(small(), mesh)
    small_loss = train(model, rank, 1e-3)
    ckpt = [tempfile.mkdtemp(prefix="gstack-dcp-") if rank == 0 else None]
    dist.broadcast_object_list(ckpt, src=0)  # one directory for every rank
    dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=ckpt[0])
    plain = load_for_growth(small(), ckpt[0], key="model")  # the full small model, every rank
    big = shard(grow_depth(plain, factor=4), mesh)  # 2 -> 8 blocks, sharded again
    big_loss = train(big, rank, 3e-4)
    if rank == 0:
        print(f"small loss {small_loss:.3f}; grown to {len(big.model.layers)} blocks on "
              f"{world} ranks; grown loss {big_loss:.3f}")  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
