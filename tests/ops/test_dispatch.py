"""The one dispatch point (golden_fast.ops): precedence, refusals with reasons, fallback,
report(), and lazy imports. Toy ops with fake backends keep these independent of what is built."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import golden_fast.ops as ops
from golden_fast.ops import BackendUnavailableError, declare, use_backend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy(request, monkeypatch):
    """An op with torch (reference), cpp (available) and triton (cuda only, unavailable) backends.

    Each backend returns its own name, so a call says which one ran.
    """
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    name = f"_toy_{request.node.name}"
    op = declare(name)

    @op.reference
    def toy_torch(x):
        return "torch"

    @op.impl("cpp", devices=("cpu",), available=lambda: (True, "toy cpp built"))
    def toy_cpp(x):
        return "cpp"

    @op.impl("triton", devices=("cuda",), available=lambda: (False, "toy: no GPU here"))
    def toy_triton(x):
        return "triton"

    yield op
    ops._REGISTRY.pop(name, None)


X = torch.zeros(1)


def test_automatic_choice_follows_device_order(toy):
    assert toy(X) == "cpp"  # cpu: cpp > torch
    assert toy.choose("cuda") == "torch"  # cuda: triton (unavailable) > cuda (absent) > torch
    assert toy.choose("mps") == "torch"  # any other device: the reference only


def test_precedence_argument_context_env_auto(toy, monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "cpp")
    assert toy(X) == "cpp"  # env
    with use_backend("torch"):
        assert toy(X) == "torch"  # context beats env
        assert toy(X, backend="cpp") == "cpp"  # argument beats context
        with use_backend("auto"):
            assert toy(X) == "cpp"  # "auto" cancels an outer request: automatic choice
    monkeypatch.setenv(ops.ENV_VAR, "torch")
    assert toy(X) == "torch"
    assert toy(X, backend="auto") == "cpp"
    monkeypatch.setenv(ops.ENV_VAR, "")
    assert toy(X) == "cpp"  # empty means unset


@pytest.mark.parametrize("how", ["argument", "context", "env"])
def test_explicit_unavailable_backend_raises_with_reason(toy, monkeypatch, how):
    kwargs = {}
    if how == "argument":
        kwargs["backend"] = "triton"
    elif how == "env":
        monkeypatch.setenv(ops.ENV_VAR, "triton")
    with use_backend("triton" if how == "context" else None):
        with pytest.raises(BackendUnavailableError, match="'triton'.*runs on cuda only, not cpu"):
            toy(X, **kwargs)
        with pytest.raises(BackendUnavailableError, match="toy: no GPU here"):
            toy.choose("cuda", kwargs.get("backend"))  # on its own device, triton's own reason


def test_explicit_missing_backend_raises(toy):
    with pytest.raises(BackendUnavailableError, match="no cuda implementation"):
        toy(X, backend="cuda")


def test_unknown_backend_name(toy, monkeypatch):
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        toy(X, backend="fast")
    with pytest.raises(ValueError, match="use_backend"):
        with use_backend("fast"):
            pass
    monkeypatch.setenv(ops.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="GOLDEN_FAST_BACKEND"):
        toy(X)


def test_automatic_choice_falls_back(request):
    op = declare(f"_toy_{request.node.name}")
    try:

        @op.reference
        def ref(x):
            return "torch"

        @op.impl("cpp", available=lambda: (False, "toy: extension not built"))
        def cpp(x):
            return "cpp"

        @op.impl("cuda", devices=("cuda",), available=lambda: 1 / 0)
        def cuda(x):
            return "cuda"

        assert op(X) == "torch"
        ok, why = op.status("cuda", "cuda")
        assert not ok and "ZeroDivisionError" in why  # a broken check is a reason, not a crash
        with pytest.raises(BackendUnavailableError, match="toy: extension not built"):
            op(X, backend="cpp")
    finally:
        ops._REGISTRY.pop(op.name, None)


def test_use_backend_is_per_thread(toy):
    seen = []
    with use_backend("torch"):
        worker = threading.Thread(target=lambda: seen.append(toy(X)))
        worker.start()
        worker.join()
        assert toy(X) == "torch"
    assert seen == ["cpp"]


def test_registration_errors(toy):
    with pytest.raises(ValueError, match="reference"):
        toy.impl("torch")
    with pytest.raises(TypeError, match="no tensor"):
        toy(1.0)
    fresh = declare("_toy_unregistered")
    try:
        with pytest.raises(TypeError, match="decorator"):
            fresh.reference(X)
    finally:
        ops._REGISTRY.pop(fresh.name, None)


def test_reference_doubles_as_the_torch_function(toy):
    assert toy.reference(X) == "torch"
    assert toy.backends == ("torch", "cpp", "triton")


def test_declared_backends_are_those_written_runnable_or_not(toy):
    # triton cannot run here (cuda only, unavailable) but exists: a test parameter, skipped with its
    # reason; panels and cuda do not exist for the toy: no parameter at all (tests/conftest.py)
    assert toy.declared_backends == ("torch", "cpp", "triton")


def test_report_explains_every_backend(toy):
    assert tuple(ops.BACKEND_KINDS) == ops.BACKENDS
    assert set(ops.DEVICE_ORDER["cpu"]) | set(ops.DEVICE_ORDER["cuda"]) == set(ops.BACKENDS)
    text = ops.report()
    for name, kind in ops.BACKEND_KINDS.items():
        assert f"  {name:<7}{kind}" in text
    toy_block = text.split(toy.name, 1)[1]
    for name in ops.BACKENDS:  # every backend of every device: chosen, or why not
        assert f"      {name:<7}" in toy_block or f"-> {name}" in toy_block


def test_report_lists_ops_choices_and_reasons(toy):
    text = ops.report()
    assert "rank1_apply (mutates weight)" in text
    assert toy.name in text
    toy_block = text.split(toy.name, 1)[1]
    assert "cpu  -> cpp" in toy_block
    assert "toy: no GPU here" in toy_block and "runs on cuda only, not cpu" in toy_block
    assert "no cuda implementation" in toy_block
    with use_backend("torch"):
        assert "use_backend='torch'" in ops.report()


def test_report_shows_requests_that_cannot_be_met(toy):
    with use_backend("triton"):
        assert "-> none [" in ops.report()


def test_kernels_import_failure_becomes_the_triton_reason(request, tmp_path):
    # A kernels/<stem>.py that cannot import (triton missing) must not break the op: its error is
    # the reason "triton" is unavailable.
    import golden_fast.kernels  # noqa: F401  (resolved through the source-tree shim or the install)

    (tmp_path / "toy_broken.py").write_text("raise ImportError('simulated: no module named triton')\n")
    sys.modules["golden_fast.kernels"].__path__.append(str(tmp_path))
    op = declare(f"_toy_{request.node.name}")
    try:
        op.kernels_module = "golden_fast.kernels.toy_broken"

        @op.reference
        def ref(x):
            return "torch"

        assert op(X) == "torch"
        ok, why = op.status("triton", "cuda")
        assert not ok and "simulated: no module named triton" in why
        assert op.declared_backends == ("torch", "triton")  # written, not importable here: a skip
    finally:
        ops._REGISTRY.pop(op.name, None)
        sys.modules["golden_fast.kernels"].__path__.remove(str(tmp_path))


def test_getattr_and_get_op():
    assert ops.get_op("rank1_apply") is ops.rank1_apply
    assert "rank1_apply" in ops.op_names()
    with pytest.raises(KeyError, match="known: .*rank1_apply"):
        ops.get_op("no_such_op")
    with pytest.raises(AttributeError):
        ops.no_such_op  # noqa: B018


def test_import_is_lazy():
    # `import golden_fast.ops` must not import triton, the native extension or any op module, nor
    # touch CUDA; report() then loads op modules but still initialises no GPU.
    code = (
        "import sys, torch, golden_fast.ops as ops\n"
        "loaded = [m for m in ('triton', 'golden_fast._C', 'golden_fast.ops.rank1') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "ops.report()\n"
        "assert 'golden_fast.ops.rank1' in sys.modules\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop(ops.ENV_VAR, None)
    return env
