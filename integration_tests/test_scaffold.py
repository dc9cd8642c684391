"""The scaffold (`uv run nox -s new -- <slug> "<title>" <arxiv>`) writes a package that passes
lint and release_check as it stands, and whose tests and demo fail until written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import new_technique  # noqa: E402


def _copy_tracked_tree(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for rel in filter(None, files):
        source = ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    return dest


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    root = _copy_tracked_tree(tmp_path_factory.mktemp("workspace"))
    # A slug no one will take: not in the catalogue, so the row is appended.
    new_technique.scaffold(root, "scaffold-probe", "A Probe Paper", "2401.00001", "A. Author")
    return root


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_skeleton_has_the_conventions_layout(scaffolded):
    pkg = scaffolded / "packages" / "scaffold-probe"
    for rel in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "src/trainforge_scaffold_probe/__init__.py",
        "src/trainforge_scaffold_probe/py.typed",
        "src/trainforge_scaffold_probe/technique.toml",
        "src/trainforge_scaffold_probe/demo.py",
        "tests/test_scaffold_probe_conformance.py",
        "tests/test_scaffold_probe_bad_input.py",
        "benchmarks/README.md",
    ):
        assert (pkg / rel).is_file(), rel
    project = tomllib.loads((pkg / "pyproject.toml").read_text())
    assert project["project"]["name"] == "trainforge-scaffold-probe"
    assert "test" in project["dependency-groups"]
    entry = project["project"]["entry-points"]["trainforge.techniques"]
    assert entry == {"scaffold-probe": "trainforge_scaffold_probe.demo:TECHNIQUE"}
    headings = [ln for ln in (pkg / "README.md").read_text().splitlines() if ln.startswith("## ")]
    assert headings[0] == "## The paper" and headings[-1] == "## API reference"
    root = tomllib.loads((scaffolded / "pyproject.toml").read_text())
    assert "trainforge-scaffold-probe" in root["project"]["dependencies"]
    assert root["tool"]["uv"]["sources"]["trainforge-scaffold-probe"] == {"workspace": True}
    row = new_technique.catalogue_rows((scaffolded / "README.md").read_text())["scaffold-probe"]
    assert row["status"] == "available"


def test_skeleton_passes_lint_and_release_check(scaffolded):
    for args in (("check", "."), ("format", "--check", ".")):
        proc = _run(sys.executable, "-m", "ruff", *args, cwd=scaffolded)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run(sys.executable, "-m", "nox", "-s", "release_check", cwd=scaffolded)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_skeleton_tests_fail_until_written(scaffolded):
    tests = (
        scaffolded / "packages" / "scaffold-probe" / "tests" / "test_scaffold_probe_bad_input.py"
    )
    proc = _run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests), cwd=scaffolded
    )
    assert proc.returncode == 1 and "write a bad-input test" in proc.stdout
    demo = (
        scaffolded / "packages/scaffold-probe/src/trainforge_scaffold_probe/demo.py"
    ).read_text()
    assert "raise NotImplementedError" in demo


@pytest.mark.parametrize(
    ("slug", "arxiv", "match"),
    [
        ("Bad Slug", "2401.00001", "slug"),
        ("ok", "24-01", "arxiv"),
        ("gstack", "2401.00001", "exists"),
    ],
)
def test_scaffold_refuses_bad_input(scaffolded, slug, arxiv, match):
    with pytest.raises(SystemExit, match=match):
        new_technique.scaffold(scaffolded, slug, "T", arxiv, None)
