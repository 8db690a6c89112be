"""Files of a resumable experiment: atomic JSON writes, append-only JSONL rows, settings checks.

A part's results are written to a temporary name and renamed into place, so an interruption
leaves either the old file or the new one; rows appended one per finished unit of work (a fact
edited at a layer) survive a kill except for a torn last line, which is cut off on reading.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["append_jsonl", "check_meta", "has_results", "read_json", "read_jsonl", "write_json"]


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def _clean(x: Any) -> Any:
    """NaN / inf become None: JSON has no NaN, and an absent value is None by the reports' convention."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(_clean(obj), indent=1, default=_default, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to recompute that part") from None


def append_jsonl(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    """Append one row and flush it to disk before returning (it is the unit a resumed run skips)."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(json.dumps(_clean(row), default=_default, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of `path` ([] when absent). A torn last line (a write cut short) is removed from the
    file, or the next appended row would be glued to it; that unit of work simply runs again."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        keep = text[: text.rfind("\n") + 1]
        with path.open("r+b") as f:
            f.truncate(len(keep.encode("utf-8")))
        text = keep
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}: line {n} is not JSON; delete the file to recompute it") from None
    return rows


def has_results(folder: str | os.PathLike, ignore: Sequence[str] = ("meta.json",)) -> bool:
    """True when `folder` holds a file (at any depth) other than those named in `ignore` (top level)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for p in folder.rglob("*"):
        if p.is_file() and not (p.parent == folder and p.name in ignore):
            return True
    return False


def check_meta(folder: str | os.PathLike, meta: Mapping[str, Any], what: str,
               ignore: Sequence[str] = ("meta.json",)) -> None:
    """Record `meta` in folder/meta.json, or check that it equals what is recorded there.

    Raises ValueError naming the settings that differ: results made with other settings are never
    mixed with new ones (use another output folder). A folder with no result yet (nothing but the
    files in `ignore`) takes the new settings: a run that failed before measuring anything binds nothing.
    """
    folder = Path(folder)
    path = folder / "meta.json"
    meta = json.loads(json.dumps(_clean(dict(meta)), default=_default))
    old = read_json(path)
    if old is None or not has_results(folder, ignore):
        write_json(path, meta)
        return
    # settings recorded there that no longer bind (a later version dropped them) are not compared
    diff = sorted(k for k in meta if old.get(k) != meta.get(k))
    if diff:
        detail = "; ".join(f"{k}: was {old.get(k)!r}, now {meta.get(k)!r}" for k in diff[:4])
        raise ValueError(
            f"{folder}: the {what} there was made with other settings ({detail}); use another output folder "
            "or delete that one"
        )
