"""Files written whole or not at all, and line-delimited JSON (JSONL).

Every file golden-fast writes to read back later (results, caches, reports, saved journals,
converted models) goes through here, so that an interrupted run leaves the old file or the new
one, never half of one:

- the new content is written to a temporary file *in the destination's folder* (os.replace is
  atomic only within one file system), then renamed over the destination with os.replace;
- if the writer fails, the temporary file is removed and the destination is left as it was;
- with fsync=True the bytes reach the disk before the rename, so a power cut cannot leave an
  empty file under the final name (for what is costly to recompute: statistics, journals).

Also here: JSONL for resumable work (one row appended per finished unit, a torn last line cut
off on reading), the results' JSON conventions (`write_json`: NaN/inf stored as null), and
`check_meta`, which binds a results folder to the settings that made it.

This module imports nothing from golden_fast, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "append_jsonl",
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "atomic_write_json",
    "check_meta",
    "has_results",
    "iter_jsonl",
    "json_ready",
    "read_json",
    "read_jsonl",
    "replace_dir",
    "write_json",
]

# ---- files written whole or not at all --------------------------------------------------------


def _fsync(path: Path) -> None:
    # a read-only descriptor is enough for fsync on Linux and macOS; the writer may be a library
    # (safetensors, matplotlib) that gives us no handle of its own
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (safetensors' save_file,
    torch.save, savefig, shutil.copyfile); renamed over `path` when the block ends normally.

    If the block raises, the temporary file is removed and `path` is left as it was. The parent
    folder is created if needed. The temporary file is created empty (with the umask's usual
    permissions, unlike tempfile.mkstemp's 0600), hidden, and unique to this call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write `data` (str: as UTF-8) to `path` atomically; returns the path."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(raw)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = False, **json_kwargs: Any) -> Path:
    """Write `json.dumps(obj, **json_kwargs)` (no trailing newline) to `path` atomically.

    The format is the caller's (indent, default, ...): each cache keeps the exact bytes it had.
    """
    return atomic_write(path, json.dumps(obj, **json_kwargs), fsync=fsync)


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move folder `tmp` to `path`. An existing `path` is moved aside first and deleted only once
    the new one is in place (os.replace cannot replace a non-empty folder), so there is always
    a complete `path`, old or new, except between two renames."""
    tmp, path = Path(tmp), Path(path)
    if not path.exists() and not path.is_symlink():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; it replaces `path` (see `replace_dir`) when the
    block ends normally, and is deleted if the block raises. Its parent folder is created if
    needed. Whether `path` may already exist is the caller's decision, made before."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- the results' JSON conventions ------------------------------------------------------------


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def json_ready(x: Any) -> Any:
    """NaN / inf become None (JSON has no NaN, and an absent value is None by the reports'
    convention); mapping keys become strings, tuples lists."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    return x


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write a result as JSON atomically (indent 1, NaN as null; arrays, Paths and objects with
    to_dict converted); returns the path."""
    return atomic_write_json(path, json_ready(obj), indent=1, default=_default, allow_nan=False)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in `path`, or None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to recompute that part") from None


# ---- JSON Lines -------------------------------------------------------------------------------


def _parse_lines(lines: Iterable[str], path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSONL file, streamed; the file is only
    read. A line that is not JSON raises ValueError naming the file and the line."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        yield from _parse_lines(f, path)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a file written by `append_jsonl` ([] when absent).

    A torn last line (a write cut short) is removed from the file, or the next appended row
    would be glued to it; that unit of work simply runs again. Any other bad line is an error.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        keep = text[: text.rfind("\n") + 1]
        with path.open("r+b") as f:
            f.truncate(len(keep.encode("utf-8")))
        text = keep
    try:
        return [row for _, row in _parse_lines(io.StringIO(text), path)]
    except ValueError as exc:
        raise ValueError(f"{exc}; delete the file to recompute it") from None


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Append one row (in the `write_json` conventions, on one line) and, with fsync, make it
    durable before returning: it is the unit of work a resumed run skips."""
    line = json.dumps(json_ready(record), default=_default, allow_nan=False) + "\n"
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


# ---- a results folder bound to its settings ----------------------------------------------------


def has_results(folder: str | os.PathLike, ignore: Sequence[str] = ("meta.json",)) -> bool:
    """True when `folder` holds a file (at any depth) other than those named in `ignore` (top level)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for p in folder.rglob("*"):
        if p.is_file() and not (p.parent == folder and p.name in ignore):
            return True
    return False


def _changed(a: Any, b: Any) -> tuple[Any, Any]:
    """The entries of two mappings that differ (the values themselves otherwise), for a short message."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in {**a, **b} if a.get(k) != b.get(k)]
        return {k: a.get(k) for k in keys}, {k: b.get(k) for k in keys}
    return a, b


def check_meta(folder: str | os.PathLike, meta: Mapping[str, Any], what: str,
               ignore: Sequence[str] = ("meta.json",), adopt: Sequence[str] = ()) -> None:
    """Record `meta` in folder/meta.json, or check that it equals what is recorded there.

    Raises ValueError naming the settings that differ: results made with other settings are never
    mixed with new ones (use another output folder). A folder with no result yet (nothing but the
    files in `ignore`) takes the new settings: a run that failed before measuring anything binds nothing.
    `adopt`: mappings whose entries a folder may lack (a method added to a study, a setting recorded
    since the folder was made): the missing entries are recorded now and bind from then on; the
    entries it holds must match. A folder that lacks the whole setting gets a warning.
    """
    folder = Path(folder)
    path = folder / "meta.json"
    meta = json.loads(json.dumps(json_ready(dict(meta)), default=_default))
    old = read_json(path)
    if old is None or not has_results(folder, ignore):
        write_json(path, meta)
        return
    grown = dict(old)
    for k in adopt:
        if k not in meta:
            continue
        if k not in old:
            warnings.warn(f"{folder}: the {what} there predates the recording of {k}; the current values are "
                          "recorded and assumed to be those it was made with", stacklevel=2)
            grown[k] = meta[k]
        elif isinstance(old[k], dict) and isinstance(meta[k], dict):
            grown[k] = old[k] | {e: v for e, v in meta[k].items() if e not in old[k]}
    if grown != old:
        write_json(path, grown)
        old = grown
    # settings recorded there that no longer bind (a later version dropped them) are not compared; of
    # an adopted mapping only the entries asked for now are
    diff = []
    for k in sorted(meta):
        if k in adopt and isinstance(old.get(k), dict) and isinstance(meta[k], dict):
            diff += [(f"{k}[{e!r}]", old[k][e], v) for e, v in meta[k].items() if old[k][e] != v]
        elif old.get(k) != meta[k]:
            diff.append((k, old.get(k), meta[k]))
    if diff:
        detail = "; ".join("{}: was {!r}, now {!r}".format(k, *_changed(a, b)) for k, a, b in diff[:4])
        raise ValueError(
            f"{folder}: the {what} there was made with other settings ({detail}); use another output folder "
            "or delete that one"
        )
