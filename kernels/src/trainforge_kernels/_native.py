"""Small C loops for CPU paths, built once per machine with the system C compiler.

A kernel that needs a fused CPU loop (one pass where eager torch makes several) passes its C
source to :func:`build_c_library`. The shared library is compiled on first use, cached per
source, compiler, flags and CPU (``-march=native`` builds for this CPU), and loaded through
ctypes. Where nothing builds it (no compiler, not POSIX, an unwritable cache), the caller
gets ``None`` and the reason, and falls back to its torch path after warning once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

__all__: list[str] = []  # private: used by the kernel modules only

# Sophia's loop: -ffp-contract=off keeps every product rounded, as Inductor's loop does.
SOPHIA_FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fPIC", "-shared"]
# IEEE semantics are kept (no -ffast-math): -fno-trapping-math lets compares and selects
# vectorise (no FP exception flags are read), -fno-math-errno lets sqrt vectorise.
VECTOR_FLAGS = ["-O3", "-std=gnu11", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared"]
# Tried best first.
_EXTRA_FLAGS = (["-march=native", "-fopenmp"], ["-fopenmp"], [])


def cache_dir() -> Path:
    """Where built loops are kept: ``$TRAINFORGE_KERNELS_CACHE``, else
    ``$XDG_CACHE_HOME/trainforge_kernels`` (``~/.cache/trainforge_kernels``)."""
    if os.environ.get("TRAINFORGE_KERNELS_CACHE"):
        return Path(os.environ["TRAINFORGE_KERNELS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trainforge_kernels"


def _cpu_id() -> str:
    """The CPU's identity in the cache key."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_c_library(
    name: str, source: str, flags: list[str], libs: tuple[str, ...] = ()
) -> tuple[ctypes.CDLL | None, str]:
    """Compile (or load the cached) ``source`` as a shared library named after ``name``.

    Returns ``(library, "")``, or ``(None, reason)`` when no flag set builds and loads it.
    """
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if os.name != "posix":
        return None, f"C loops are built on POSIX systems only (this is {os.name!r})"
    if not cc:
        return None, "no C compiler found (set CC, or install cc/gcc/clang)"
    folder = cache_dir()
    reason = ""
    for extra in _EXTRA_FLAGS:
        key = "\0".join([source, cc, *flags, *libs, *extra, platform.machine(), _cpu_id()])
        stem = folder / f"{name}_{hashlib.sha256(key.encode()).hexdigest()[:20]}"
        lib_path = stem.with_suffix(".so")
        try:
            if not lib_path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                stem.with_suffix(".c").write_text(source)
                tmp = stem.with_suffix(f".{os.getpid()}.tmp")  # then renamed: atomic
                command = [cc, *flags, *extra, str(stem.with_suffix(".c")), "-o", str(tmp), *libs]
                done = subprocess.run(command, capture_output=True, timeout=300)
                if done.returncode != 0:
                    tmp.unlink(missing_ok=True)
                    err = done.stderr.decode(errors="replace").strip().splitlines()
                    reason = f"{cc} {' '.join(extra)} failed: {err[-1] if err else 'no output'}"
                    continue
                os.replace(tmp, lib_path)
            return ctypes.CDLL(str(lib_path)), ""
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"building in {folder} failed: {exc}"
    return None, reason


def load_c_functions(
    name: str,
    source: str,
    symbols: dict[str, tuple[object, list[object]]],
    *,
    flags: list[str],
    libs: tuple[str, ...] = (),
    what: str,
    switch: str,
) -> ctypes.CDLL | None:
    """:func:`build_c_library`, then declare each symbol's ``(restype, argtypes)``. None,
    after a warning naming ``what`` and the off ``switch``, when nothing builds it."""
    lib, reason = build_c_library(name, source, flags, libs)
    if lib is None:
        warn_fallback(what, reason, switch, stacklevel=4)
        return None
    for symbol, (restype, argtypes) in symbols.items():
        fn = getattr(lib, symbol)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def warn_fallback(what: str, reason: str, switch: str, stacklevel: int = 3) -> None:
    """Say once (per call site, Python's default filter) that a C loop is not used."""
    warnings.warn(
        f"trainforge_kernels: the C loop for {what} could not be built ({reason}); the "
        f"slower torch path runs instead. Set {switch}=0 to choose that path and silence this.",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
