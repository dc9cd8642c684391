from __future__ import annotations

import math

import pytest
import torch

from trainforge_meco import MeCoDataset, MeCoSchedule, meco_lr_lambda, split_pools


# Hand-computed: cooldown_start = round(0.9 * total) with Python's round (half to even), so
# 4.5 -> 4 and 13.5 -> 14; written out, not recomputed with the implementation's formula.
@pytest.mark.parametrize(
    ("total", "boundary"),
    [(10, 9), (37, 33), (100, 90), (999, 899), (40_000, 36_000), (5, 4), (15, 14), (1, 1)],
)
def test_phase_switch_at_exactly_ninety_percent(total: int, boundary: int) -> None:
    sched = MeCoSchedule(total)
    phases = [sched.phase(s) for s in range(total)]
    assert phases == ["metadata"] * boundary + ["cooldown"] * (total - boundary)
    assert sched.cooldown_start == boundary and sched.cooldown_steps == total - boundary


def test_reference_run_switches_at_step_36000() -> None:
    sched = MeCoSchedule(40_000, 0.1)  # princeton-pli/MeCo: checkpoint-36000 of 40k steps
    assert sched.phase(35_999) == "metadata" and sched.phase(36_000) == "cooldown"


def test_no_cooldown_ablation() -> None:
    sched = MeCoSchedule(50, 0.0)
    assert {sched.phase(s) for s in range(50)} == {"metadata"}


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, math.nan, "0.1", True])
def test_cooldown_fraction_outside_unit_interval_is_rejected(fraction) -> None:
    with pytest.raises(ValueError, match=r"cooldown_fraction must be a number in \[0, 1\)"):
        MeCoSchedule(100, fraction)


def test_schedule_bad_inputs() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        MeCoSchedule(0)
    with pytest.raises(ValueError, match="total_steps"):
        MeCoSchedule(10.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step must be"):
        MeCoSchedule(10).phase(-1)


def test_lr_is_one_cosine_matching_transformers() -> None:
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    total = 200
    ours = meco_lr_lambda(total)  # warmup 5%, min 0.1 (MeCo run configs)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    hf = get_cosine_with_min_lr_schedule_with_warmup(opt, 10, total, min_lr_rate=0.1)
    theirs = []
    for _ in range(total):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        hf.step()
    assert [ours(s) for s in range(total)] == pytest.approx(theirs, abs=1e-12)
    assert ours(total) == pytest.approx(0.1)


def test_lr_is_continuous_across_the_switch_and_optimizer_state_is_kept() -> None:
    """A loop through MeCoDataset: the data switch happens at step 36 of 40 (seen in the
    targets the model gets), the LR follows the reference's closed form through it, and the
    optimizer's state keeps counting (no new optimizer, no reset)."""
    torch.manual_seed(0)
    total = 40
    sched = MeCoSchedule(total)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, meco_lr_lambda(total))
    meta = [(torch.randn(4), torch.tensor([1.0])) for _ in range(8)]
    cool = [(torch.randn(4), torch.tensor([-1.0])) for _ in range(8)]
    data = MeCoDataset(meta, cool, sched, examples_per_step=2)
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    lrs, sources = [], []
    for x, y in loader:
        sources.append("metadata" if bool((y > 0).all()) else "cooldown")
        assert bool((y > 0).all()) or bool((y < 0).all())  # a step never mixes the pools
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        lr_sched.step()
    assert sources == ["metadata"] * 36 + ["cooldown"] * 4
    # warm-up ceil(0.05 * 40) = 2 steps, then a cosine from 1 to 0.1 over the other 38
    expected = [
        1e-2 * (s / 2 if s < 2 else 0.1 + 0.45 * (1 + math.cos(math.pi * (s - 2) / 38)))
        for s in range(total)
    ]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert all(int(st["step"]) == total for st in opt.state.values())  # never reset


def test_dataset_switches_source_at_the_boundary_and_pools_are_disjoint() -> None:
    docs = list(range(100))
    meta_pool, cool_pool = split_pools(docs, 0.1, seed=3)
    assert not set(meta_pool) & set(cool_pool)
    assert sorted(meta_pool + cool_pool) == docs and len(cool_pool) == 10
    sched = MeCoSchedule(25)
    data = MeCoDataset(meta_pool, cool_pool, sched, examples_per_step=4)
    out = list(data)
    assert len(out) == len(data) == 100
    b = sched.cooldown_start * 4
    assert set(out[:b]) <= set(meta_pool) and set(out[b:]) <= set(cool_pool)
    assert out[:b] == (meta_pool * 2)[:b]  # cycles through a re-iterable source in order
    resumed = list(MeCoDataset(meta_pool, cool_pool, sched, 4, start_step=sched.cooldown_start))
    assert resumed == out[b:]


def test_dataset_sources_as_callables_and_one_shot_iterators() -> None:
    sched = MeCoSchedule(10)
    data = MeCoDataset(lambda: iter(range(3)), lambda: iter([-1]), sched)
    assert list(data) == [0, 1, 2, 0, 1, 2, 0, 1, 2, -1]
    one_shot = MeCoDataset(iter(range(3)), [-1], sched)
    with pytest.raises(RuntimeError, match="one-shot iterator"):
        list(one_shot)
    with pytest.raises(ValueError, match="no examples"):
        list(MeCoDataset([], [1], sched))


def test_split_pools_is_seeded() -> None:
    a = split_pools(list(range(50)), 0.2, seed=1)
    assert a == split_pools(list(range(50)), 0.2, seed=1)
    assert a != split_pools(list(range(50)), 0.2, seed=2)


def test_dataset_and_pool_bad_inputs() -> None:
    sched = MeCoSchedule(10)
    pool = [1, 2]
    with pytest.raises(TypeError, match="MeCoSchedule"):
        MeCoDataset([1], [2], 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different pools"):
        MeCoDataset(pool, pool, sched)
    with pytest.raises(ValueError, match="examples_per_step"):
        MeCoDataset([1], [2], sched, 0)
    with pytest.raises(ValueError, match="start_step"):
        MeCoDataset([1], [2], sched, start_step=11)
    with pytest.raises(TypeError, match="metadata_source"):
        MeCoDataset(5, [2], sched)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cooldown_fraction"):
        split_pools([1, 2, 3], 1.0)
    with pytest.raises(ValueError, match="cooldown_fraction must be > 0"):
        split_pools([1, 2, 3], 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        split_pools([1], 0.5)
    with pytest.raises(TypeError, match="sequence"):
        split_pools("abc", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_steps"):
        meco_lr_lambda(0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        meco_lr_lambda(10, warmup_ratio=1.0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        meco_lr_lambda(10, min_lr_ratio=2.0)


# -- sharded across ranks (issue 25) ----------------------------------------------------------
def _rank_streams(meta, cool, sched, per_step, world, **kw):
    """Per rank, the list of examples each global step gives it."""
    out = []
    for rank in range(world):
        data = MeCoDataset(meta, cool, sched, per_step, rank=rank, world_size=world, **kw)
        items = list(data)
        local = per_step // world
        assert len(items) == len(data) == sched.total_steps * local
        out.append([items[s * local : (s + 1) * local] for s in range(sched.total_steps)])
    return out


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_sharded_ranks_are_disjoint_and_their_union_is_the_single_process_step(
    shuffle: bool, world: int
) -> None:
    meta, cool = list(range(100, 137)), list(range(-9, 0))  # 37 and 9: epochs end mid-step
    sched = MeCoSchedule(30)
    per_step = 6
    single = _rank_streams(meta, cool, sched, per_step, 1, shuffle=shuffle, seed=5)[0]
    ranks = _rank_streams(meta, cool, sched, per_step, world, shuffle=shuffle, seed=5)
    flat = []  # (example, rank) in stream order
    for step in range(sched.total_steps):
        parts = [ranks[r][step] for r in range(world)]
        union = [x for p in parts for x in p]
        assert sorted(union) == sorted(single[step])  # = one process with the global batch
        phase = sched.phase(step)
        pool = set(meta) if phase == "metadata" else set(cool)
        assert set(union) <= pool  # every rank switches at the same global step
        # rank r holds positions r, r + world, ...: interleave back into stream order
        flat.append([(parts[j % world][j // world], j % world) for j in range(per_step)])

    def epochs(steps, size):
        stream = [x for step in steps for x in step]
        return [stream[e * size : (e + 1) * size] for e in range(len(stream) // size)]

    # every document exactly once per epoch across ranks, and the ranks' shares of an epoch
    # disjoint (27 steps x 6 = 162 = 4 epochs of 37 + 14; the cooldown: 3 x 6 = 2 x 9)
    for size, pool_list, steps in (
        (37, meta, flat[: sched.cooldown_start]),
        (9, cool, flat[sched.cooldown_start :]),
    ):
        windows = epochs(steps, size)
        assert len(windows) == (4 if size == 37 else 2)
        for window in windows:
            assert sorted(x for x, _ in window) == sorted(pool_list)
            shares = [{x for x, r in window if r == rank} for rank in range(world)]
            assert sum(len(sh) for sh in shares) == size and all(shares)
    stream = [x for step in flat[: sched.cooldown_start] for x, _ in step]
    if shuffle:
        assert stream[:37] != meta and stream[:37] != stream[37:74]  # a new order per epoch
    else:
        assert stream[:37] == meta


def test_sharded_stream_is_deterministic_and_resumes_mid_epoch() -> None:
    meta, cool = list(range(23)), list(range(100, 105))
    sched = MeCoSchedule(20)
    kw = {"rank": 1, "world_size": 2, "shuffle": True, "seed": 7}
    full = list(MeCoDataset(meta, cool, sched, 4, **kw))
    assert full == list(MeCoDataset(meta, cool, sched, 4, **kw))  # deterministic
    assert full != list(MeCoDataset(meta, cool, sched, 4, **{**kw, "seed": 8}))
    for start in (7, sched.cooldown_start, 19):  # 7 x 4 = 28: mid-way through epoch 2
        resumed = list(MeCoDataset(meta, cool, sched, 4, start_step=start, **kw))
        assert resumed == full[start * 2 :]


def test_sharded_dataset_bad_inputs() -> None:
    sched = MeCoSchedule(10)
    with pytest.raises(ValueError, match="divisible by world_size=4"):
        MeCoDataset([1], [2], sched, 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\)"):
        MeCoDataset([1], [2], sched, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size must be a positive"):
        MeCoDataset([1], [2], sched, 2, world_size=0)
    with pytest.raises(ValueError, match="rank must be an integer"):
        MeCoDataset([1], [2], sched, 2, rank=0.0, world_size=2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sized and indexable"):
        MeCoDataset(lambda: iter([1]), [2], sched, 2, rank=0, world_size=2)
    with pytest.raises(TypeError, match="sized and indexable"):
        MeCoDataset([1], iter([2]), sched, shuffle=True)
    with pytest.raises(TypeError, match="shuffle must be a bool"):
        MeCoDataset([1], [2], sched, shuffle=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be an integer"):
        MeCoDataset([1], [2], sched, seed="0")  # type: ignore[arg-type]


def test_more_than_one_dataloader_worker_is_refused() -> None:
    data = MeCoDataset(list(range(8)), [9], MeCoSchedule(10), 2)
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    with pytest.raises(Exception, match="num_workers=2"):
        list(loader)
