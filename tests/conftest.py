"""Shared test helpers for every tier. Keep it small; tier fixtures live in tests/<tier>/conftest.py.

tests/ has no __init__.py: pytest puts this folder on sys.path, so test modules import the helper
modules by name (`from _reference_check import assert_close_to_reference`, `from _tolerances import
ATOL`). They cannot import this file reliably (every tier has a `conftest`), so what the op tests
need from here arrives through pytest instead: the `op_backends` marker and the `backend_device`
fixture below.

Threads: every test process runs torch on ONE thread unless GOLDEN_FAST_TEST_THREADS says otherwise
(`GOLDEN_FAST_TEST_THREADS=4 make test`). torch's default, one OpenMP thread per core, stalls at its
barriers whenever another job holds a core: the suite took 3 min 42 s on a quiet 2-core machine and
36 min beside one single-threaded job. The count is set in os.environ (OMP_NUM_THREADS,
MKL_NUM_THREADS) before torch is imported, so child processes the tests start (the Triton
interpreter's pytest, the CLI and ISA probes) get it too, and with torch.set_num_threads. A test
about threads sets its own count and restores this one.
"""

from __future__ import annotations

import os

#: Override of the one-thread default of the test processes (a positive integer).
TEST_THREADS_ENV = "GOLDEN_FAST_TEST_THREADS"


def _test_threads() -> int:
    raw = os.environ.get(TEST_THREADS_ENV, "").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{TEST_THREADS_ENV} must be a positive integer; got {raw!r}")
    return int(raw)


TEST_THREADS = _test_threads()
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before `import torch`: OpenMP reads them once
    os.environ[_var] = str(TEST_THREADS)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(TEST_THREADS)  # also when a plugin imported torch before the variables were set

# ---------------------------------------------------------------------------------------------
# Backends of an op: every backend the op declares is a test parameter; those that cannot
# run here (no GPU, extension built without CUDA, triton missing) are skipped with the dispatcher's
# own reason, so `pytest -ra` lists what did not run and why. A backend an op does not have is not
# generated: its cases could run nowhere.
#
#     @pytest.mark.op_backends("rank1_apply")      # parametrises the `backend` argument
#     def test_x(backend, backend_device): ...
# ---------------------------------------------------------------------------------------------


def device_for(backend: str) -> torch.device:
    """The device a backend's tests run on: cuda and triton on the GPU (triton on the CPU under
    TRITON_INTERPRET=1), every other backend (torch, panels, cpp) on the CPU."""
    if backend == "cuda" or (backend == "triton" and os.environ.get("TRITON_INTERPRET") != "1"):
        return torch.device("cuda")
    return torch.device("cpu")


def backend_params(op_name: str) -> list:
    """pytest params for every backend the op declares (`Op.declared_backends`: written in this tree,
    runnable here or not); those that cannot run here are marked skip with the dispatcher's reason.
    A backend the op has no implementation of anywhere is not a parameter at all."""
    from golden_fast.ops import get_op

    op = get_op(op_name)
    params = []
    for backend in op.declared_backends:
        ok, why = op.status(backend, device_for(backend).type)
        marks = () if ok else (pytest.mark.skip(reason=f"{op_name}[{backend}]: {why}"),)
        params.append(pytest.param(backend, id=backend, marks=marks))
    return params


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "op_backends(op_name): parametrise `backend` over the op's backends")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("op_backends")
    if marker is not None and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backend_params(*marker.args))


@pytest.fixture
def backend_device(backend: str) -> torch.device:
    """device_for(backend), for tests parametrised by `op_backends`."""
    return device_for(backend)


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    # Readable ids: test_x[cpp-bfloat16] rather than test_x[cpp-dtype2].
    if isinstance(val, torch.dtype):
        return str(val).removeprefix("torch.")
    return None
