"""Models placed across devices by an accelerate device_map (GPUs, CPU, disk offload).

One job: place a model by a device_map, say where each layer lives, and read or write a tensor
wherever it lives. Under accelerate's offload hooks a module's parameter sits on the "meta"
device between forwards and its values live in the hook's weights map (a PrefixedDataset over an
OffloadedWeightsLoader or a plain dict): reads and writes must go there, and a write must reach
the stored copy (the .dat file in the offload folder for disk) so that the next forward sees it.

A model that was never placed goes through none of this: every function here then touches the
module's own tensor, exactly as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "execution_device",
    "has_offload",
    "identity",
    "is_offloaded",
    "onloaded",
    "place_model",
    "read_tensor",
    "refresh_identity",
    "where",
    "write_tensor",
]

_AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


# ---- placing ----------------------------------------------------------------------------------


def place_model(
    model: nn.Module,
    device_map: str | Mapping[str, Any],
    *,
    offload_folder: str | os.PathLike | None = None,
    max_memory: Mapping[Any, Any] | None = None,
    no_split_module_classes: list[str] | None = None,
) -> nn.Module:
    """Dispatch `model` (on the CPU, in one piece) by `device_map`, as transformers does with
    `from_pretrained(device_map=...)`; returns the model, in eval mode.

    device_map: {module name: device} with devices such as 0, "cuda:1", "cpu" or "disk", or one
    of "auto", "balanced", "balanced_low_0", "sequential" (inferred from `max_memory`).
    offload_folder: where "disk" modules are written; it must not hold an earlier offload
    (accelerate would silently reuse those weights).
    """
    from accelerate import dispatch_model

    if isinstance(device_map, str):
        device_map = _infer_device_map(model, device_map, max_memory, no_split_module_classes)
    device_map = dict(device_map)
    if "disk" in device_map.values():
        if offload_folder is None:
            raise ValueError("the device_map offloads modules to 'disk': pass offload_folder")
        if (Path(offload_folder) / "index.json").exists():
            raise ValueError(f"offload_folder {offload_folder} already holds offloaded weights; use an empty folder")
    model = dispatch_model(model, device_map, offload_dir=None if offload_folder is None else str(offload_folder))
    model.eval()
    refresh_identity(model)
    return model


def _infer_device_map(model: nn.Module, kind: str, max_memory, no_split) -> dict[str, Any]:
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if kind not in _AUTO_MAPS:
        raise ValueError(f"device_map {kind!r}: expected a dict or one of {', '.join(_AUTO_MAPS)}")
    no_split = no_split if no_split is not None else list(getattr(model, "_no_split_modules", None) or [])
    if kind != "sequential":
        max_memory = get_balanced_memory(
            model, max_memory=max_memory, no_split_module_classes=no_split, low_zero=kind == "balanced_low_0"
        )
    return infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)


# ---- where things live ------------------------------------------------------------------------


def where(model: nn.Module, module: nn.Module) -> str:
    """Where `module` of `model` lives: "disk", "cpu", "cuda:0", ...

    Taken from the model's `hf_device_map` (the longest module-name prefix naming it) when the
    model was placed, else from the device of the module's first tensor.
    """
    dmap = getattr(model, "hf_device_map", None) or {}
    found = _lookup_prefix(dmap, _module_path(model, module)) if dmap else None
    if found is not None:
        return _device_name(found)
    return str(next(_tensors(module), torch.empty(0)).device)


def _lookup_prefix(dmap: Mapping[str, Any], name: str) -> Any:
    best, found = -1, None
    for key, dev in dmap.items():
        if (key == "" or name == key or name.startswith(key + ".")) and len(key) > best:
            best, found = len(key), dev
    return found


def _device_name(dev: Any) -> str:
    if isinstance(dev, int):
        return f"cuda:{dev}"
    return str(dev)


def execution_device(module: nn.Module) -> torch.device:
    """The device `module`'s forward computes on: its accelerate hook's execution device, else
    the device of its first tensor not on "meta", else that of a submodule's hook, else the CPU.

    Use it instead of `next(model.parameters()).device`, which is "meta" for an offloaded tensor.
    """
    for hook in _align_hooks(module):
        if hook.execution_device is not None:
            return _as_device(hook.execution_device)
    for t in _tensors(module):
        if t.device.type != "meta":
            return t.device
    for sub in module.modules():
        for hook in _align_hooks(sub):
            if hook.execution_device is not None:
                return _as_device(hook.execution_device)
    return torch.device("cpu")


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def _as_device(dev: Any) -> torch.device:
    return torch.device(_device_name(dev)) if isinstance(dev, int) else torch.device(dev)


def has_offload(model: nn.Module) -> bool:
    """True when some tensor of the model lives in an accelerate offload store (CPU map or disk)."""
    return any(h.offload and h.weights_map is not None for m in model.modules() for h in _align_hooks(m))


def is_offloaded(root: nn.Module | None, module: nn.Module, name: str = "weight") -> bool:
    """True when `module.<name>`'s values live in an offload store rather than in the module."""
    return _store(root, module, name) is not None


# ---- reading and writing ----------------------------------------------------------------------


def read_tensor(root: nn.Module | None, module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The values of `module.<name>` wherever they live.

    Not offloaded: the module's own tensor (writing into it writes the model). Offloaded: the
    stored tensor, for disk a fresh copy read from the offload folder; change it with
    `write_tensor`. root: the model holding `module`, needed when the hook sits on an ancestor.
    """
    found = _store(root, module, name)
    if found is None:
        return getattr(module, name)
    base, key = found
    return base[key]


@torch.no_grad()
def write_tensor(root: nn.Module | None, module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Set the values of `module.<name>` wherever they live, bitwise (same shape and dtype).

    An offloaded tensor is written into its store: in place in an in-memory map, into the .dat
    file of the offload folder for disk (a weight read from the checkpoint's safetensors gets its
    own .dat there: the checkpoint is never written). Call `refresh_identity(root)` after a series
    of writes to a model with offloaded tensors.
    """
    current = getattr(module, name)
    if tuple(value.shape) != tuple(current.shape) or value.dtype != current.dtype:
        raise ValueError(
            f"cannot write {tuple(value.shape)} {value.dtype} into {name} of {tuple(current.shape)} {current.dtype}"
        )
    found = _store(root, module, name)
    if found is None:
        current.copy_(value)
        return
    base, key = found
    _write_store(base, key, value.detach())


def _write_store(base: Mapping, key: str, value: torch.Tensor) -> None:
    from accelerate.utils import OffloadedWeightsLoader, offload_weight

    if isinstance(base, OffloadedWeightsLoader):
        if key in base.state_dict:
            base.state_dict[key].copy_(value)
        elif base.save_folder is not None:
            # offload_weight rewrites the .dat file and points the loader's index entry at it
            offload_weight(value.to("cpu", copy=True).contiguous(), key, base.save_folder, index=base.index)
        else:
            base.state_dict[key] = value.to("cpu", copy=True)
    elif isinstance(base, MutableMapping):
        if key in base:
            base[key].copy_(value)
        else:
            base[key] = value.to("cpu", copy=True)
    else:
        raise TypeError(f"cannot write into an offload store of type {type(base).__name__}")


def _align_hooks(module: nn.Module) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    from accelerate.hooks import AlignDevicesHook, SequentialHook

    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return [h for h in hooks if isinstance(h, AlignDevicesHook)]


def _offloading_hook(module: nn.Module, own: bool):
    for hook in _align_hooks(module):
        if hook.offload and hook.weights_map is not None and (own or hook.place_submodules):
            return hook
    return None


def _store(root: nn.Module | None, module: nn.Module, name: str) -> tuple[Mapping, str] | None:
    """(base map, full key) holding `module.<name>`, or None when the module holds it itself."""
    hook = _offloading_hook(module, own=True)
    if hook is not None:
        return _resolve(hook.weights_map, name)
    if root is None or getattr(module, name).device.type != "meta":
        return None  # the fast path of a model that was never placed
    path = _module_path(root, module)
    parts = path.split(".") if path else []
    for i in range(len(parts) - 1, -1, -1):
        owner = root.get_submodule(".".join(parts[:i]))
        hook = _offloading_hook(owner, own=False)
        if hook is not None:
            return _resolve(hook.weights_map, ".".join([*parts[i:], name]))
    return None


def _module_path(root: nn.Module, module: nn.Module) -> str:
    for n, m in root.named_modules(remove_duplicate=False):
        if m is module:
            return n
    raise ValueError(f"{type(module).__name__} is not a submodule of the given model")


def _resolve(weights_map: Mapping, key: str) -> tuple[Mapping, str]:
    from accelerate.utils import PrefixedDataset

    while isinstance(weights_map, PrefixedDataset):
        key = weights_map.prefix + key
        weights_map = weights_map.dataset
    return weights_map, key


# ---- a temporary whole view -------------------------------------------------------------------


@contextlib.contextmanager
def onloaded(model: nn.Module) -> Iterator[nn.Module]:
    """Give every offloaded tensor its stored values, on the CPU, for the duration of the block
    (then back to "meta"). Disk tensors saved by accelerate are memory-mapped, not read whole:
    code that samples a few values of each weight (the model identity) stays cheap."""
    from accelerate.utils import set_module_tensor_to_device
    from accelerate.utils.modeling import named_module_tensors

    placed: list[tuple[nn.Module, str]] = []
    try:
        for module in model.modules():
            hook = _offloading_hook(module, own=True)
            if hook is None:
                continue
            for name, t in named_module_tensors(
                module, include_buffers=hook.offload_buffers, recurse=hook.place_submodules, remove_non_persistent=True
            ):
                if t.device.type != "meta":
                    continue
                base, key = _resolve(hook.weights_map, name)
                set_module_tensor_to_device(module, name, "cpu", value=_lazy_value(base, key))
                placed.append((module, name))
        yield model
    finally:
        for module, name in placed:
            set_module_tensor_to_device(module, name, "meta")


def _lazy_value(base: Mapping, key: str) -> torch.Tensor:
    from accelerate.utils import OffloadedWeightsLoader

    if isinstance(base, OffloadedWeightsLoader) and key not in base.state_dict and base.save_folder is not None:
        info = base.index.get(key, {})
        if info.get("safetensors_file") is None and info.get("dtype") in ("float32", "float16", "float64"):
            shape = tuple(info["shape"]) or (1,)
            # copy-on-write mapping: writable for torch, never written back
            arr = np.memmap(os.path.join(base.save_folder, f"{key}.dat"), dtype=info["dtype"], mode="c", shape=shape)
            t = torch.from_numpy(arr)
            return t.reshape(()) if not info["shape"] else t
    return base[key]


# ---- the model identity -----------------------------------------------------------------------


def identity(model: nn.Module) -> str:
    """golden_fast.models.identity.model_identity for a model with offloaded tensors too: the
    same string as for the model in one piece."""
    from .identity import model_identity

    if not has_offload(model):
        return model_identity(model)
    cached = getattr(model, "_golden_fast_identity", None)
    if cached is not None and cached[0] == _versions(model):
        return cached[1]
    return refresh_identity(model)


def refresh_identity(model: nn.Module) -> str | None:
    """Recompute the identity of a model with offloaded tensors and leave it in the identity's
    cache, so that later `model_identity(model)` calls (which cannot read "meta" tensors) get it.
    Needed after writing weights: an offloaded write leaves the module's tensors untouched."""
    from .identity import model_identity

    if not has_offload(model):
        return None
    model.__dict__.pop("_golden_fast_identity", None)
    with onloaded(model):
        ident = model_identity(model)
    model._golden_fast_identity = (_versions(model), ident)
    return ident


def _versions(model: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for _, p in model.named_parameters())
