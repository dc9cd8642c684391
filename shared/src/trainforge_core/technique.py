"""`Technique`: a package's metadata and its demo, as the registry and CLI see it."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from trainforge_core.report import DemoReport

METADATA_FILE = "technique.toml"

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


def _check_metadata(slug: str, title: str, summary: str) -> None:
    if not _SLUG.match(slug):
        raise ValueError(f"Technique.slug must be lowercase words joined by '-', got {slug!r}")
    if not title or not summary:
        raise ValueError(f"Technique {slug!r}: title and summary must be non-empty")


def _installed_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class TechniqueInfo:
    """A technique's metadata, read from its package's ``technique.toml`` without importing
    the package (so `trainforge list` and `info` need neither torch nor the technique).

    ``run_demo`` and ``load`` import the technique through its entry point when asked.
    """

    slug: str
    title: str
    summary: str
    paper: Paper
    distribution: str
    entry_point: str = ""  # "module:attribute" of the full Technique

    def __post_init__(self) -> None:
        _check_metadata(self.slug, self.title, self.summary)

    @property
    def version(self) -> str:
        """The installed version of the distribution that provides this technique."""
        return _installed_version(self.distribution)

    def load(self) -> Technique:
        """Import the technique (its demo and everything the demo needs)."""
        if not self.entry_point:
            raise ValueError(f"technique {self.slug!r} has no entry point to load")
        ep = metadata.EntryPoint(name=self.slug, value=self.entry_point, group="")
        technique = ep.load()
        if not isinstance(technique, Technique):
            raise TypeError(f"{self.entry_point!r} is a {type(technique).__name__}, not Technique")
        return technique

    def run_demo(
        self, quick: bool = False, out_dir: str | Path | None = None, seed: int = 0
    ) -> DemoReport:
        return self.load().run_demo(quick=quick, out_dir=out_dir, seed=seed)


def package_dir(package: str) -> Path:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"cannot locate package {package!r}: {exc}") from exc
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package!r} is not an installed package (no folder found)")
    return Path(next(iter(spec.submodule_search_locations)))


def read_technique_metadata(package: str, entry_point: str = "") -> TechniqueInfo:
    """The :class:`TechniqueInfo` in ``<package>/technique.toml``.

    The file is the one source of a technique's slug, title, summary and paper: the
    package's demo builds its :class:`Technique` from it (:meth:`Technique.from_package`),
    and the registry reads it without importing the package.
    """
    path = package_dir(package) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{package!r} has no {METADATA_FILE} (looked at {path})")
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        paper = Paper(**data.pop("paper"))
        return TechniqueInfo(paper=paper, entry_point=entry_point, **data)
    except (KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: malformed technique metadata ({exc})") from exc


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
        _check_metadata(self.slug, self.title, self.summary)
        if not callable(self.demo):
            raise TypeError(f"Technique {self.slug!r}: demo must be callable")

    @classmethod
    def from_package(cls, package: str, demo: DemoFn) -> Technique:
        """The technique described by ``<package>/technique.toml``, with its demo."""
        info = read_technique_metadata(package)
        return cls(info.slug, info.title, info.summary, info.paper, demo, info.distribution)

    @property
    def version(self) -> str:
        """The installed version of the distribution that provides this technique."""
        return _installed_version(self.distribution)

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
