# ruff: noqa: E501  (the templates below are files whose own lines are up to 100 wide)
"""Scaffold a new technique package exactly as ../shared/CONVENTIONS.md describes.

    uv run nox -s new -- <slug> "<paper title>" <arxiv id> [--authors "A, B"] [--root DIR]

Writes packages/<slug>/ (pyproject with entry point and test group, method-card README
headings, CHANGELOG, py.typed, technique.toml, __init__ with __version__, a demo module
with its Technique, tests/ and benchmarks/), adds the member to the root pyproject and
flips the package's README catalogue row to available.

The skeleton passes lint and release_check but is not a package yet: its demo raises
NotImplementedError and its tests fail until they are written. Standard library only, so
it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
ARXIV = re.compile(r"^(\d{2})(\d{2})\.\d{4,5}$")
REPOSITORY = "https://github.com/trainforge/trainforge"
# A catalogue row: | `slug` | paper | planned | - |  or  | [`slug`](link) | paper | available | ... |
CATALOGUE_ROW = re.compile(
    r"^\| \[?`(?P<slug>[a-z0-9-]+)`(?:\]\((?P<link>[^)]*)\))? \| (?P<paper>.*?) "
    r"\| (?P<status>\w+) \| (?P<install>.*?) \|$"
)


def catalogue_rows(readme_text: str) -> dict[str, dict[str, str]]:
    """The README catalogue table, by slug: paper, status, link and install cell."""
    rows = {}
    for line in readme_text.splitlines():
        match = CATALOGUE_ROW.match(line)
        if match:
            rows[match["slug"]] = match.groupdict()
    return rows


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(text, ensure_ascii=False)


def _files(slug: str, title: str, arxiv: str, authors: str, year: int) -> dict[str, str]:
    module = "trainforge_" + slug.replace("-", "_")
    dist = f"trainforge-{slug}"
    today = datetime.date.today().isoformat()
    return {
        "pyproject.toml": f'''[project]
name = "{dist}"
version = "0.1.0"
description = {_q(f"{title} (arXiv:{arxiv}) for PyTorch.")}
readme = "README.md"
license = "Apache-2.0"
requires-python = ">=3.11"
authors = [{{ name = "trainforge developers" }}]
classifiers = [
    "Development Status :: 3 - Alpha",
    "Intended Audience :: Science/Research",
    "Programming Language :: Python :: 3",
    "Topic :: Scientific/Engineering :: Artificial Intelligence",
    "Typing :: Typed",
]
dependencies = [
    "trainforge-core[plot]>=0.2,<0.3",
    "torch>=2.4",
]

[project.entry-points."trainforge.techniques"]
{slug} = "{module}.demo:TECHNIQUE"

[project.urls]
Homepage = "{REPOSITORY}"
Source = "{REPOSITORY}/tree/main/packages/{slug}"
Paper = "https://arxiv.org/abs/{arxiv}"

[dependency-groups]
test = ["pytest>=8.0"]

[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/{module}"]
''',
        "README.md": f"""# {dist}

**tl;dr** Not written yet: one paragraph on what the technique does and what it buys.

## The paper

{title}. {authors}, {year}. [arXiv:{arxiv}](https://arxiv.org/abs/{arxiv}).

## Install

```bash
pip install {dist}
```

## Usage

## Integration

## Hyper-parameters

## What `trainforge demo {slug}` measured here

## Limits and differences from the reference

## API reference
""",
        "CHANGELOG.md": f"""# Changelog

All notable changes to {dist} are documented here. The format follows
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/); versions follow semantic versioning
(0.x: minor for features or breaking changes, patch for fixes).

## [0.1.0] - {today}

### Added
- Package skeleton.
""",
        f"src/{module}/__init__.py": f'''"""{dist}: {title} (arXiv:{arxiv})."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("{dist}")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
''',
        f"src/{module}/py.typed": "",
        f"src/{module}/technique.toml": f"""# What `trainforge list` / `info` show, read without importing this package; the demo's
# Technique is built from it too (trainforge_core.Technique.from_package).
slug = {_q(slug)}
distribution = {_q(dist)}
title = {_q(title)}
summary = "Not written yet: one sentence on what the technique does and what it buys."

[paper]
title = {_q(title)}
authors = {_q(authors)}
year = {year}
arxiv = {_q(arxiv)}
""",
        f"src/{module}/demo.py": f'''"""`trainforge demo {slug}`: the paper's effect in miniature on real data that ships
offline. Not written yet."""

from __future__ import annotations

from pathlib import Path

from trainforge_core.report import DemoReport
from trainforge_core.technique import Technique


def run_demo(quick: bool, out_dir: Path | None, seed: int) -> DemoReport:
    raise NotImplementedError("trainforge demo {slug} is not written yet")


TECHNIQUE = Technique.from_package("{module}", run_demo)
''',
        f"tests/test_{module.removeprefix('trainforge_')}_conformance.py": f'''from trainforge_core.testing import check_technique


def test_{module.removeprefix("trainforge_")}_conformance(tmp_path):
    check_technique("{slug}", tmp_path)
''',
        f"tests/test_{module.removeprefix('trainforge_')}_bad_input.py": """import pytest


def test_every_public_function_rejects_bad_input():
    pytest.fail("write a bad-input test for every public function")
""",
        "benchmarks/README.md": f"""# Benchmarks of {dist}

One script per measurement, the recipe in its header; results go in the package README.
""",
    }


def _add_member(root: Path, dist: str) -> None:
    """Add ``dist`` to the root pyproject's dependencies and workspace sources."""
    path = root / "pyproject.toml"
    text = path.read_text()
    deps = re.search(r"^dependencies = \[\n(.*?)^\]", text, re.S | re.M)
    if deps is None:
        raise SystemExit("root pyproject.toml has no multi-line dependencies list")
    names = [*re.findall(r'^    "([^"]+)",$', deps[1], re.M), dist]
    core = [n for n in names if not n.startswith("trainforge-") or n in _BASE]
    techniques = sorted(n for n in names if n not in core)
    body = "".join(f'    "{n}",\n' for n in core + techniques)
    text = text[: deps.start(1)] + body + text[deps.end(1) :]
    sources = re.search(r"^\[tool\.uv\.sources\]\n(.*?)(?=^\[|\Z)", text, re.S | re.M)
    if sources is None:
        raise SystemExit("root pyproject.toml has no [tool.uv.sources] table")
    lines = [ln for ln in sources[1].splitlines() if ln.strip()]
    lines.append(f"{dist} = {{ workspace = true }}")
    base = [ln for ln in lines if ln.split(" ")[0] in _BASE]
    rest = sorted(set(lines) - set(base))
    text = text[: sources.start(1)] + "\n".join(base + rest) + "\n\n" + text[sources.end(1) :]
    path.write_text(text.rstrip("\n") + "\n")


_BASE = ("trainforge-core[all]", "trainforge-core", "trainforge-kernels")


def _flip_catalogue_row(root: Path, slug: str, title: str) -> None:
    path = root / "README.md"
    text = path.read_text()
    dist = f"trainforge-{slug}"
    row = (
        f"| [`{slug}`](packages/{slug}/README.md) | {{paper}} | available | `pip install {dist}` |"
    )
    rows = catalogue_rows(text)
    if slug in rows:
        old = next(ln for ln in text.splitlines() if ln.startswith(f"| `{slug}` |"))
        text = text.replace(old, row.format(paper=rows[slug]["paper"]))
    else:
        last = [ln for ln in text.splitlines() if CATALOGUE_ROW.match(ln)][-1]
        text = text.replace(last, last + "\n" + row.format(paper=title))
    path.write_text(text)


def scaffold(root: Path, slug: str, title: str, arxiv: str, authors: str | None) -> Path:
    if not SLUG.match(slug):
        raise SystemExit(f"slug must be lowercase words joined by '-', got {slug!r}")
    match = ARXIV.match(arxiv)
    if match is None:
        raise SystemExit(f"arxiv id must look like 2210.17323, got {arxiv!r}")
    if not title.strip():
        raise SystemExit("the paper title must be non-empty")
    target = root / "packages" / slug
    if target.exists():
        raise SystemExit(f"{target} exists already")
    rows = catalogue_rows((root / "README.md").read_text())
    if slug in rows and rows[slug]["status"] == "available":
        raise SystemExit(f"the README catalogue lists {slug!r} as available already")
    year = 2000 + int(match[1])
    authors = authors or f"see arXiv:{arxiv}"
    for rel, content in _files(slug, title.strip(), arxiv, authors, year).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    _add_member(root, f"trainforge-{slug}")
    _flip_catalogue_row(root, slug, title.strip())
    tomllib.loads((root / "pyproject.toml").read_text())  # still valid TOML
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s new --", description=__doc__.split("\n\n")[0])
    parser.add_argument("slug", help="the README catalogue's slug, e.g. ul2")
    parser.add_argument("title", help="the paper's title")
    parser.add_argument("arxiv", help="the paper's arXiv id, e.g. 2205.05131")
    parser.add_argument("--authors", default=None, help="the paper's authors, comma separated")
    parser.add_argument("--root", type=Path, default=ROOT, help="the workspace root")
    args = parser.parse_args(argv)
    target = scaffold(args.root.resolve(), args.slug, args.title, args.arxiv, args.authors)
    print(f"wrote {target}; next: write the technique, its tests and demo, then `uv sync`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
