"""MultigridLR: the reference's LR formula, fractional epochs, state_dict round trip."""

from __future__ import annotations

import io

import pytest
import torch

from trainforge_multigrid_video import MultigridLR, MultigridSchedule

KINETICS = dict(
    batch_size=64, num_frames=32, crop_size=224, lr_steps=[0, 94, 154, 196], max_epoch=239
)


def _opt(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def _reference_lr(s, base_lr, warmup_epochs, warmup_start, e):
    # SlowFast lr_policy.get_lr_at_epoch, steps_with_relative_lrs, written out again.
    steps = [*s.lr_boundaries, s.max_epoch]

    def f(ep):
        ind = next((i for i, st in enumerate(steps) if ep < st), len(steps) - 1)
        return s.lr_factors[ind - 1] * base_lr

    if e < warmup_epochs:
        return e * (f(warmup_epochs) - warmup_start) / warmup_epochs + warmup_start
    return f(e)


def test_is_a_torch_lr_scheduler_and_matches_reference():
    s = MultigridSchedule(**KINETICS)
    opt = _opt()
    sched = MultigridLR(opt, s, base_lr=0.1, warmup_epochs=34.0, warmup_start_lr=0.01)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    for e in [0.0, 0.5, 10.25, 33.9, 34.0, 72.99, 73.0, 150.5, 330.0, 343.0, 357.9]:
        opt.step()
        sched.step(e)
        assert opt.param_groups[0]["lr"] == pytest.approx(
            _reference_lr(s, 0.1, 34.0, 0.01, e), rel=1e-9
        )
        assert sched.get_last_lr() == [opt.param_groups[0]["lr"]]


def test_argumentless_step_uses_iters_per_epoch():
    s = MultigridSchedule(8, 16, 32, [0, 12, 18], 24)
    opt = _opt()
    sched = MultigridLR(opt, s, iters_per_epoch=4)
    for _ in range(4 * 10):  # 10 epochs of 4 iterations
        opt.step()
        sched.step()
    assert sched.epoch == pytest.approx(10.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * s.lr_factor_at(10.0))
    sched.set_iters_per_epoch(2)
    opt.step()
    sched.step()
    assert sched.epoch == pytest.approx(10.5)


def test_state_dict_round_trip_mid_phase():
    s = MultigridSchedule(**KINETICS)
    opt = _opt(0.2)
    sched = MultigridLR(opt, s, warmup_epochs=2.0, warmup_start_lr=0.02, iters_per_epoch=7)
    for e in (0.3, 1.2, 80.4):
        opt.step()
        sched.step(e)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    opt2 = _opt(0.5)
    sched2 = MultigridLR(opt2, s)
    sched2.load_state_dict(torch.load(buf, weights_only=True))
    assert sched2.epoch == pytest.approx(80.4)
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    for _ in range(30):
        opt.step(), opt2.step()
        sched.step(), sched2.step()
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    other = MultigridLR(_opt(), MultigridSchedule(**KINETICS, short_cycle=False))
    with pytest.raises(ValueError, match="another multigrid schedule"):
        other.load_state_dict(sched.state_dict())


def test_param_groups_keep_their_ratio():
    s = MultigridSchedule(8, 16, 32, [0, 12, 18], 24)
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 0.1}, {"params": [p2], "lr": 0.01}])
    sched = MultigridLR(opt, s)
    opt.step()
    sched.step(22.0)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] / lrs[1] == pytest.approx(10.0)
    assert lrs[0] == pytest.approx(0.1 * s.lr_factor_at(22.0))
