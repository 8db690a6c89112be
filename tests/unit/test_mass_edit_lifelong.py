"""bench/mass_edit.py's lifelong mode resumes at its last chunk: a run stopped in the middle and run
again ends with the curve and the weights of a run that was never stopped (tiny model, UltraEdit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import mass_edit  # noqa: E402

from golden_fast.data.location import data_file  # noqa: E402

FACTS = ROOT / "golden_fast" / "data" / "builtin" / "facts.json"


def _args(out: Path) -> list[str]:
    return ["lifelong", "--model", "tiny-llama", "--data", str(FACTS), "--methods", "ultraedit", "--layers", "1,2",
            "--total", "6", "--chunk", "2", "--every", "4", "--ppl-window", "32", "--ppl-tokens", "128",
            "--out", str(out)]


def _curve(out: Path) -> list[dict]:
    rows = json.loads((out / "lifelong-ultraedit-c2" / "curve.json").read_text())
    return [{k: r[k] for k in ("edits", "summary", "perplexity_after")} for r in rows]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    try:
        data_file("wikitext-2/valid.txt")
    except (FileNotFoundError, OSError) as exc:
        pytest.skip(f"WikiText-2 is not in the data folder: {exc}")
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    return tmp_path


def test_a_stopped_lifelong_run_resumes_at_its_last_chunk(home, monkeypatch):
    assert mass_edit.main(_args(home / "whole")) == 0
    whole = _curve(home / "whole")
    assert [r["edits"] for r in whole] == [4, 6]  # every 4 facts, and at the end

    real, calls = mass_edit.Editor.edit, {"n": 0}

    def stop_at_third_chunk(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(mass_edit.Editor, "edit", stop_at_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        mass_edit.main(_args(home / "stopped"))
    folder = home / "stopped" / "lifelong-ultraedit-c2"
    assert sorted(p.name for p in folder.glob("journal-*")) == ["journal-00002", "journal-00004"]
    assert [r["edits"] for r in json.loads((folder / "curve.json").read_text())] == [4]
    monkeypatch.setattr(mass_edit.Editor, "edit", real)
    edited = {"n": 0}

    def count(self, *a, **k):
        edited["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(mass_edit.Editor, "edit", count)
    assert mass_edit.main(_args(home / "stopped")) == 0
    assert edited["n"] == 1  # only the last chunk was edited again
    assert _curve(home / "stopped") == whole
    chunks = json.loads((folder / "chunks.json").read_text())
    assert [c["edits"] for c in chunks] == [2, 4, 6] and all(c["seconds"] > 0 for c in chunks)


def test_a_run_without_its_journals_measures_again_instead_of_appending(home):
    """A checkout has the curve and the chunk times but not the journals (they are not versioned):
    a rerun edits from the start and ends with the same curve, not with points twice."""
    import shutil

    assert mass_edit.main(_args(home / "run")) == 0
    whole = _curve(home / "run")
    folder = home / "run" / "lifelong-ultraedit-c2"
    for j in folder.glob("journal-*"):
        shutil.rmtree(j)
    assert mass_edit.main(_args(home / "run")) == 0
    assert _curve(home / "run") == whole
    assert [c["edits"] for c in json.loads((folder / "chunks.json").read_text())] == [2, 4, 6]


def test_table_mode_draws_the_lifelong_curves(home, capsys):
    """`table` prints the rows and draws lifelong.png from the saved curves; with no lifelong run
    under the folder it draws nothing."""
    assert mass_edit.main(["table", "--out", str(home / "empty")]) == 0
    assert not (home / "empty" / "lifelong.png").exists()
    assert mass_edit.main(_args(home / "run")) == 0
    capsys.readouterr()
    assert mass_edit.main(["table", "--out", str(home / "run")]) == 0
    printed = capsys.readouterr().out
    assert "| ultraedit | 4 | lifelong, 2 a time |" in printed and "| ultraedit | 6 |" in printed
    png = home / "run" / "lifelong.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((home / "run").glob(".lifelong.tmp*"))  # written through a temporary name


def test_lifelong_chunks_take_stored_targets_and_count_their_cost(home):
    """A z-based lifelong run stores its targets; a second run in another folder, on the same model
    and facts, replays the same edits, so every chunk's z is served, and each chunk's seconds include
    the served targets' recorded cost."""
    args = ["lifelong", "--model", "tiny-llama", "--data", str(FACTS), "--methods", "memit", "--layers", "1,2",
            "--total", "4", "--chunk", "2", "--every", "4", "--ppl-window", "32", "--ppl-tokens", "128",
            "--hparams", '{"memit": {"mom2_adjustment": false, "v_num_grad_steps": 2, '
                         '"context_template_length_params": [[3, 1]]}}']
    assert mass_edit.main(args + ["--out", str(home / "first")]) == 0
    first = json.loads((home / "first" / "lifelong-memit-c2" / "chunks.json").read_text())
    assert [c["targets_served"] for c in first] == [0, 0] and all(c["targets_reused_seconds"] == 0 for c in first)
    assert mass_edit.main(args + ["--out", str(home / "second")]) == 0
    second = json.loads((home / "second" / "lifelong-memit-c2" / "chunks.json").read_text())
    assert [c["targets_served"] for c in second] == [2, 2]
    assert all(c["targets_reused_seconds"] > 0 and c["seconds"] >= c["targets_reused_seconds"] for c in second)
    one = json.loads((home / "first" / "lifelong-memit-c2" / "curve.json").read_text())
    two = json.loads((home / "second" / "lifelong-memit-c2" / "curve.json").read_text())
    assert [r["summary"] for r in one] == [r["summary"] for r in two]
