"""The optional native extension `golden_fast._C` (csrc/), loaded once, and what it offers.

Importing `_C` runs the static registrations of every `csrc/<op>.cpp`, after which its ops are
`torch.ops.golden_fast.<op>`. When the extension is missing (built with `GOLDEN_FAST_BUILD_CPP=0`,
a pure-python install, or built against another torch and failing to load) golden-fast still works:
the dispatcher in `golden_fast.ops` falls back to the torch reference and says why, and this module
warns once. Nothing here probes a GPU: `HAS_CUDA` says whether CUDA kernels were *compiled in*, read
from a constant of the module, never from `torch.cuda` (importing golden-fast must never touch a
GPU; unlike flash-attn's import-time `get_device_capability`).
"""

from __future__ import annotations

import warnings
from types import ModuleType

import torch

__all__ = [
    "HAS_CPP",
    "HAS_CUDA",
    "NativeExtensionWarning",
    "available",
    "cpu_isa",
    "has_op",
    "op_status",
    "ops",
    "reason",
]


class NativeExtensionWarning(UserWarning):
    """golden_fast._C could not be loaded; the torch reference paths are used (filterable)."""


_C: ModuleType | None
_LOAD_ERROR: str | None = None
try:
    from golden_fast import _C
except (ImportError, OSError) as exc:  # OSError: a shared library of the wrong torch build
    _C = None
    _LOAD_ERROR = f"{type(exc).__name__}: {exc}"

#: The extension imported, so its CPU ops are registered.
HAS_CPP: bool = _C is not None
#: The extension was compiled with its CUDA kernels (says nothing about a GPU being present).
HAS_CUDA: bool = HAS_CPP and bool(getattr(_C, "WITH_CUDA", 0))

_NAMESPACE = "golden_fast"
_warned = False


def _warn_missing() -> None:
    """Warn, once per process, that the torch paths replace the native ones."""
    global _warned
    if HAS_CPP or _warned:
        return
    _warned = True
    warnings.warn(
        f"golden_fast._C is not available ({_LOAD_ERROR}); the torch reference paths are used. "
        "Build it with `python setup.py build_ext --inplace` or reinstall without GOLDEN_FAST_BUILD_CPP=0; "
        "golden_fast.ops.report() shows what each op runs on.",
        NativeExtensionWarning,
        stacklevel=3,
    )


_warn_missing()


def available() -> bool:
    """True when `golden_fast._C` loaded (its ops are registered with torch)."""
    return HAS_CPP


def ops(dispatch_key: str = "CPU") -> tuple[str, ...]:
    """Names of the golden_fast ops that have a kernel for `dispatch_key` ("CPU" or "CUDA")."""
    if not HAS_CPP:
        return ()
    try:  # private but long-standing; the fallback below only loses the per-key view
        names = torch._C._dispatch_get_registrations_for_dispatch_key(dispatch_key)
    except (AttributeError, RuntimeError):
        names = [f"{_NAMESPACE}::{n}" for n in dir(torch.ops.golden_fast) if not n.startswith("_")]
    prefix = f"{_NAMESPACE}::"
    return tuple(sorted({n[len(prefix) :].split(".")[0] for n in names if n.startswith(prefix)}))


def has_op(name: str, dispatch_key: str = "CPU") -> bool:
    """Whether `torch.ops.golden_fast.<name>` exists with a kernel for `dispatch_key`."""
    return name in ops(dispatch_key)


def op_status(name: str, dispatch_key: str = "CPU") -> tuple[bool, str]:
    """(usable, reason) for the native kernel of one op: the `available=` check of "cpp"/"cuda" impls."""
    if not HAS_CPP:
        return False, f"golden_fast._C not loaded ({_LOAD_ERROR})"
    if dispatch_key == "CUDA" and not HAS_CUDA:
        return False, "golden_fast._C was built without CUDA kernels"
    if not has_op(name, dispatch_key):
        return False, f"golden_fast._C has no {dispatch_key} kernel for {name}"
    return True, f"torch.ops.golden_fast.{name} ({dispatch_key})"


def reason() -> str:
    """One line: why the extension is missing, or which ops and how many threads it brings."""
    if not HAS_CPP:
        return f"golden_fast._C not loaded ({_LOAD_ERROR}); the torch reference paths are used"
    assert _C is not None
    cpu_ops = ", ".join(ops("CPU")) or "none"
    cuda = f"CUDA ops: {', '.join(ops('CUDA')) or 'none'}" if HAS_CUDA else "built without CUDA"
    openmp = "OpenMP" if getattr(_C, "WITH_OPENMP", 0) else "no OpenMP (single thread)"
    return (
        f"golden_fast._C loaded from {_C.__file__}; CPU ops: {cpu_ops}; {cuda}; "
        f"{openmp}, torch.get_num_threads()={torch.get_num_threads()}; CPU kernels: {cpu_isa()}"
    )


def cpu_isa() -> str:
    """Instruction set of the C++ CPU kernels: "avx512", "avx2" or "default" (SSE2/NEON); "" without _C.

    The best the CPU supports, lowered by the environment variable GOLDEN_FAST_CPU_ISA (read once,
    when _C loads), which is how tests run every variant on one machine.
    """
    return str(getattr(_C, "CPU_ISA", "")) if HAS_CPP else ""
