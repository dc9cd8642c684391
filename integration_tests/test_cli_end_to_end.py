"""The `trainforge` command as a user runs it, in a subprocess, over every installed
technique; every technique imported together in one process. Each quick demo already ran in
its package's own session; here one demo runs end to end through the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from trainforge_core import available_techniques, get_technique
from trainforge_core.testing import check_technique

SLUGS = list(available_techniques())
TRAINFORGE = shutil.which("trainforge") or "trainforge"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run([TRAINFORGE, *args], capture_output=True, text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"trainforge {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
        )
    return proc


def test_techniques_are_installed():
    assert SLUGS, "tests_all installs every workspace member; no technique was registered"


def test_list_names_every_technique():
    out = run("list").stdout
    for slug in SLUGS:
        assert slug in out


@pytest.mark.parametrize("slug", SLUGS)
def test_info(slug):
    out = run("info", slug).stdout
    assert "arXiv" in out and f"trainforge demo {slug}" in out


def test_list_and_info_import_no_technique_and_no_torch():
    code = (
        "import sys; from trainforge_core.cli import main\n"
        "main(['list']); main(['info', sys.argv[1]])\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "heavy += [m for m in sys.modules if m.startswith('trainforge_')\n"
        "          and m.split('.')[0] != 'trainforge_core']\n"
        "print('IMPORTED', heavy)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, SLUGS[0]], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("IMPORTED []"), proc.stdout[-500:]


def test_every_technique_imports_together():
    # Conflicts between members (a custom op or an Auto class registered twice, a global
    # patched two ways) show up when every technique and its demo load in one process.
    loaded = [get_technique(slug) for slug in SLUGS]
    assert [t.slug for t in loaded] == SLUGS


# One demo end to end through the CLI (the others ran in their own package sessions).
E2E_SLUG = "gstack" if "gstack" in SLUGS else SLUGS[0]


def test_quick_demo_end_to_end(tmp_path):
    slug = E2E_SLUG
    proc = run("demo", slug, "--quick", "--out", str(tmp_path))
    assert proc.stdout.startswith(f"trainforge demo {slug}")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["slug"] == slug and report["rows"]
    for row in report["rows"]:
        for key in ("baseline", "technique"):
            assert row[key] is None or math.isfinite(row[key]), row


@pytest.mark.parametrize("slug", SLUGS)
def test_conformance(slug, tmp_path):
    check_technique(slug, tmp_path, run_demo=False)


def test_doctor():
    out = run("doctor").stdout
    assert "torch" in out and "sophia_update" in out  # rows registered by trainforge-kernels


def test_unknown_slug_exit_code_and_message():
    proc = run("demo", "no-such-technique", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("trainforge: error: unknown technique")
    assert "Traceback" not in proc.stderr


def test_bad_arguments_are_usage_errors():
    proc = run("demo", SLUGS[0] if SLUGS else "x", "--seed", "-1", check=False)
    assert proc.returncode == 2 and "non-negative integer" in proc.stderr


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "trainforge_core.cli", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
