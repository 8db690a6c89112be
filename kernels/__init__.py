"""Triton kernels of golden-fast, installed as `golden_fast.kernels` (the top-level name `kernels`
belongs to Hugging Face's kernel hub on PyPI; setup.py maps this folder to `golden_fast.kernels`).

`kernels/<stem>.py` holds the Triton kernel and launcher of the op declared in
`golden_fast/ops/<stem>.py`, registered with `@<op>.impl("triton", devices=("cuda",),
available=triton_status)`. The dispatcher imports it the first time the op runs, so this package
must stay cheap to import: no triton import and no GPU probe at this level. A `kernels/<stem>.py`
that fails to import (triton missing) turns into the reason shown by `golden_fast.ops.report()`.

On a machine without a GPU, Triton kernels can still be tested under `TRITON_INTERPRET=1` on small
shapes; skip bf16 `tl.dot` there (the interpreter computes it wrongly).
"""

from __future__ import annotations

import functools
import importlib.util
import os

__all__ = ["interpreting", "triton_devices", "triton_status"]


def interpreting() -> bool:
    """TRITON_INTERPRET=1: `@triton.jit` builds interpreted kernels (numpy, CPU tensors).

    Triton decides this when a kernel is *decorated*, i.e. when kernels/<stem>.py is imported, so
    the variable must be set before that import (tests do it in a child process).
    """
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_devices() -> tuple[str, ...]:
    """Device types of the Triton backends: CUDA, plus the CPU when the interpreter runs them.

    On the CPU the automatic order (cpp > panels > torch) never picks "triton"; only an explicit request does,
    which is how tests/ops run every op test against the interpreted kernels.
    """
    return ("cuda", "cpu") if interpreting() else ("cuda",)


@functools.cache
def triton_status() -> tuple[bool, str]:
    """(usable, reason) for Triton kernels: triton importable and a CUDA device, or the interpreter.

    Called lazily by the dispatcher (never at import), once per process.
    """
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install 'golden-fast[triton]')"
    if interpreting():
        return True, "triton interpreter (TRITON_INTERPRET=1)"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device visible (torch.cuda.is_available() is False)"
    # device_count(), not get_device_name(): naming the device initialises CUDA, and report() and the
    # dispatcher must not (tests/ops/test_dispatch.py::test_import_is_lazy).
    return True, f"triton on CUDA ({torch.cuda.device_count()} device(s) visible)"
