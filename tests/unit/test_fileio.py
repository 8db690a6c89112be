"""golden_fast.fileio: files written whole or not at all, JSON Lines, settings bound to a folder."""

from __future__ import annotations

import json
import math

import pytest

from golden_fast.fileio import (
    append_jsonl,
    atomic_dir,
    atomic_path,
    atomic_write,
    atomic_write_json,
    check_meta,
    iter_jsonl,
    read_json,
    read_jsonl,
    write_json,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # the folder is created
    atomic_write(path, "old ü")
    assert path.read_bytes() == "old ü".encode()
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    atomic_write_json(tmp_path / "b.json", {"b": 1, "a": [1, 2]}, indent=1)
    assert (tmp_path / "b.json").read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=1)  # key order kept
    assert _leftovers(tmp_path) == []


def test_a_writer_that_fails_half_way_leaves_the_old_file(tmp_path):
    path = tmp_path / "weights.bin"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path, fsync=True) as tmp:
            assert tmp.parent == path.parent  # same folder: os.replace is atomic there
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):  # an interruption too
        with atomic_path(tmp_path / "never.bin") as tmp:
            tmp.write_bytes(b"x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_atomic_dir(tmp_path):
    path = tmp_path / "journal"
    with atomic_dir(path) as tmp:
        (tmp / "x").write_text("1")
    assert (path / "x").read_text() == "1"
    with pytest.raises(ValueError):
        with atomic_dir(path) as tmp:
            (tmp / "x").write_text("2")
            raise ValueError
    assert (path / "x").read_text() == "1" and _leftovers(tmp_path) == []
    with atomic_dir(path) as tmp:  # an existing folder is replaced whole
        (tmp / "y").write_text("3")
    assert sorted(p.name for p in path.iterdir()) == ["y"] and _leftovers(tmp_path) == []


def test_jsonl_round_trip_and_a_torn_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert read_jsonl(path) == []
    rows = [{"key": "a", "v": 1.5, "w": [1, 2]}, {"key": "b", "v": None, "t": "ü"}]
    for row in rows:
        append_jsonl(path, row)
    append_jsonl(path, {"key": "c", "v": math.nan}, fsync=False)
    assert read_jsonl(path) == [*rows, {"key": "c", "v": None}]  # NaN is stored as null
    assert [n for n, _ in iter_jsonl(path)] == [1, 2, 3]
    with path.open("a") as f:
        f.write('{"key": "d", "v"')  # killed in the middle of a write
    assert len(read_jsonl(path)) == 3
    append_jsonl(path, {"key": "d"})  # starts on a line of its own: the torn tail was cut
    assert [r["key"] for r in read_jsonl(path)] == ["a", "b", "c", "d"]


def test_a_bad_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:3: not JSON"):
        list(iter_jsonl(path))
    with pytest.raises(ValueError, match=r"rows.jsonl:3: not JSON.*delete the file"):
        read_jsonl(path)


def test_write_json_conventions(tmp_path):
    path = write_json(tmp_path / "r" / "x.json", {"a": (1, math.inf), 2: tmp_path})
    assert path.read_text() == json.dumps({"a": [1, None], "2": str(tmp_path)}, indent=1)
    assert read_json(path) == {"a": [1, None], "2": str(tmp_path)}
    assert read_json(tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_check_meta_binds_a_folder_to_its_settings(tmp_path):
    out = tmp_path / "run"
    check_meta(out, {"model": "m", "lr": 0.5}, "search")
    assert read_json(out / "meta.json") == {"model": "m", "lr": 0.5}
    check_meta(out, {"model": "m2", "lr": 0.5}, "search")  # no result yet: the new settings bind
    assert read_json(out / "meta.json")["model"] == "m2"
    (out / "rows.jsonl").write_text("{}\n")
    check_meta(out, {"model": "m2", "lr": 0.5}, "search")  # same settings: fine
    with pytest.raises(ValueError, match=r"run: the search there was made with other settings "
                                         r"\(lr: was 0.5, now 0.25\); use another output folder"):
        check_meta(out, {"model": "m2", "lr": 0.25}, "search")
    assert read_json(out / "meta.json") == {"model": "m2", "lr": 0.5}  # untouched


def test_check_meta_adopts_entries_a_folder_lacks(tmp_path):
    out = tmp_path / "run"
    check_meta(out, {"model": "m"}, "curve")
    (out / "rows.jsonl").write_text("{}\n")
    # a setting recorded since the folder was made: recorded now, with a warning
    with pytest.warns(UserWarning, match="predates the recording of editors"):
        check_meta(out, {"model": "m", "editors": {"emmet": {"v_lr": 0.5}}}, "curve", adopt=("editors",))
    assert read_json(out / "meta.json")["editors"] == {"emmet": {"v_lr": 0.5}}
    # a method added to the folder joins it; one asked for no more is not compared
    check_meta(out, {"model": "m", "editors": {"memit": {"v_lr": 0.5}}}, "curve", adopt=("editors",))
    assert read_json(out / "meta.json")["editors"] == {"emmet": {"v_lr": 0.5}, "memit": {"v_lr": 0.5}}
    # a recorded method with other settings is refused, naming the method and the field
    with pytest.raises(ValueError, match=r"editors\['emmet'\]: was \{'v_lr': 0.5\}, now \{'v_lr': 4.0\}"):
        check_meta(out, {"model": "m", "editors": {"emmet": {"v_lr": 4.0}}}, "curve", adopt=("editors",))
    # without adopt the mapping binds whole
    with pytest.raises(ValueError, match="editors: was"):
        check_meta(out, {"model": "m", "editors": {"emmet": {"v_lr": 0.5}}}, "curve")
