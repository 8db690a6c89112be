"""Adapter registry: one class per architecture family, chosen by `config.model_type`.

To add a family: write `<family>.py` with a `ModelAdapter` subclass setting the module
paths, and add it to `_ADAPTERS` below. Tests in tests/unit/test_adapters.py check any
registered family on a tiny random model.
"""

from __future__ import annotations

from torch import nn

from .base import ModelAdapter
from .gemma import GemmaAdapter
from .gpt2 import GPT2Adapter
from .gpt_neox import GPTNeoXAdapter
from .gptj import GPTJAdapter
from .llama import LlamaAdapter

_ADAPTERS: tuple[type[ModelAdapter], ...] = (
    GPT2Adapter,
    GPTJAdapter,
    GPTNeoXAdapter,
    LlamaAdapter,
    GemmaAdapter,
)
_BY_TYPE = {mt: cls for cls in _ADAPTERS for mt in cls.model_types}


class UnsupportedArchitectureError(ValueError):
    pass


def supported_model_types() -> list[str]:
    return sorted(_BY_TYPE)


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for `model`, cached on the model object (adapters hold no other state)."""
    cached = getattr(model, "_golden_fast_adapter", None)
    if cached is not None and cached.model is model:
        return cached
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = _BY_TYPE.get(model_type)
    if cls is None:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r} ({type(model).__name__}); supported model types: "
            f"{', '.join(supported_model_types())}. To add one, write a ModelAdapter subclass in "
            "golden_fast/models/adapters/<family>.py giving its layer, MLP and down-projection paths, "
            "and list it in golden_fast/models/adapters/__init__.py."
        )
    adapter = cls(model)
    model._golden_fast_adapter = adapter
    return adapter


__all__ = [
    "ModelAdapter",
    "GPT2Adapter",
    "GPTJAdapter",
    "GPTNeoXAdapter",
    "LlamaAdapter",
    "GemmaAdapter",
    "UnsupportedArchitectureError",
    "get_adapter",
    "supported_model_types",
]
