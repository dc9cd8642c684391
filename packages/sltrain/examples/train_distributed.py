"""SLTrain pre-training on several processes: DDP (default) or FSDP2 (``--fsdp``), with a
distributed checkpoint (DCP) of model and optimizer at the end.

    torchrun --nproc-per-node 2 packages/sltrain/examples/train_distributed.py --fsdp

Every rank calls ``apply_sltrain`` with the same seed, so every rank draws the same supports
without communication (as the reference, andyjm3/SLTrain:torchrun_main.py). DDP runs
without per-forward buffer broadcasts (the supports never change). FSDP2 shards the SLTrain
parameters (``lora_A``, ``lora_B``, ``sparse_value``) across ranks; the int32 supports are
buffers, kept whole on every rank. Runs on CPU (gloo) or one GPU per rank (nccl). A tiny
Llama on random tokens: swap in your model and data.
"""

from __future__ import annotations

import argparse
import inspect
import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

from trainforge_core.models import tiny_llama
from trainforge_sltrain import apply_sltrain, merge_sltrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 fully_shard instead of DDP")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--checkpoint", default="sltrain-dcp", help="DCP output directory")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # the same dense init on every rank ...
    model = tiny_llama(seed=0, vocab_size=256, hidden_size=64, num_layers=2, num_heads=4)
    apply_sltrain(model, rank=16, sparsity=0.03, alpha=32, seed=0)  # ... and the same supports
    model.to(device)
    if args.fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        train_model = fully_shard(model, mesh=mesh)
    else:
        ddp_params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
        # torch 2.15 renames the reference's broadcast_buffers=False to forward_sync_buffers
        no_sync = (
            "forward_sync_buffers" if "forward_sync_buffers" in ddp_params else "broadcast_buffers"
        )
        train_model = nn.parallel.DistributedDataParallel(model, **{no_sync: False})

    opt = torch.optim.AdamW(train_model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own share of the data
    for step in range(args.steps):
        ids = torch.randint(0, 256, (4, 32), generator=gen).to(device)
        loss = train_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        summed = loss.detach().clone()
        dist.all_reduce(summed)
        if rank == 0:
            print(f"step {step}: loss {summed.item() / world:.4f}")

    state = {
        "model": get_model_state_dict(model),
        "optim": get_optimizer_state_dict(model, opt),
    }
    dcp.save(state, checkpoint_id=args.checkpoint)
    merge_sltrain(model)  # gathers sharded weights (all ranks call it): plain nn.Linear layers
    if rank == 0:
        print(f"saved {args.checkpoint}; merged layers: {type(model.model.layers[0].mlp.up_proj)}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
