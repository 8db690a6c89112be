"""Model zoo and architecture adapters."""

from .adapters import ModelAdapter, UnsupportedArchitectureError, get_adapter, supported_model_types
from .placement import execution_device, place_model
from .tiny import TINY_NAMES, build_tiny
from .zoo import DEFAULT_MODEL, ZOO, cache_dir, fetch, home, is_cached, known_names, load_model

__all__ = [
    "DEFAULT_MODEL",
    "TINY_NAMES",
    "ZOO",
    "ModelAdapter",
    "UnsupportedArchitectureError",
    "build_tiny",
    "cache_dir",
    "execution_device",
    "fetch",
    "get_adapter",
    "home",
    "is_cached",
    "known_names",
    "load_model",
    "place_model",
    "supported_model_types",
]
