"""Shared test helpers for every tier. Keep it small; tier fixtures live in tests/<tier>/conftest.py.

tests/ has no __init__.py: pytest puts this folder on sys.path, so test modules import the helper
modules by name (`from _reference_check import assert_close_to_reference`, `from _tolerances import
ATOL`). They cannot import this file reliably (every tier has a `conftest`), so what the op tests
need from here arrives through pytest instead: the `op_backends` marker and the `backend_device`
fixture below.
"""

from __future__ import annotations

import os

import pytest
import torch

# ---------------------------------------------------------------------------------------------
# Backends of an op (STYLE B5): every backend is a test parameter; unavailable ones are skipped
# with the dispatcher's own reason, so `pytest -ra` lists what did not run and why.
#
#     @pytest.mark.op_backends("rank1_apply")      # parametrises the `backend` argument
#     def test_x(backend, backend_device): ...
# ---------------------------------------------------------------------------------------------


def device_for(backend: str) -> torch.device:
    """The device a backend's tests run on: cpp and torch on the CPU, cuda and triton on the GPU
    (triton on the CPU under TRITON_INTERPRET=1)."""
    if backend == "cuda" or (backend == "triton" and os.environ.get("TRITON_INTERPRET") != "1"):
        return torch.device("cuda")
    return torch.device("cpu")


def backend_params(op_name: str) -> list:
    """pytest params for every backend name, unavailable ones marked skip with their reason."""
    from golden_fast.ops import BACKENDS, get_op

    op = get_op(op_name)
    params = []
    for backend in BACKENDS:
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
