"""The test matrix. `uv run nox` runs every default session; members are discovered from
the workspace (root pyproject `[tool.uv.workspace] members`), so adding a package needs no
edit here. Each suite runs once; each session proves one thing:

- lint: ruff check + format check.
- release_check: versions, changelog heads, internal version ranges and the README
  catalogue agree with the workspace.
- tests_alone: each member alone, installed from the lock with only its own declared
  dependencies and its `test` group into its own venv, so an undeclared dependency fails;
  its conformance test runs the quick demo. Two members at a time, one thread each: a
  suite is mostly process start-up, imports and small tensors, one core's worth.
  `tests(package)` runs one member the same way (not a default session).
- tests_all: every member installed together (a resolution or import conflict fails) and
  integration_tests/ (cross-package combinations, the CLI as a user runs it).
- distributed: the multi-process tests (marker `distributed`, files
  tests/test_*distributed*.py) of every member: ranks spawned on gloo over loopback by
  `trainforge_core.distributed.run_on_ranks`.
- kernels_interpret: the Triton kernels against their torch references on CPU
  (TRITON_INTERPRET=1).
- wheels: build every member without workspace sources, install each technique from the
  wheels alone into a clean venv, import it and load its demo through the registry (the
  demos themselves ran in the package sessions).
- docs: build the documentation site with `mkdocs build --strict` and check it (every
  public name documented and on its API page, README links resolve); `-- serve` serves it.
Optional: typecheck(package), gpu, new (the scaffold for a new technique).

Derived data (the KJV tokenizer, token ids) is cached once for the whole run under
.nox/_trainforge_cache (TRAINFORGE_CACHE), shared by every session and subprocess. A table of
session times is printed at the end of every run.
"""

from __future__ import annotations

import atexit
import functools
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "tools"))
import new_technique  # noqa: E402  (the scaffold; stdlib only)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXCLUDE_NEWER = PYPROJECT["tool"]["uv"]["exclude-newer"]

# With PYTHONDONTWRITEBYTECODE set (some shells and CI images set it), every process would
# recompile transformers and torch from source on import (about 30 s each); let the session
# venvs keep their bytecode.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# One warm cache of derived data (tokenizer, token ids) for every session of the run.
os.environ.setdefault("TRAINFORGE_CACHE", str(ROOT / ".nox" / "_trainforge_cache"))

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = [
    "lint",
    "release_check",
    "tests_alone",
    "tests_all",
    "distributed",
    "kernels_interpret",
    "wheels",
    "docs",
]


def _members() -> dict[str, Path]:
    """Distribution name -> folder, for every workspace member."""
    found = {}
    for pattern in PYPROJECT["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(glob.glob(str(ROOT / pattern))):
            pyproject = Path(folder) / "pyproject.toml"
            if pyproject.exists():
                found[tomllib.loads(pyproject.read_text())["project"]["name"]] = Path(folder)
    return found


MEMBERS = _members()
TECHNIQUES = {name: path for name, path in MEMBERS.items() if path.parent.name == "packages"}


SESSION_TIMES: dict[str, float] = {}
ALONE_TIMES: dict[str, float] = {}  # each member's suite inside tests_alone (they overlap)


def _timed(fn):
    """Record how long the session took; the table is printed when nox exits."""

    @functools.wraps(fn)
    def wrapper(session: nox.Session, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(session, *args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            SESSION_TIMES[session.name] = elapsed
            session.log(f"session time: {elapsed:.1f}s")

    return wrapper


# Sessions whose work grows with the number of packages (besides each package's own).
SCALING_SESSIONS = ("tests_all", "distributed", "wheels", "docs")


def _print_session_times() -> None:
    """The CI budget, in every log: each session's time, and a projection to 42 techniques.

    The projection scales the techniques' share of tests_alone and the whole of every
    scaling session linearly with the technique count (an overestimate: those sessions also
    have a fixed start-up cost); lint, release_check, core, kernels and kernels_interpret
    stay fixed.
    """
    if not SESSION_TIMES:
        return
    total = sum(SESSION_TIMES.values())
    lines = ["", "session times (s)"]
    for name, t in SESSION_TIMES.items():
        lines.append(f"  {name:<48} {t:7.1f}")
        if name == "tests_alone":
            lines += [f"    {member:<46} {t:7.1f}" for member, t in ALONE_TIMES.items()]
    lines.append(f"  {'total':<48} {total:7.1f}")
    if all(n in SESSION_TIMES for n in ("tests_alone", *SCALING_SESSIONS)):
        # tests_alone runs members side by side: the techniques' share of its wall time is
        # their share of the summed suite times.
        techniques = sum(ALONE_TIMES[n] for n in TECHNIQUES) / sum(ALONE_TIMES.values())
        scaling = SESSION_TIMES["tests_alone"] * techniques
        scaling += sum(SESSION_TIMES[n] for n in SCALING_SESSIONS)
        per_technique = scaling / len(TECHNIQUES)
        projected = total - scaling + 42 * per_technique
        lines.append(
            f"  {per_technique:.1f}s per technique over {len(TECHNIQUES)} techniques; "
            f"projected for 42: {projected / 60:.1f} min (goal 30)"
        )
    print("\n".join(lines), flush=True)


atexit.register(_print_session_times)


def _sync(session: nox.Session, *args: str) -> None:
    """`uv sync --frozen` into this session's venv (the lock is made by `uv run nox`)."""
    session.run_install(
        "uv",
        "sync",
        "--frozen",
        "--quiet",
        "--no-default-groups",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


def _pytest_exit_ok(session: nox.Session, *args: str, **kwargs) -> None:
    # pytest exits 5 when it collects nothing (e.g. every test is GPU-only).
    session.run("pytest", *args, success_codes=[0, 5], **kwargs)


@nox.session
@_timed
def lint(session: nox.Session) -> None:
    _sync(session, "--only-group", "dev")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _alone_pytest_args(name: str) -> list[str]:
    # --durations reports the slowest tests (the quick demo among them); nothing is timed.
    tests = str(MEMBERS[name].relative_to(ROOT) / "tests")
    return [tests, "-q", "--durations=3", "-m", "not distributed"]


@nox.session
@nox.parametrize("package", list(MEMBERS))
@_timed
def tests(session: nox.Session, package: str) -> None:
    """One member alone (what tests_alone does for every member)."""
    _sync(session, "--package", package, "--group", "test")
    _pytest_exit_ok(session, *_alone_pytest_args(package), *session.posargs)


@nox.session(venv_backend="none")
@_timed
def tests_alone(session: nox.Session) -> None:
    # Each member in its own venv under .nox/alone/, two suites at a time.
    def run_alone(name: str) -> tuple[str, float, subprocess.CompletedProcess[str]]:
        venv = ROOT / ".nox" / "alone" / name
        env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "OMP_NUM_THREADS": "1"}
        sync = ["uv", "sync", "--frozen", "--quiet", "--no-default-groups"]
        pytest = [str(venv / "bin" / "python"), "-m", "pytest", *_alone_pytest_args(name)]
        script = f"{shlex.join([*sync, '--package', name, '--group', 'test'])} && "
        script += f"{shlex.join(pytest)} {shlex.join(session.posargs)}"
        start = time.perf_counter()
        proc = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
        )
        return name, time.perf_counter() - start, proc

    # Largest suites first, so the last one to finish is a short one.
    order = sorted(MEMBERS, key=lambda n: -sum(f.stat().st_size for f in _test_files(n)))
    failed = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, elapsed, proc in pool.map(run_alone, order):
            ALONE_TIMES[name] = elapsed
            # pytest exits 5 when it collects nothing (e.g. every test is GPU-only).
            ok = proc.returncode in (0, 5)
            tail = proc.stdout if not ok else "\n".join(proc.stdout.splitlines()[-6:])
            session.log(f"{name} alone: {elapsed:.1f}s\n{tail}{'' if ok else proc.stderr}")
            if not ok:
                failed.append(name)
    if failed:
        session.error(f"suites failed alone: {failed}")


def _test_files(name: str) -> list[Path]:
    return list((MEMBERS[name] / "tests").glob("**/*.py"))


@nox.session
@_timed
def tests_all(session: nox.Session) -> None:
    # The package suites ran alone above; here only what needs every member at once.
    # The dev group brings ruff and nox for the scaffold test.
    _sync(session, "--all-packages", "--group", "test", "--group", "dev")
    session.run("pytest", "integration_tests", "-q", *session.posargs)


@nox.session
@_timed
def distributed(session: nox.Session) -> None:
    # Multi-process tests (marker `distributed`, files tests/test_*distributed*.py): every
    # member installed, ranks spawned on gloo over the loopback address.
    _sync(session, "--all-packages", "--group", "test")
    files = sorted(
        str(f.relative_to(ROOT))
        for path in MEMBERS.values()
        for f in (path / "tests").glob("test_*distributed*.py")
    )
    # Default (prepend) import mode: spawned ranks unpickle test functions by module name,
    # so each test folder must be on sys.path (the files' basenames are unique).
    # --durations: the session's budget is 3 minutes on 2 cores; report, never assert
    _pytest_exit_ok(session, *files, "-q", "--durations=5", "-m", "distributed", *session.posargs)


@nox.session
@_timed
def kernels_interpret(session: nox.Session) -> None:
    _sync(session, "--package", "trainforge-kernels", "--group", "test")
    session.run(
        "pytest",
        "kernels/tests",
        "-q",
        *session.posargs,
        env={"TRITON_INTERPRET": "1", "TRAINFORGE_REQUIRE_INTERPRETER": "1"},
    )


@nox.session
@_timed
def wheels(session: nox.Session) -> None:
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run(
        "uv", "build", "--all-packages", "--no-sources", "-o", str(dist), "-q", external=True
    )

    def wheel(name: str) -> str:
        (path,) = dist.glob(name.replace("-", "_") + "-*.whl")
        return str(path)

    base = [wheel("trainforge-core"), wheel("trainforge-kernels")]
    tmp = Path(session.create_tmp())
    # The wheel carries its metadata (technique.toml), its import chain and its demo module;
    # the demo itself already ran in the package's own session.
    check = (
        "import sys, trainforge_core as c; from trainforge_core.cli import main; "
        "assert main(['info', sys.argv[1]]) == 0; t = c.get_technique(sys.argv[1]); "
        "print(t.slug, t.version, 'demo', t.demo.__module__)"
    )

    def check_alone(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        """A clean venv with core, kernels and this technique from the wheels only
        (third-party dependencies resolve as a user's pip would, pinned by the date)."""
        slug = name.removeprefix("trainforge-")
        venv = tmp / f"wheel-{slug}"
        shutil.rmtree(venv, ignore_errors=True)
        python = str(venv / "bin" / "python")
        script = (
            f"uv venv -q {venv} && uv pip install -q --python {python} "
            f"--exclude-newer {EXCLUDE_NEWER} {' '.join(base)} {wheel(name)} && "
            f"{python} -c {shlex.quote(check)} {slug}"
        )
        return name, subprocess.run(["bash", "-c", script], capture_output=True, text=True)

    # Two at a time: each check is mostly process start-up and imports, one core each.
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        results = list(pool.map(check_alone, TECHNIQUES))
    failed = []
    for name, proc in results:
        session.log(f"{name}: {proc.stdout.strip() or proc.stderr.strip()[-300:]}")
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stdout, proc.stderr, sep="\n")
    if failed:
        session.error(f"wheel check failed for {failed}")


@nox.session
@_timed
def docs(session: nox.Session) -> None:
    _sync(session, "--all-packages", "--group", "docs", "--group", "test")
    # MkDocs 1.x plugins print a banner about MkDocs 2 on every build; it is not ours.
    env = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    if session.posargs and session.posargs[0] == "serve":
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
        return
    site = ROOT / "site"
    session.run("mkdocs", "build", "--strict", "--quiet", "-d", str(site), env=env)
    session.run("pytest", "docs/tests", "-q", env={"TRAINFORGE_SITE_DIR": str(site)})


@nox.session(venv_backend="none")
@_timed
def release_check(session: nox.Session) -> None:
    from packaging.requirements import Requirement

    versions = {
        n: tomllib.loads((p / "pyproject.toml").read_text())["project"]["version"]
        for n, p in MEMBERS.items()
    }
    problems = []
    for name, path in MEMBERS.items():
        project = tomllib.loads((path / "pyproject.toml").read_text())["project"]
        changelog = path / "CHANGELOG.md"
        heads = (
            re.findall(r"^## \[([^\]]+)\]", changelog.read_text(), re.M)
            if changelog.exists()
            else []
        )
        released = [h for h in heads if h.lower() != "unreleased"]
        if not released or released[0] != versions[name]:
            problems.append(
                f"{name}: version {versions[name]} is not the top CHANGELOG entry "
                f"({released[0] if released else 'none'})"
            )
        for text in project.get("dependencies", []):
            req = Requirement(text)
            if req.name in versions and not req.specifier.contains(versions[req.name]):
                problems.append(f"{name}: requires {req} but {req.name} is {versions[req.name]}")
        for text in ("readme", "license", "requires-python", "description"):
            if text not in project:
                problems.append(f"{name}: pyproject has no {text!r}")
    problems += _catalogue_problems()
    root_deps = {Requirement(d).name for d in PYPROJECT["project"]["dependencies"]}
    sources = PYPROJECT["tool"]["uv"].get("sources", {})
    for name in MEMBERS:
        if name not in root_deps:
            problems.append(f"root pyproject: {name} is not in dependencies (`uv run trainforge`)")
        if sources.get(name) != {"workspace": True}:
            problems.append(f"root pyproject: {name} is not a {{ workspace = true }} source")
    for problem in problems:
        session.warn(problem)
    if problems:
        session.error(f"{len(problems)} release problem(s)")
    session.log(
        f"{len(MEMBERS)} members consistent: " + ", ".join(f"{n} {v}" for n, v in versions.items())
    )


def _catalogue_problems() -> list[str]:
    """The README catalogue agrees with the workspace: a row is `available` (linked to its
    method card) exactly when packages/<slug> is a member, and every member has a row."""
    rows = new_technique.catalogue_rows((ROOT / "README.md").read_text())
    slugs = {name.removeprefix("trainforge-") for name in TECHNIQUES}
    problems = []
    for slug in sorted(slugs - set(rows)):
        problems.append(f"README catalogue: no row for workspace member {slug!r}")
    for slug, row in rows.items():
        if slug in slugs and row["status"] != "available":
            problems.append(f"README catalogue: {slug!r} is a member but its row says planned")
        if slug in slugs and row["link"] != f"packages/{slug}/README.md":
            problems.append(f"README catalogue: {slug!r} row does not link its method card")
        if slug not in slugs and row["status"] == "available":
            problems.append(f"README catalogue: {slug!r} says available but is not a member")
    return problems


@nox.session(venv_backend="none", default=False)
def new(session: nox.Session) -> None:
    """Scaffold a technique: `uv run nox -s new -- <slug> "<paper title>" <arxiv id>`."""
    if not session.posargs:
        session.error('usage: uv run nox -s new -- <slug> "<paper title>" <arxiv id>')
    session.run("python", str(ROOT / "tools" / "new_technique.py"), *session.posargs)


@nox.session(default=False)
@nox.parametrize("package", list(MEMBERS))
@_timed
def typecheck(session: nox.Session, package: str) -> None:
    _sync(session, "--package", package, "--group", "test")
    session.install("mypy")
    session.run("mypy", str(MEMBERS[package].relative_to(ROOT) / "src"))


@nox.session(default=False)
@_timed
def gpu(session: nox.Session) -> None:
    _sync(session, "--all-packages", "--group", "test")
    test_dirs = [str(p.relative_to(ROOT) / "tests") for p in MEMBERS.values()]
    session.run(
        "pytest", *test_dirs, "--import-mode=importlib", "-m", "gpu", "-q", *session.posargs
    )
