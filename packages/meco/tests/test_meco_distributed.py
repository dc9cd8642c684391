"""MeCo's packed data pipeline sharded across 2 gloo ranks (issue 25): the ranks' documents
are disjoint, every rank switches to the cooldown pool at the same global step, and DDP
training on the shards equals one process on the same global batch (loss trajectory and
final parameters, float64, to 1e-10)."""

from __future__ import annotations

import pytest
import torch

from trainforge_core.distributed import run_on_ranks

pytestmark = pytest.mark.distributed

TOTAL, PER_STEP, SEQ = 10, 4, 32  # optimizer steps, global rows per step, tokens per row


def _pools():
    from trainforge_meco import MeCoFormatter, pack_documents

    def enc(text: str) -> list[int]:
        return list(text.encode())

    fmt = MeCoFormatter(enc, bos_id=256, eos_id=257)
    gen = torch.Generator().manual_seed(0)
    docs = [
        (f"https://s{i % 3}.org/{i}", torch.randint(0, 200, (10 + i % 5,), generator=gen).tolist())
        for i in range(40)
    ]
    # 28 metadata rows (one document each), 6 cooldown rows (two plain documents each)
    meta = pack_documents([fmt(ids, url) for url, ids in docs[:28]], SEQ, "pad", pad_id=258)
    cool = pack_documents([fmt(ids) for _, ids in docs[28:]], SEQ, "pad", pad_id=258)
    tag = lambda rows, name: [{**rows[i], "row": f"{name}{i}"} for i in range(len(rows))]  # noqa: E731
    return tag(meta, "m"), tag(cool, "c")


def _row_mean_loss(logits, labels):
    """Mean over rows of each row's mean token loss: the average of equal-sized local
    batches is then the global batch's value, so DDP's gradient averaging matches."""
    from trainforge_meco import IGNORE_INDEX

    shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
    token = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    count = (shift_labels != IGNORE_INDEX).sum(1)
    return (token.sum(1) / count).mean()


def _train(rank: int, world_size: int):
    import torch.distributed as dist

    from trainforge_core.models import tiny_llama
    from trainforge_meco import MeCoCollator, MeCoDataset, MeCoSchedule, meco_lr_lambda

    meta, cool = _pools()
    schedule = MeCoSchedule(TOTAL)
    data = MeCoDataset(
        meta, cool, schedule, PER_STEP, rank=rank, world_size=world_size, shuffle=True, seed=3
    )
    collate = MeCoCollator()
    loader = torch.utils.data.DataLoader(
        data, batch_size=data.local_examples_per_step, collate_fn=lambda rows: (rows, collate(rows))
    )
    torch.manual_seed(0)
    model = tiny_llama(vocab_size=260, hidden_size=16, num_layers=1, num_heads=2).double()
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.033, betas=(0.9, 0.95))
    lr = torch.optim.lr_scheduler.LambdaLR(opt, meco_lr_lambda(TOTAL))
    losses, served = [], []
    for rows, batch in loader:
        served.append([r["row"] for r in rows])
        loss = _row_mean_loss(
            wrapped(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
        value = loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(value)
            value /= world_size
        losses.append(float(value))
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    return losses, params, served


def test_two_ranks_equal_one_process_with_the_same_global_batch() -> None:
    single_losses, single_params, single_served = _train(0, 1)
    (l0, p0, s0), (l1, p1, s1) = run_on_ranks(_train, 2, timeout=240)
    # the shards: disjoint within every step, their union the single process's step
    for step in range(TOTAL):
        assert not set(s0[step]) & set(s1[step])
        assert sorted(s0[step] + s1[step]) == sorted(single_served[step])
        prefix = "m" if step < 9 else "c"  # cooldown from step 9 on both ranks
        assert all(r.startswith(prefix) for r in s0[step] + s1[step])
    # DDP on the shards = one process on the global batch
    assert l0 == l1
    assert l0 == pytest.approx(single_losses, abs=1e-10)
    assert torch.equal(p0, p1)
    assert torch.allclose(p0, single_params, atol=1e-10, rtol=0)
