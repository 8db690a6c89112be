"""A stable identity for a model's weights, used as the key of every on-disk cache
(statistics, context templates). Two models with the same name but different weights
(a fine-tune, an edited copy) must never share a cache entry."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn


def model_identity(model: nn.Module) -> str:
    """"<name>-<16 hex>": the name for humans, a hash of the config and of every parameter's
    shape, dtype and a strided sample of its values for exactness. Cheap (reads ~64k values),
    and cached on the model until its weights change version."""
    params = list(model.named_parameters())
    version = tuple(p._version for _, p in params)
    cached = getattr(model, "_golden_fast_identity", None)
    if cached is not None and cached[0] == version:
        return cached[1]
    h = hashlib.sha256()
    model_config = getattr(model, "config", None)
    if model_config is not None:
        d = {k: v for k, v in model_config.to_dict().items() if k not in ("_name_or_path", "name_or_path", "dtype",
                                                                   "torch_dtype", "transformers_version")}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    for name, p in params:
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 512)
        h.update(flat[::step][:512].to(torch.float64).cpu().numpy().tobytes())
    name = str(getattr(model_config, "name_or_path", "") or getattr(model_config, "_name_or_path", "")
               or type(model).__name__)
    name = name.rstrip("/").rsplit("/", 1)[-1] or "model"
    ident = f"{name}-{h.hexdigest()[:16]}"
    model._golden_fast_identity = (version, ident)
    return ident
