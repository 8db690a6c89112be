"""On-disk cache of second moments (FORMULAS.md, "Second-moment statistics C_l"): one safetensors
file per (model identity, corpus, layer, sample count, dtype), holding the sum AND its token
count, written atomically; plus the checkpoint of a pass in progress, so an interrupted pass
resumes.

Layout, under golden_fast.models.home() / "stats":

    <model identity>/<corpus key>/layer012-n100000-float32.safetensors   sum (m, m), count ()
    <model identity>/<corpus key>/partial-n100000-float32-<layers hash>.safetensors
    <model identity>/<corpus key>/partial-n100000-float32-<layers hash>-rank1of2.safetensors  (torchrun)

The corpus key (golden_fast.stats.corpus.corpus_key) covers the source and the tokenisation
settings. Files are written to a temporary name in the same folder, flushed, then os.replace'd
into place: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from golden_fast.fileio import atomic_path

__all__ = [
    "FORMAT_VERSION",
    "atomic_save",
    "checkpoint_path",
    "layer_path",
    "load_checkpoint",
    "load_layer",
    "stats_dir",
]

# Bumped when the meaning of a cached file changes; older files are then ignored, not misread.
FORMAT_VERSION = "1"


def stats_dir(model_id: str, corpus_key: str) -> Path:
    from golden_fast.models import home

    return home() / "stats" / model_id / corpus_key


def layer_path(folder: Path, layer: int, n_samples: int, dtype: str) -> Path:
    return folder / f"layer{layer:03d}-n{n_samples}-{dtype}.safetensors"


def checkpoint_path(folder: Path, layers: Sequence[int], n_samples: int, dtype: str, rank: int = 0,
                    world_size: int = 1) -> Path:
    """The checkpoint of a pass over `layers`; under torchrun one per rank (each holds its own share)."""
    tag = hashlib.sha256(",".join(map(str, sorted(layers))).encode()).hexdigest()[:12]
    ranks = f"-rank{rank}of{world_size}" if world_size > 1 else ""
    return folder / f"partial-n{n_samples}-{dtype}-{tag}{ranks}.safetensors"


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors file written to a temporary sibling, fsync'ed, then renamed over `path`."""
    with atomic_path(path, fsync=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": FORMAT_VERSION, **metadata})


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """(tensors, metadata), or None when the file is missing, unreadable or of another format."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_VERSION:
                return None
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception:  # a corrupt file is a cache miss: it will be recomputed and replaced
        return None


def load_layer(path: Path, expect: dict[str, str]) -> tuple[torch.Tensor, int, dict[str, str]] | None:
    """(sum, count, metadata) of a cached layer whose metadata matches `expect`, else None."""
    got = _read(path)
    if got is None:
        return None
    tensors, meta = got
    if any(meta.get(k) != v for k, v in expect.items()) or "sum" not in tensors or "count" not in tensors:
        return None
    return tensors["sum"], int(tensors["count"].item()), meta


def save_layer(path: Path, total: torch.Tensor, count: int, metadata: dict[str, str]) -> None:
    atomic_save({"sum": total, "count": torch.tensor(count, dtype=torch.int64)}, path, metadata)


def save_checkpoint(
    path: Path, sums: dict[int, torch.Tensor], counts: dict[int, int], done: int, metadata: dict[str, str]
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for layer, s in sums.items():
        tensors[f"sum.{layer}"] = s
        tensors[f"count.{layer}"] = torch.tensor(counts[layer], dtype=torch.int64)
    atomic_save(tensors, path, {**metadata, "batches_done": str(done)})


def load_checkpoint(
    path: Path, layers: Sequence[int], expect: dict[str, str]
) -> tuple[dict[int, torch.Tensor], dict[int, int], int] | None:
    """(sums, counts, batches done) of a checkpoint made with the same plan, else None."""
    got = _read(path)
    if got is None:
        return None
    tensors, meta = got
    if any(meta.get(k) != v for k, v in expect.items()):
        return None
    try:
        sums = {layer: tensors[f"sum.{layer}"] for layer in layers}
        counts = {layer: int(tensors[f"count.{layer}"].item()) for layer in layers}
        return sums, counts, int(meta["batches_done"])
    except (KeyError, ValueError):
        return None


def meta_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
