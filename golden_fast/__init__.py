"""golden-fast: locate the golden layer, edit it in closed form, evaluate honestly.

Public API (imported lazily so `import golden_fast` stays cheap and never touches a GPU):
    load_model, EditRequest, and the rest of __all__.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; one table, read by __getattr__ below.
_LAZY = {
    "load_model": "golden_fast.models",
    "get_adapter": "golden_fast.models",
    "EditRequest": "golden_fast.data",
    "Probe": "golden_fast.data",
    "EditRequestError": "golden_fast.data",
    "evaluate": "golden_fast.evaluate",
    "EvalReport": "golden_fast.evaluate",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'golden_fast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
