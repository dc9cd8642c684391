"""MultigridSchedule against the Kinetics golden values and hand-derived tables."""

from __future__ import annotations

import math

import pytest

from trainforge_multigrid_video import MultigridSchedule

KINETICS = dict(
    batch_size=64, num_frames=32, crop_size=224, lr_steps=[0, 94, 154, 196], max_epoch=239
)
# configs/Kinetics/SLOWFAST_8x8_R50_stepwise_multigrid.yaml; ends as printed in SlowFast #231.
KINETICS_ENDS = [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
KINETICS_SHAPES = [(8, 8, 158), (4, 16, 158), (2, 16, 224), (1, 32, 224)] * 3 + [(1, 32, 224)]
KINETICS_LRS = [8, 4, 2, 1, 0.8, 0.4, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01, 0.01, 0.001]


def test_kinetics_golden_schedule():
    s = MultigridSchedule(**KINETICS)
    assert [p.end for p in s.phases] == KINETICS_ENDS
    assert [(p.batch_mult, p.num_frames, p.crop) for p in s.phases] == KINETICS_SHAPES
    assert [p.stage for p in s.phases] == [0] * 4 + [1] * 4 + [2] * 4 + [3]
    assert s.max_epoch == 358
    assert len(s.lr_factors) == 14
    assert s.lr_factors == pytest.approx(KINETICS_LRS, rel=1e-12)
    # The final phase [329, 358) is split at its midpoint (329 + 358) // 2 = 343.
    assert s.lr_boundaries == [0, *KINETICS_ENDS[:-1], 343]
    # Phases are contiguous.
    assert all(a.end == b.start for a, b in zip(s.phases, s.phases[1:], strict=False))


def test_kinetics_iteration_saving_matches_spec():
    # CALIBRATED in the spec: 69.8 baseline-epoch iterations against 239.
    s = MultigridSchedule(**KINETICS)
    assert s.total_iterations_relative == pytest.approx(69.8, abs=0.1)


def test_long_cycle_only_table():
    # Spec (d)1: a = [8, 4, 2, 1], r = 3.75; the reference crashes here (IndexError).
    s = MultigridSchedule(**KINETICS, short_cycle=False)
    assert [p.end for p in s.phases] == [
        87,
        130,
        152,
        162,
        218,
        245,
        259,
        266,
        305,
        324,
        334,
        339,
        358,
    ]
    assert [p.batch_mult for p in s.phases] == [8, 4, 2, 1] * 3 + [1]
    assert s.short_cycle_crops(0) == [(512, 158)]


def test_long_cycle_epoch_split_independent_recompute():
    """Recompute the epoch split from the paper's description in float64 (independent of
    the implementation's loop) for a small schedule."""
    B, T, S, steps, E, ef = 8, 16, 32, [0, 12, 18], 24, 1.5
    s = MultigridSchedule(B, T, S, steps, E, short_cycle=False, epoch_factor=ef)
    mult = [
        round(T * S * S / (round(T * t) * round(S * f) ** 2))
        for t, f in [(0.25, 0.5**0.5), (0.5, 0.5**0.5), (0.5, 1), (1, 1)]
    ]
    raw = []
    for k in range(len(steps) - 1):
        d = steps[k + 1] - steps[k]
        raw += [d * m / sum(mult) for m in mult]
    iters = sum(r / m for r, m in zip(raw, mult * 2, strict=True))
    ft = (E - steps[-1]) / (steps[-1] / iters) * mult[-1]
    raw.append(ft)
    x = E * ef / sum(raw)
    ends = [round(sum(raw[: i + 1]) * x) for i in range(len(raw))]
    assert [p.end for p in s.phases] == ends


def test_short_cycle_only_scales_steps():
    s = MultigridSchedule(**KINETICS, long_cycle=False)
    assert s.lr_boundaries == [0, 141, 231, 294]
    assert s.max_epoch == int(239 * 1.5)
    assert s.lr_factors == pytest.approx([1, 0.1, 0.01, 0.001])
    assert s.shape_at(100) == (64, 32, 224)
    assert s.short_cycle_crops(0) == [(256, 112), (128, 158), (64, 224)]


def test_neither_cycle_is_the_baseline():
    s = MultigridSchedule(**KINETICS, long_cycle=False, short_cycle=False)
    assert s.lr_boundaries == [0, 94, 154, 196] and s.max_epoch == 239
    assert s.lr_factor_at(100) == pytest.approx(0.1)


def test_lr_factor_inside_phases_and_final_split():
    s = MultigridSchedule(**KINETICS)
    for p in s.phases[:-1]:
        for e in (p.start, (p.start + p.end) / 2, p.end - 1e-6):
            if p.epochs:
                assert s.lr_factor_at(e) == pytest.approx(0.1**p.stage * p.batch_mult)
    assert s.lr_factor_at(342.99) == pytest.approx(0.01)
    assert s.lr_factor_at(343) == pytest.approx(0.001)
    assert s.lr_factor_at(1000) == pytest.approx(0.001)


def test_shapes_bn_splits_and_rates():
    s = MultigridSchedule(**KINETICS, world_size=8)
    assert s.shape_at(0) == (512, 8, 158)
    assert s.bn_splits_at(0) == 8  # 512 / 8 GPUs / 8
    assert s.bn_splits_at(150) == 1  # 64 / 8 / 8
    assert s.sync_devices_at(150) == 1
    s1 = MultigridSchedule(**KINETICS, world_size=16)
    assert s1.sync_devices_at(150) == 2 and s1.bn_splits_at(150) == 1
    assert s.sampling_rate_range(0, 2) == (2, 8)  # T 32 -> 8: stride up to 4x
    assert s.sampling_rate_range(80, 2) == (2, 4)
    assert s.sampling_rate_range(150, 2) == (2, 2)


def test_constant_flops_per_iteration_across_phases():
    s = MultigridSchedule(**KINETICS)
    for p in s.phases:
        for b, c in s.short_cycle_crops(p.start):
            rel = b * p.num_frames * c * c / (64 * 32 * 224 * 224)
            assert rel == pytest.approx(1.0, abs=0.03), (p, b, c)


def test_eval_epochs_counted_back_from_phase_end():
    s = MultigridSchedule(**KINETICS)
    # Phase [0, 73): period 73 // 3 + 1 = 25 -> 72, 47, 22.
    evals = [e for e in range(73) if s.is_eval_epoch(e)]
    assert evals == [22, 47, 72]
    # Phase [110, 142): 32 // 3 + 1 = 11 -> 141, 130, 119.
    assert [e for e in range(110, 142) if s.is_eval_epoch(e)] == [119, 130, 141]
    assert s.is_eval_epoch(357)


def test_spatial_only_mode_for_images():
    s = MultigridSchedule(128, 1, 224, [0, 30, 60, 80], 90, temporal=False)
    assert {p.num_frames for p in s.phases} == {1}
    assert [(p.batch_mult, p.crop) for p in s.phases[:3]] == [(4, 112), (2, 158), (1, 224)]
    assert s.max_epoch == pytest.approx(135, abs=1)
    # Short-cycle crops never exceed the long-cycle crop.
    for p in s.phases:
        assert all(c <= p.crop for _, c in s.short_cycle_crops(p.start))
    assert s.total_iterations_relative < 90


def test_schedule_lr_factor_matches_gamma_power():
    s = MultigridSchedule(**KINETICS, gamma=0.5)
    assert s.lr_factors[4] == pytest.approx(0.5 * 8)
    assert math.isclose(s.lr_factors[-1], 0.5**3)
