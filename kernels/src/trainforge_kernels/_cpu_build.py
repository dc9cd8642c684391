"""Build small C loops with the system compiler on first use, cached on disk.

The pattern of :mod:`trainforge_kernels.sophia_update`'s CPU loop, shared by the
ShiftAddViT loops (:mod:`trainforge_kernels.add_attention`,
:mod:`trainforge_kernels.fixed_point`): the source is compiled once per machine, source,
compiler and flags (``-O3 -march=native -fopenmp`` first, then without ``-march``, then
without OpenMP), kept in ``$TRAINFORGE_KERNELS_CACHE`` (else ``~/.cache/trainforge_kernels``)
under a hash of all of these, written to a temporary name and renamed (atomic when several
processes build at once), and loaded with ctypes. No compiler, or one that fails every
flag set: None, and the caller runs its torch path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess

from trainforge_kernels.sophia_update import _cache_dir, _cpu_id

# IEEE semantics are kept (no -ffast-math): -fno-trapping-math lets compares and selects
# vectorise (no FP exception flags are read), -fno-math-errno lets sqrt vectorise.
_BASE_FLAGS = ["-O3", "-std=gnu11", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared"]


def build_library(
    name: str, source: str, symbols: dict[str, tuple[object, list[object]]]
) -> ctypes.CDLL | None:
    """Compile (or load the cached) ``source``; ``symbols`` maps each function to its
    ``(restype, argtypes)``. None when no C compiler builds it."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if os.name != "posix" or not cc:
        return None
    folder = _cache_dir()
    for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], []):  # best first
        key = "\0".join([source, cc, *_BASE_FLAGS, *extra, platform.machine(), _cpu_id()])
        stem = folder / f"{name}_{hashlib.sha256(key.encode()).hexdigest()[:20]}"
        lib_path = stem.with_suffix(".so")
        try:
            if not lib_path.exists():
                folder.mkdir(parents=True, exist_ok=True)
                src = stem.with_suffix(f".{os.getpid()}.c")
                src.write_text(source)
                tmp = stem.with_suffix(f".{os.getpid()}.tmp")  # then renamed: atomic
                done = subprocess.run([cc, *_BASE_FLAGS, *extra, str(src), "-o", str(tmp),
                                       "-lm"], capture_output=True, timeout=300)  # fmt: skip
                src.unlink(missing_ok=True)
                if done.returncode != 0:
                    tmp.unlink(missing_ok=True)
                    continue
                os.replace(tmp, lib_path)
            lib = ctypes.CDLL(str(lib_path))
        except (OSError, subprocess.SubprocessError):
            continue
        for sym, (restype, argtypes) in symbols.items():
            fn = getattr(lib, sym)
            fn.restype = restype
            fn.argtypes = argtypes
        return lib
    return None
