"""trainforge-kernels: Triton kernels with plain-torch references.

Each public op lives in its own module, registers itself with
:func:`~trainforge_kernels._dispatch.register_kernel`, and is a ``torch.library`` custom op
(namespace ``trainforge``) with a fake implementation, so it composes with
``torch.compile``. The op runs Triton on CUDA tensors when Triton is importable and its
torch reference otherwise (see :mod:`trainforge_kernels._dispatch`).
"""

import importlib
import pkgutil
from importlib.metadata import PackageNotFoundError, version

from trainforge_kernels._dispatch import (
    BenchCase,
    KernelInfo,
    backend,
    interpret_mode,
    kernel_mode,
    kernels,
    register_kernel,
    triton_available,
    triton_version,
    use_triton,
)

try:
    __version__ = version("trainforge-kernels")
except PackageNotFoundError:
    __version__ = "0.0.0"

# Every public module is an op module: importing it registers the op. Adding a kernel
# needs no edit here.
for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "testing":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "BenchCase",
    "KernelInfo",
    "__version__",
    "backend",
    "interpret_mode",
    "kernel_mode",
    "kernels",
    "register_kernel",
    "triton_available",
    "triton_version",
    "use_triton",
]
