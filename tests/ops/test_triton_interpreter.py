"""The Triton kernels (kernels/*.py) on the CPU, under Triton's interpreter, against the references.

Triton decides at `@triton.jit` time, i.e. when kernels/<stem>.py is first imported, whether a
kernel is compiled or interpreted (TRITON_INTERPRET=1, triton 3.x `knobs.runtime.interpret`). In
this process the kernel modules are already imported in compiled form (the dispatcher loads them
while collecting the backends of every op), so setting the variable here would do nothing. Each op's
own test file therefore runs again in a child pytest with TRITON_INTERPRET=1 and `-k triton`: there
`device_for("triton")` is the CPU and the kernels register for it, so every contract test of the op
-- odd shapes, empty and one-row inputs, every dtype -- runs the interpreted kernel against the torch
reference. The child must pass AND must have run triton tests (a run that skipped them all fails).

The files are found, not listed: every test file outside tests/gpu with an `op_backends("<op>")`
test of an op that declares a Triton backend (tests/ops/test_mom2.py, tests/unit/
test_locate_grad_inner.py, ...), so a new op's tests or a new tier's are interpreted too.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
_OP_BACKENDS = re.compile(r"""op_backends\(\s*["']([A-Za-z_]\w*)["']""")


def _triton_test_files() -> list[str]:
    """tests/-relative paths of the files with op_backends tests of an op that has a Triton backend."""
    from golden_fast.ops import get_op

    def has_triton(name: str) -> bool:
        try:
            return "triton" in get_op(name).declared_backends
        except KeyError:  # a toy op declared inside a test
            return False

    found = []
    for path in sorted(TESTS.glob("*/test_*.py")):
        if path.parent.name != "gpu" and any(map(has_triton, set(_OP_BACKENDS.findall(path.read_text())))):
            found.append(path.relative_to(TESTS).as_posix())
    return found


OP_TEST_FILES = _triton_test_files()

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="already the interpreted child"),
]


@pytest.mark.parametrize("test_file", OP_TEST_FILES)
def test_interpreted_kernels_meet_the_op_contract(test_file):
    env = dict(os.environ, TRITON_INTERPRET="1", GOLDEN_FAST_BACKEND="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "triton", str(TESTS / test_file)]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
    assert result.returncode == 0, f"interpreted {test_file} failed:\n{tail}"
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) > 0, f"no triton test ran in {test_file}:\n{tail}"
