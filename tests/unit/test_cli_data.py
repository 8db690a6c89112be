"""`golden-fast data validate|inspect`, through golden_fast.cli.main."""

from __future__ import annotations

import json

import pytest

from golden_fast.cli import main


def cf(i: int, **kw) -> dict:
    d = {
        "case_id": i,
        "prompt": f"The mother tongue of P{i} is",
        "subject": f"P{i}",
        "target_new": "English",
        "ground_truth": "French",
        "rephrase_prompt": f"P{i} speaks",
        "locality_prompt": "Michel speaks",
        "locality_ground_truth": "French",
    }
    return {**d, **kw}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.json"
    path.write_text(json.dumps([cf(i) for i in range(5)]))
    return path


@pytest.fixture
def bad(tmp_path):
    records = [cf(i) for i in range(6)]
    records[1]["target_new"] = "French"
    del records[4]["subject"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    return path


def test_validate_all_valid(good, capsys):
    assert main(["data", "validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "format counterfact (detected), 5 records: 5 valid, 0 invalid" in out
    assert "invalid:" not in out


def test_validate_lists_every_invalid_record(bad, capsys):
    assert main(["data", "validate", str(bad), "--format", "counterfact"]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert "format counterfact (given), 6 records: 4 valid, 2 invalid" in lines[0]
    assert lines[1:] == [
        "  invalid: record 1 (case_id 1): field 'target_new': equals ground_truth 'French': nothing to edit",
        "  invalid: record 4 (case_id 4): field 'subject': missing",
    ]


def test_validate_builtin(capsys):
    assert main(["data", "validate", "builtin"]) == 0
    assert "golden-fast (detected)" in capsys.readouterr().out


def test_inspect(bad, capsys):
    assert main(["data", "inspect", str(bad), "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "format:  counterfact (detected)" in out
    assert "records: 6: 4 valid, 2 invalid" in out
    assert "field 'subject': missing" in out
    assert "rephrase_prompts            4  4 prompts" in out
    assert "locality                    4  4 probes: neighborhood 4" in out
    assert "portability                 0  0 probes" in out
    assert "record 0 (case_id 0): The mother tongue of [P0] is -> English (was French)" in out
    assert "locality[neighborhood]: Michel speaks -> French" in out
    assert "record 2 (case_id 2)" in out and "record 3 (case_id 3)" not in out  # --show 2 valid records


def test_inspect_limit_and_builtin(capsys):
    assert main(["data", "inspect", "builtin", "--limit", "10", "--show", "0"]) == 0
    out = capsys.readouterr().out
    assert "(first 10 inspected): 10 valid, 0 invalid" in out
    assert "portability" in out and "first " not in out.split("fields")[1]


def test_unknown_format_and_missing_file(good, tmp_path, capsys):
    assert main(["data", "validate", str(good), "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert "unknown data format 'csv'; known formats: counterfact" in err
    assert main(["data", "inspect", str(tmp_path / "absent.json")]) == 2
    assert "FileNotFoundError" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["data"], ["data", "validate"], ["data", "inspect"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: golden-fast data" in out
    if argv[-1] == "inspect":
        assert "--show" in out and "--limit" in out
    if argv[-1] != "data":
        assert "builtin" in out and "--format" in out
