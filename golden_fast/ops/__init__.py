"""The op registry and the only dispatch point of golden-fast.

An op is a named computation with a torch reference (the spec every backend is tested against) and
optional faster backends; the algorithms call ops by name and never branch on the device. The ops:
`mom2_update` (second moments, golden_fast/ops/mom2.py), `grad_inner` (LGA's gradient inner
products, ops/grad_inner.py), `rank1_apply` (edit updates, ops/rank1.py) and `token_logprobs`
(scoring head, ops/token_logprobs.py); the formulas behind them are in golden_fast/FORMULAS.md.

An op is declared once, in `golden_fast/ops/<stem>.py`, next to its docstring contract and its torch
reference; every other implementation registers itself where it is written::

    rank1_apply = declare("rank1_apply", mutates=("weight",))

    @rank1_apply.reference                      # backend "torch": the spec, runs on any device
    def rank1_apply_torch(weight, u, v, transposed=False, alpha=1.0): ...

    @rank1_apply.impl("cpp", devices=("cpu",), available=lambda: native.op_status("rank1_apply"))
    def rank1_apply_cpp(weight, u, v, transposed=False, alpha=1.0): ...

`golden_fast.kernels.<stem>` (Triton, backend "triton") is imported by the registry the first time
the op is dispatched or reported, so `import golden_fast.ops` never imports triton, the native
extension or probes a GPU. Calling the op picks a backend in this order:

1. the `backend=` keyword of the call;
2. `with golden_fast.ops.use_backend("torch"):` (a context variable: per thread and per task);
3. the environment variable `GOLDEN_FAST_BACKEND`;
4. the first available backend in `DEVICE_ORDER[device.type]` (cuda: triton, cuda, torch;
   cpu: cpp, panels, torch; other devices: torch).

`BACKEND_KINDS` says what each backend name stands for; `report()` prints it.

1-3 are requests: one that cannot be met raises `BackendUnavailableError` naming the reason. The
value "auto" in 1-3 asks for 4, which falls back silently; `report()` says what it chose and why.
Only this module (and the model adapters) look at `device.type`.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
import pkgutil
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "AUTO",
    "BACKENDS",
    "BACKEND_KINDS",
    "DEVICE_ORDER",
    "ENV_VAR",
    "BackendUnavailableError",
    "Op",
    "declare",
    "get_op",
    "op_names",
    "report",
    "use_backend",
]

#: Every backend name an implementation may register under, and what the name stands for (a new
#: name needs its line here: report() prints these, tests parametrise over BACKENDS).
BACKEND_KINDS: dict[str, str] = {
    "torch": "the reference, plain torch, any device (the spec the others are tested against)",
    "panels": "plain torch restructured for the CPU (mom2: upper-triangle row-panel GEMMs), no build",
    "cpp": "C++ in golden_fast._C (csrc/*.cpp, built by setup.py), CPU",
    "cuda": "CUDA kernels in golden_fast._C (csrc/cuda/*.cu, built against a CUDA torch)",
    "triton": "Triton kernels in kernels/<stem>.py, CUDA (the CPU under TRITON_INTERPRET=1)",
}
BACKENDS: tuple[str, ...] = tuple(BACKEND_KINDS)
#: Automatic choice: first available backend for the device type of the op's first tensor.
DEVICE_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("triton", "cuda", "torch"),
    "cpu": ("cpp", "panels", "torch"),
}
_OTHER_DEVICES_ORDER: tuple[str, ...] = ("torch",)  # mps, xpu, meta...: only the reference is portable
#: The request value meaning "choose automatically" (overrides an outer request).
AUTO = "auto"
ENV_VAR = "GOLDEN_FAST_BACKEND"

#: `available=` callables return (usable, reason); the reason is shown when a backend is skipped.
Availability = Callable[[], "tuple[bool, str]"]

_REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("golden_fast_backend", default=None)
_REGISTRY: dict[str, Op] = {}
_LOCK = threading.RLock()


class BackendUnavailableError(RuntimeError):
    """A backend was requested explicitly (argument, use_backend, GOLDEN_FAST_BACKEND) and cannot run."""


@dataclass
class _Impl:
    backend: str
    fn: Callable[..., Any]
    devices: tuple[str, ...] | None  # None: any device (the reference)
    available: Availability | None
    _status: tuple[bool, str] | None = None

    def status(self) -> tuple[bool, str]:
        # Evaluated on first use, then cached: availability (an import, a build flag) does not change
        # within a process, and dispatch must stay cheap.
        if self._status is None:
            if self.available is None:
                self._status = (True, "always available")
            else:
                try:
                    ok, why = self.available()
                except Exception as exc:  # a broken check must not break dispatch
                    ok, why = False, f"availability check raised {type(exc).__name__}: {exc}"
                self._status = (bool(ok), str(why))
        return self._status


def _check_backend(name: str, source: str) -> None:
    if name not in BACKENDS and name != AUTO:
        raise ValueError(f"unknown backend {name!r} from {source}; expected one of {(*BACKENDS, AUTO)}")


class Op:
    """A declared op: call it to dispatch; `.reference` and `.impl` register implementations."""

    def __init__(self, name: str, mutates: tuple[str, ...] = ()) -> None:
        self.name = name
        self.__name__ = name
        #: Arguments the op writes in place (documentation, and what tests check for aliasing).
        self.mutates = tuple(mutates)
        #: Module holding the Triton backend; set from the reference's module stem (B7), overridable.
        self.kernels_module: str | None = None
        self._impls: dict[str, _Impl] = {}
        self._load_errors: dict[str, str] = {}
        self._loaded = False
        self._load_lock = threading.Lock()  # per op: importing one kernels module never waits on another
        self._auto: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<golden_fast op {self.name}: {', '.join(self._impls) or 'no backends'}>"

    # -- registration ---------------------------------------------------------------------------
    def reference(self, *args: Any, **kwargs: Any) -> Any:
        """Decorator registering the torch reference (backend "torch"); afterwards, calls it.

        The double role keeps tests readable: `op.reference(w.double(), ...)` is the float64 truth.
        """
        if "torch" not in self._impls:
            if len(args) != 1 or kwargs or not callable(args[0]):
                raise TypeError(f"{self.name}.reference is not registered yet; use it as a decorator")
            fn = args[0]
            self._impls["torch"] = _Impl("torch", fn, None, None)
            module = sys.modules.get(fn.__module__)
            self.__doc__ = (module.__doc__ if module is not None else None) or fn.__doc__
            if self.kernels_module is None:
                self.kernels_module = "golden_fast.kernels." + fn.__module__.rsplit(".", 1)[-1]
            self._auto.clear()
            return fn
        return self._impls["torch"].fn(*args, **kwargs)

    def impl(
        self,
        backend: str,
        devices: tuple[str, ...] = ("cpu",),
        available: Availability | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering `fn` as `backend` for the given device types.

        `available` returns (usable, reason); it is called lazily, at most once.
        """
        _check_backend(backend, f"{self.name}.impl")
        if backend in (AUTO, "torch"):
            raise ValueError(
                f"{self.name}: register the torch backend with .reference, not .impl({backend!r})"
            )

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            with _LOCK:
                self._impls[backend] = _Impl(backend, fn, tuple(devices), available)
                self._load_errors.pop(backend, None)
                self._auto.clear()
            return fn

        return register

    # -- choice ---------------------------------------------------------------------------------
    def _load_backends(self) -> None:
        """Import golden_fast.kernels.<stem> once; an ImportError becomes the triton reason."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            self._loaded = True
            if self.kernels_module is None:
                return
            try:
                _kernels_package()
                found = importlib.util.find_spec(self.kernels_module) is not None
            except ImportError as exc:
                self._load_errors["triton"] = f"golden_fast.kernels not importable ({exc})"
                return
            if not found:
                return
            try:
                importlib.import_module(self.kernels_module)
            except Exception as exc:  # typically ImportError: triton is not installed
                self._load_errors["triton"] = (
                    f"{self.kernels_module} failed to import: {type(exc).__name__}: {exc}"
                )
            self._auto.clear()

    @property
    def backends(self) -> tuple[str, ...]:
        """Registered backend names (loading the Triton module first)."""
        self._load_backends()
        return tuple(b for b in BACKENDS if b in self._impls)

    @property
    def declared_backends(self) -> tuple[str, ...]:
        """Backends written for this op, whether or not they can run here: the registered ones, plus
        "triton" when kernels/<stem>.py exists but failed to import (triton not installed). A backend
        outside this tuple has no implementation of the op anywhere (tests generate no case for it).
        """
        self._load_backends()
        return tuple(b for b in BACKENDS if b in self._impls or b in self._load_errors)

    def status(self, backend: str, device_type: str = "cpu") -> tuple[bool, str]:
        """(usable, reason) of one backend for one device type; never raises for a known name."""
        _check_backend(backend, f"{self.name}.status")
        self._load_backends()
        impl = self._impls.get(backend)
        if impl is None:
            return False, self._load_errors.get(backend, f"no {backend} implementation of {self.name}")
        if impl.devices is not None and device_type not in impl.devices:
            return False, f"{backend} {self.name} runs on {'/'.join(impl.devices)} only, not {device_type}"
        return impl.status()

    def _auto_choice(self, device_type: str) -> str:
        choice = self._auto.get(device_type)
        if choice is None:
            for name in DEVICE_ORDER.get(device_type, _OTHER_DEVICES_ORDER):
                if self.status(name, device_type)[0]:
                    choice = name
                    break
            else:
                raise BackendUnavailableError(
                    f"{self.name}: no backend can run on {device_type} ({self._why_not(device_type)})"
                )
            self._auto[device_type] = choice
        return choice

    def _why_not(self, device_type: str, skip: str | None = None) -> str:
        parts = []
        for name in BACKENDS:
            if name == skip:
                continue
            ok, why = self.status(name, device_type)
            parts.append(f"{name}: {'available, lower priority' if ok else why}")
        return "; ".join(parts)

    def choose(self, device_type: str, backend: str | None = None) -> str:
        """The backend a call on `device_type` would run, applying the precedence of the module doc."""
        self._load_backends()
        request, source = backend, "the backend= argument"
        if request is None:
            request, source = _REQUEST.get(), "use_backend()"
        if request is None:
            env = os.environ.get(ENV_VAR, "").strip()
            request, source = (env or None), f"${ENV_VAR}"
        if request is None or request == AUTO:
            return self._auto_choice(device_type)
        _check_backend(request, source)
        ok, why = self.status(request, device_type)
        if not ok:
            raise BackendUnavailableError(
                f"{self.name}: backend {request!r} requested by {source} cannot run on {device_type}: {why}"
            )
        return request

    # -- call -----------------------------------------------------------------------------------
    def __call__(self, *args: Any, backend: str | None = None, **kwargs: Any) -> Any:
        device = _device_of(self.name, args, kwargs)
        return self._impls[self.choose(device.type, backend)].fn(*args, **kwargs)


def _device_of(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.device:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    raise TypeError(f"{name}: no tensor argument to take the device from")


def _kernels_package() -> None:
    """Make `golden_fast.kernels` importable from a source checkout.

    setup.py installs the top-level `kernels/` folder as `golden_fast.kernels` (the name `kernels`
    belongs to Hugging Face's kernel hub on PyPI). An install, editable included, resolves that;
    running from the repository with PYTHONPATH does not, so load the folder under its package name.
    """
    if "golden_fast.kernels" in sys.modules or importlib.util.find_spec("golden_fast.kernels") is not None:
        return
    folder = Path(__file__).resolve().parents[2] / "kernels"
    init = folder / "__init__.py"
    if not init.is_file():
        raise ImportError(f"neither an installed golden_fast.kernels nor {init}")
    spec = importlib.util.spec_from_file_location(
        "golden_fast.kernels", init, submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["golden_fast.kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["golden_fast.kernels"]
        raise


# -- module-level API ----------------------------------------------------------------------------
def declare(name: str, mutates: tuple[str, ...] = ()) -> Op:
    """Declare op `name` (one per name; redeclaring returns a fresh Op and replaces the old one)."""
    op = Op(name, mutates)
    with _LOCK:
        _REGISTRY[name] = op
    return op


_discovered = False


def _discover() -> None:
    """Import every op module golden_fast/ops/<stem>.py: there is no second list of ops to maintain."""
    global _discovered
    if _discovered:
        return
    # No lock of ours around imports: the import system already serialises each module, and an op
    # module's top level calls declare(), which takes _LOCK (a lock held here could deadlock).
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def op_names() -> tuple[str, ...]:
    """All declared ops (public ones from golden_fast/ops, plus any declared elsewhere)."""
    _discover()
    return tuple(sorted(_REGISTRY))


def get_op(name: str) -> Op:
    """The op called `name`; KeyError lists the known ones."""
    if name not in _REGISTRY:
        _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no golden_fast op {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Request a backend for every op called inside the block (None: no request; "auto": automatic).

    A context variable, so threads and asyncio tasks do not see each other's requests.
    """
    if name is not None:
        _check_backend(name, "use_backend()")
    token = _REQUEST.set(name)
    try:
        yield
    finally:
        _REQUEST.reset(token)


def report(device_types: tuple[str, ...] = ("cpu", "cuda")) -> str:
    """For each op and device type: the backend a call would use now, and why the others were not."""
    _discover()
    request = _REQUEST.get()
    env = os.environ.get(ENV_VAR, "").strip() or None
    order = ", ".join(f"{device}: {' > '.join(names)}" for device, names in DEVICE_ORDER.items())
    lines = [
        f"golden_fast ops (requests: use_backend={request!r}, ${ENV_VAR}={env!r}; automatic order: {order})",
        "backends:",
        *(f"  {name:<7}{kind}" for name, kind in BACKEND_KINDS.items()),
    ]
    for name in sorted(_REGISTRY):
        op = _REGISTRY[name]
        lines.append(f"{name}" + (f" (mutates {', '.join(op.mutates)})" if op.mutates else ""))
        for device_type in device_types:
            try:
                chosen, note = op.choose(device_type), ""
            except (BackendUnavailableError, ValueError) as exc:
                chosen, note = "none", f" [{exc}]"
            if device_type == "cuda" and not torch.cuda.is_available():  # is_available() does not init CUDA
                note += " (no CUDA device visible to this process)"
            lines.append(f"  {device_type:<5}-> {chosen}{note}")
            for other in BACKENDS:
                if other == chosen:
                    continue
                ok, why = op.status(other, device_type)
                lines.append(f"      {other:<7}{'available, lower priority' if ok else why}")
    return "\n".join(lines)


def __getattr__(name: str) -> Op:
    # golden_fast.ops.rank1_apply: import the op modules on first use, not at `import golden_fast.ops`.
    if not name.startswith("_"):
        with contextlib.suppress(KeyError):
            return get_op(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
