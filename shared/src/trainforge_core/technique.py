"""`Technique`: a package's metadata and its demo, as the registry and CLI see it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from trainforge_core.report import DemoReport

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")


@dataclass(frozen=True)
class Paper:
    """The paper a technique comes from."""

    title: str
    authors: str
    year: int
    arxiv: str

    def __post_init__(self) -> None:
        if not self.title or not self.authors:
            raise ValueError("Paper.title and Paper.authors must be non-empty")
        if not 1990 <= self.year <= 2100:
            raise ValueError(f"Paper.year must be a plausible year, got {self.year!r}")
        if not _ARXIV.match(self.arxiv):
            raise ValueError(f"Paper.arxiv must look like '2210.17323', got {self.arxiv!r}")

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


DemoFn = Callable[[bool, Path | None, int], DemoReport]


@dataclass(frozen=True)
class Technique:
    """What a technique package registers under the ``trainforge.techniques`` entry point.

    ``demo(quick, out_dir, seed)`` runs the miniature experiment and returns a
    :class:`DemoReport`; ``quick=True`` must finish in well under a minute on 2 CPU cores.
    """

    slug: str
    title: str
    summary: str
    paper: Paper
    demo: DemoFn
    distribution: str

    def __post_init__(self) -> None:
        if not _SLUG.match(self.slug):
            raise ValueError(
                f"Technique.slug must be lowercase words joined by '-', got {self.slug!r}"
            )
        if not self.title or not self.summary:
            raise ValueError(f"Technique {self.slug!r}: title and summary must be non-empty")
        if not callable(self.demo):
            raise TypeError(f"Technique {self.slug!r}: demo must be callable")

    @property
    def version(self) -> str:
        """The installed version of the distribution that provides this technique."""
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return "unknown"

    def run_demo(
        self, quick: bool = False, out_dir: str | Path | None = None, seed: int = 0
    ) -> DemoReport:
        """Run the demo with validated arguments; save the report when ``out_dir`` is given."""
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        out = None if out_dir is None else Path(out_dir)
        if out is not None and out.exists() and not out.is_dir():
            raise NotADirectoryError(f"out_dir={str(out)!r} exists and is not a directory")
        report = self.demo(bool(quick), out, seed)
        if not isinstance(report, DemoReport):
            raise TypeError(
                f"demo of {self.slug!r} returned {type(report).__name__}, not DemoReport"
            )
        report.details.setdefault("quick", bool(quick))
        report.details.setdefault("seed", seed)
        if out is not None:
            report.save(out)
        return report
