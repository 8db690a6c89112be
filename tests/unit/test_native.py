"""golden_fast.native: what it says matches what loads, and golden-fast works without the extension.

GOLDEN_FAST_BUILD_CPP=0 semantics (setup.py): the build compiles nothing, so
`pip install -e .` works on any machine; at run time `golden_fast._C` is then missing,
`native.available()` is False, `native.reason()` says why, one NativeExtensionWarning is issued
when native is first imported, and every op dispatches to its torch reference automatically, while
an explicit request for "cpp" raises BackendUnavailableError with that reason.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from golden_fast import native

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("GOLDEN_FAST_BACKEND", None)
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_available_matches_the_import():
    try:
        importlib.import_module("golden_fast._C")
        loads = True
    except ImportError:
        loads = False
    assert native.available() is loads is native.HAS_CPP
    if loads:
        assert "loaded from" in native.reason() and "rank1_apply" in native.reason()
        assert native.has_op("rank1_apply") and native.op_status("rank1_apply")[0]
        assert "rank1_apply" in native.ops("CPU")
        assert native.cpu_isa() in ("default", "avx2", "avx512") and native.cpu_isa() in native.reason()
    else:
        assert "torch reference" in native.reason()
        assert native.ops() == () and not native.op_status("rank1_apply")[0] and native.cpu_isa() == ""


def test_cuda_flag_is_a_build_fact():
    # HAS_CUDA comes from a constant compiled into _C, never from probing a device.
    if torch.version.cuda is None:
        assert not native.HAS_CUDA
    if not native.HAS_CUDA:
        ok, why = native.op_status("rank1_apply", "CUDA")
        assert not ok and "CUDA" in why


MISSING_EXTENSION = """
import sys, warnings

class Block:  # what a GOLDEN_FAST_BUILD_CPP=0 install looks like: no golden_fast._C
    def find_spec(self, name, path=None, target=None):
        if name == "golden_fast._C":
            raise ImportError("simulated: extension not built")

sys.meta_path.insert(0, Block())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import golden_fast.native as native
    native._warn_missing()  # a second call must stay silent
    import torch
    import golden_fast.ops as ops
    w = torch.zeros(3, 2)
    ops.rank1_apply(w, torch.ones(3, 1), torch.ones(2, 1))

assert not native.available() and not native.HAS_CPP and not native.HAS_CUDA
assert "simulated" in native.reason() and "torch reference" in native.reason(), native.reason()
ours = [c for c in caught if issubclass(c.category, native.NativeExtensionWarning)]
assert len(ours) == 1, [str(c.message) for c in caught]
assert "torch reference paths are used" in str(ours[0].message)
assert torch.equal(w, torch.ones(3, 2))
assert ops.rank1_apply.choose("cpu") == "torch"
try:
    ops.rank1_apply(w, torch.ones(3, 1), torch.ones(2, 1), backend="cpp")
except ops.BackendUnavailableError as exc:
    assert "simulated" in str(exc), exc
else:
    raise AssertionError("an explicit cpp request must raise without the extension")
assert "simulated" in ops.report()
print("ok")
"""


@pytest.mark.skipif(not native.available(), reason=native.reason())
def test_cpu_isa_can_only_be_lowered():
    # GOLDEN_FAST_CPU_ISA never raises the instruction set above what the CPU has.
    result = _run("from golden_fast import native; print(native.cpu_isa())", GOLDEN_FAST_CPU_ISA="default")
    assert result.stdout.split() == ["default"], result.stderr
    result = _run("from golden_fast import native; print(native.cpu_isa())", GOLDEN_FAST_CPU_ISA="avx512")
    best = result.stdout.split()
    assert best and best[0] in ("default", "avx2", "avx512"), result.stderr
    if "GOLDEN_FAST_CPU_ISA" not in os.environ:  # asking for the top is asking for what the CPU has
        assert best[0] == native.cpu_isa()


def test_without_the_extension_everything_falls_back_to_torch():
    result = _run(MISSING_EXTENSION)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


SETUP_EXTENSIONS = """
import runpy, sys
sys.argv = ["setup.py", "--name"]
ns = runpy.run_path("setup.py")
print("EXT", [(e.name, sorted(e.sources)) for e in ns["ext_modules"]])
"""


@pytest.mark.parametrize("build_cpp", ["0", "1"])
def test_setup_honours_golden_fast_build_cpp(build_cpp):
    result = _run(SETUP_EXTENSIONS, GOLDEN_FAST_BUILD_CPP=build_cpp)
    assert result.returncode == 0, result.stderr
    ext_line = next(line for line in result.stdout.splitlines() if line.startswith("EXT"))
    if build_cpp == "0":
        assert ext_line == "EXT []"
        assert "GOLDEN_FAST_BUILD_CPP=0, native extension not built" in result.stderr
    else:
        assert "golden_fast._C" in ext_line and "csrc/rank1.cpp" in ext_line
