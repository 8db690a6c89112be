"""Reuse of optimised targets (ROME's v*, MEMIT's z) within one study.

A target depends only on the request (prompt, subject, target_new), the layer and site, the
context templates, the optimisation settings and the weights it was optimised on. A study computes
the same ones many times: ROME and R-ROME optimise the same v* at a layer; MEMIT and EMMET the
same z; the mass-editing curve's batch of 1,000 holds the batch of 100, which holds the batch of 10.
Inside `with reuse_targets():`, `optimise_targets` looks each request up first and optimises only
the missing ones (a request's target is the same alone or in a batch: the batched loop is
element-wise, see values.py).

Valid only on the weights a target was made on: the key holds a fingerprint of every
down-projection (the only weights golden-fast edits; editing anything else inside the block is
the caller's responsibility), so targets made before a sequential edit are never served after it.

Honest timing: each entry keeps the seconds it cost (its share of its batch's setup and loop), and
a result built from cached entries reports them as `reused_seconds`, so a study can report every
method's time as if it had optimised its own targets.

Under torchrun, a collective edit (`common.collective`) puts every rank's targets into every rank's
cache, so the caches stay the same on all ranks; `save` then writes from rank 0 alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["CachedTarget", "TargetCache", "active_target_cache", "reuse_targets", "weights_fingerprint"]

#: the optimisation settings a target depends on (besides templates, layer and site)
TARGET_FIELDS = ("v_num_grad_steps", "v_lr", "v_loss_layer", "v_weight_decay", "clamp_norm_factor",
                 "kl_factor", "nll_stop", "prefix_reuse")


@dataclasses.dataclass
class CachedTarget:
    """One optimised target and what it cost (seconds: its share of its batch's setup and loop)."""

    delta: torch.Tensor  # (d,) float32
    init: torch.Tensor  # (d,) float64
    loss_curve: list[float]
    nll_final: float
    seconds: float


class TargetCache:
    """In-memory store of optimised targets; `hits` / `misses` count requests served / optimised."""

    def __init__(self) -> None:
        self._store: dict[tuple, CachedTarget] = {}
        self.hits = 0
        self.misses = 0
        self._autosave: tuple[Path, float] | None = None
        self._unsaved = 0
        self._saved_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: tuple) -> CachedTarget | None:
        return self._store.get(key)

    def put(self, key: tuple, entry: CachedTarget) -> None:
        self._store[key] = entry
        self._unsaved += 1

    def autosave(self, path: str | os.PathLike, every_s: float = 300.0) -> TargetCache:
        """Save to `path` at `checkpoint()` once `every_s` seconds have passed since the last save and
        there is something new: an optimisation of many groups, interrupted, keeps the groups it finished."""
        self._autosave = (Path(path), float(every_s))
        self._saved_at = time.monotonic()
        return self

    def checkpoint(self) -> None:
        """Called between groups of targets (values.py): saves when `autosave` asks for it. Never in a
        collective edit: the ranks' clocks differ, and a save there waits for every rank."""
        from golden_fast.edit.common import collective

        if self._autosave is None or not self._unsaved or collective():
            return
        path, every_s = self._autosave
        if time.monotonic() - self._saved_at >= every_s:
            self.save(path)

    def save(self, path: str | os.PathLike) -> Path:
        """Write every entry to one safetensors file (tensors, with the keys and costs as its JSON
        metadata), atomically, so a later process can serve the same targets (`TargetCache.load`).
        Entries already in the file and not in this cache are kept (and added to this cache).

        In a collective edit's process group every rank holds the same cache: rank 0 writes it and
        every rank returns once it is written. Each rank writes its own path otherwise."""
        from golden_fast import distributed
        from golden_fast.edit.common import collective

        path = Path(path)
        if not collective():
            return self._write(path)
        if distributed.is_main():
            self._write(path)
        distributed.barrier()
        return path

    def _write(self, path: Path) -> Path:
        from safetensors.torch import save_file

        from golden_fast.fileio import atomic_path

        # entries another process wrote since this cache was loaded are kept (this one's win a tie):
        # several runs on one model share the file
        for k, e in TargetCache.load(path)._store.items():
            self._store.setdefault(k, e)
        keys = list(self._store)
        tensors = {}
        meta = []
        for i, k in enumerate(keys):
            e = self._store[k]
            tensors[f"{i}.delta"], tensors[f"{i}.init"] = e.delta.contiguous(), e.init.contiguous()
            meta.append({"key": k, "loss_curve": e.loss_curve, "nll_final": e.nll_final, "seconds": e.seconds})
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "golden-fast-targets", "entries": json.dumps(meta)})
        self._unsaved = 0
        self._saved_at = time.monotonic()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TargetCache:
        """The cache `save` wrote; an empty one when the file does not exist."""
        from safetensors import safe_open

        cache = cls()
        path = Path(path)
        if not path.is_file():
            return cache
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "golden-fast-targets":
                raise ValueError(f"{path}: not a golden-fast target cache")
            for i, m in enumerate(json.loads(meta["entries"])):
                cache._store[_as_tuple(m["key"])] = CachedTarget(
                    f.get_tensor(f"{i}.delta"), f.get_tensor(f"{i}.init"), list(m["loss_curve"]),
                    float(m["nll_final"]), float(m["seconds"]))
        return cache


def _as_tuple(x: Any) -> Any:
    """JSON lists back to the tuples a key is made of."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list) else x


_ACTIVE: contextvars.ContextVar[TargetCache | None] = contextvars.ContextVar("golden_fast_target_cache",
                                                                          default=None)


def active_target_cache() -> TargetCache | None:
    return _ACTIVE.get()


@contextlib.contextmanager
def reuse_targets(cache: TargetCache | None = None) -> Iterator[TargetCache]:
    """Within the block, optimised targets are looked up in `cache` (a new one if None) first."""
    cache = TargetCache() if cache is None else cache
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def weights_fingerprint(model: Any) -> tuple[float, ...]:
    """Float64 sum and sum of squares of every down-projection: any edit golden-fast makes (a sum of
    rank-one terms) changes them, so a target is never served on other weights than its own."""
    from golden_fast.models import get_adapter

    adapter = get_adapter(model)
    out: list[float] = []
    with torch.no_grad():
        for layer in range(adapter.n_layers):
            w = adapter.down_weight(layer)
            out.append(float(w.sum(dtype=torch.float64)))
            out.append(float(w.double().pow(2).sum()))
    return tuple(out)


def settings_key(layer: int, site: str, templates: Sequence[str], hparams: Any, prefix_reuse: bool) -> tuple:
    fields = {f: getattr(hparams, f, None) for f in TARGET_FIELDS}
    fields["prefix_reuse"] = bool(prefix_reuse)
    return (int(layer), site, tuple(templates), json.dumps(fields, sort_keys=True, default=str))


def request_key(req: Any) -> tuple:
    return (req.template, req.subject, req.target_new)
