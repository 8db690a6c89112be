"""golden-fast: locate the golden layer, edit it in closed form, evaluate honestly.

The front door (imported lazily, so `import golden_fast` stays cheap and never touches a GPU)::

    from golden_fast import load_model, locate, Editor, evaluate, EditRequest

    model, tok = load_model("smollm2-135m")
    layer = locate(model, tok, proxy_requests, method="lga").chosen
    result = Editor(model, tok, method="r-rome", layers=[layer]).edit(requests)
    report = evaluate(model, tok, requests)

The rest of `__all__` are the types these return or take. Subpackages (golden_fast.edit,
golden_fast.locate, golden_fast.evaluate, ...) hold everything else.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; one table, read by __getattr__ below.
_LAZY = {
    "load_model": "golden_fast.models",
    "get_adapter": "golden_fast.models",
    "locate": "golden_fast.locate",
    "LayerScores": "golden_fast.locate",
    "Editor": "golden_fast.edit",
    "EditResult": "golden_fast.edit",
    "EditError": "golden_fast.edit",
    "apply_journal": "golden_fast.edit",
    "EditRequest": "golden_fast.data",
    "Probe": "golden_fast.data",
    "EditRequestError": "golden_fast.data",
    "evaluate": "golden_fast.evaluate",
    "EvalReport": "golden_fast.evaluate",
}

__all__ = sorted(_LAZY) + ["__version__"]


class _Package(types.ModuleType):
    """golden_fast's module type. `locate` and `evaluate` are both functions of the front door and
    subpackages; importing a subpackage binds its name on the parent package, which would hide the
    function for good after any `import golden_fast.evaluate`. The front door's names keep the
    function; the subpackages stay reachable as `from golden_fast.evaluate import ...`."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cached: the next look-up is a plain attribute
        return value
    raise AttributeError(f"module 'golden_fast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
