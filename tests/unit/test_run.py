"""The main job end to end on a tiny model: LGA's layer, edits, the table, the report files."""

from __future__ import annotations

import json

import pytest

from golden_fast.cli import main


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    return tmp_path


def test_run_cli_prints_layer_table_and_report(home, capsys):
    out = home / "report"
    rc = main(["run", "--model", "tiny-llama", "--n-proxy", "4", "--n-edit", "3", "--mom2-n-samples", "8",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())["results"]
    layer = data["layer"]
    assert f"LGA (signed) on 4 proxy facts chose layer {layer}" in text
    assert data["lga"]["chosen"] == layer and len(data["lga"]["scores"]) == 4  # tiny-llama: 4 layers
    assert set(data["proxy"]).isdisjoint(data["test"]) and len(data["test"]) == 3
    # pre and post columns for both editors, and the report's path printed last
    assert "pre-edit" in text and "r-rome (one by one)" in text and "emmet (batch of 3)" in text
    assert text.strip().splitlines()[-3].endswith("report.html")
    summ = data["summaries"]
    assert summ["pre-edit"]["rewrite_acc"]["n"] == 3 and summ["r-rome (one by one)"]["rewrite_acc"]["n"] == 3
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and f"chose layer {layer}" in html


def test_run_with_a_given_layer_skips_lga(home, capsys):
    rc = main(["run", "--model", "tiny-gpt2", "--layer", "1", "--n-proxy", "2", "--n-edit", "2",
               "--methods", "rome", "--mom2-n-samples", "8", "--out", str(home / "r"), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "layer 1 given (LGA skipped)" in text and "rome (one by one)" in text
    data = json.loads((home / "r" / "results.json").read_text())["results"]
    assert data["lga"] is None and data["layer"] == 1


def test_run_rejects_bad_settings(home, capsys):
    assert main(["run", "--model", "tiny-llama", "--methods", " , ", "--no-progress"]) == 2
    assert "--methods" in capsys.readouterr().err


def test_run_with_the_hybrid_locator(home, capsys):
    """--locator hybrid: LGA's shortlist, then trial edits; the report says how many."""
    out = home / "hybrid"
    rc = main(["run", "--model", "tiny-llama", "--locator", "hybrid", "--n-proxy", "4", "--n-edit", "2",
               "--methods", "r-rome", "--mom2-n-samples", "8", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())["results"]
    layer = data["layer"]
    assert f"HYBRID (signed) on 4 proxy facts chose layer {layer}" in text
    edits = data["lga"]["extra"]["cost"]["edits"]
    assert edits > 0 and data["lga"]["chosen"] == layer
    assert f"with {edits} trial edits" in (out / "report.html").read_text()
    assert "hybrid" in data["timings_s"]
