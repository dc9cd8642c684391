"""`DemoReport`: what a `trainforge demo` measured, as a table, JSON and (optionally) a plot."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainforge_core._optional import is_installed

Better = Literal["lower", "higher", "none"]
_BETTER: tuple[str, ...] = ("lower", "higher", "none")


@dataclass(frozen=True)
class MetricRow:
    """One measured quantity for the baseline and for the technique."""

    metric: str
    baseline: float | None
    technique: float | None
    unit: str = ""
    better: Better = "lower"

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("MetricRow.metric must be a non-empty string")
        if self.better not in _BETTER:
            raise ValueError(f"MetricRow.better must be one of {_BETTER}, got {self.better!r}")
        for name in ("baseline", "technique"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, int | float):
                raise TypeError(f"MetricRow.{name} must be a number or None, got {value!r}")

    @property
    def technique_wins(self) -> bool | None:
        """Whether the technique is better on this metric (None when undecidable)."""
        if self.baseline is None or self.technique is None or self.better == "none":
            return None
        if self.better == "lower":
            return self.technique < self.baseline
        return self.technique > self.baseline


@dataclass(frozen=True)
class Curve:
    """A named series on one panel of the demo's plot (x: steps or tokens)."""

    label: str
    x: list[float]
    y: list[float]
    panel: str = "loss"
    xlabel: str = "step"


@dataclass
class DemoReport:
    """What a technique's demo measured.

    ``rows`` compare a baseline with the technique; ``claim`` is the paper's claim in one
    sentence; ``notes`` say how the numbers were obtained. Curves (optional) become a PNG
    when matplotlib is installed.
    """

    slug: str
    claim: str
    baseline_name: str = "baseline"
    technique_name: str = "technique"
    rows: list[MetricRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        metric: str,
        baseline: float | None,
        technique: float | None,
        unit: str = "",
        better: Better = "lower",
    ) -> MetricRow:
        """Append a row and return it."""
        row = MetricRow(metric, _num(baseline), _num(technique), unit, better)
        self.rows.append(row)
        return row

    def add_curve(
        self,
        label: str,
        x: Sequence[float],
        y: Sequence[float],
        panel: str = "loss",
        xlabel: str = "step",
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"curve {label!r}: x has {len(x)} points but y has {len(y)}")
        self.curves.append(
            Curve(label, [float(v) for v in x], [float(v) for v in y], panel, xlabel)
        )

    # -- presentation -------------------------------------------------------------------
    def table(self) -> str:
        """The rows as an aligned plain-text table."""
        header = ["metric", self.baseline_name, self.technique_name, "unit", "better"]
        body = [
            [r.metric, _fmt(r.baseline), _fmt(r.technique), r.unit, r.better] for r in self.rows
        ]
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=False)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        parts = [f"trainforge demo {self.slug}", f"paper claims: {self.claim}", "", self.table()]
        if self.notes:
            parts += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["environment"] = environment()
        return data

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write ``report.json`` (and ``curves.png`` when there are curves and matplotlib is
        installed) into ``out_dir``; return the written paths."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out_dir={str(out)!r} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "report.json"]
        written[0].write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n")
        if self.curves and is_installed("matplotlib"):
            written.append(self._plot(out / "curves.png"))
        return written

    def _plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = list(dict.fromkeys(c.panel for c in self.curves))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, panel in zip(axes[0], panels, strict=True):
            for curve in (c for c in self.curves if c.panel == panel):
                ax.plot(curve.x, curve.y, label=curve.label)
                ax.set_xlabel(curve.xlabel)
            ax.set_ylabel(panel)
            ax.set_title(f"{self.slug}: {panel}")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def environment() -> dict[str, str]:
    """Versions and machine facts recorded with every report."""
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "threads": str(torch.get_num_threads()),
    }
    if is_installed("transformers"):
        import transformers

        env["transformers"] = transformers.__version__
    return env


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if not isinstance(value, int | float):
        raise TypeError(f"metric values must be numbers or None, got {value!r}")
    return float(value)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"
