"""`golden-fast evaluate`, through golden_fast.cli.main, on a tiny model and KnowEdit records
written here (portability and locality probes, which the benchmark files of the data folder lack)."""

from __future__ import annotations

import csv
import json

import pytest

from golden_fast.cli import main
from golden_fast.evaluate import EvalReport


@pytest.fixture
def knowedit_file(tmp_path):
    records = [
        {
            "subject": "France",
            "prompt": "The capital of France is",
            "target_new": "Rome",
            "ground_truth": "Paris",
            "rephrase": "France's capital city is",
            "portability": {
                "Reasoning": [
                    {
                        "prompt": "The language of France's capital is",
                        "ground_truth": [["Italian", "italian"]],
                    }
                ]
            },
            "locality": {
                "Relation_Specificity": [{"prompt": "The capital of Spain is", "ground_truth": "Madrid"}]
            },
        },
        {"subject": "Lyon", "prompt": "Lyon is in", "target_new": "Italy", "ground_truth": "France"},
    ]
    path = tmp_path / "ke.json"
    path.write_text(json.dumps(records))
    return path


def test_evaluate_command_pre_then_post(knowedit_file, tmp_path, capsys):
    pre_json, rows_csv = tmp_path / "pre.json", tmp_path / "rows.csv"
    code = main(
        [
            "evaluate",
            "--model",
            "tiny-llama",
            "--data",
            str(knowedit_file),
            "--suites",
            "knowedit,counterfact",
            "--json",
            str(pre_json),
            "--csv",
            str(rows_csv),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "rewrite_acc" in out and "efficacy" in out and "conventions:" in out
    pre = EvalReport.from_json(pre_json)
    assert pre.meta["n_requests"] == 2 and "portability" in pre.metrics and "locality" not in pre.metrics
    assert len(list(csv.DictReader(rows_csv.open()))) == len(pre.rows)

    code = main(["evaluate", "--model", "tiny-llama", "--data", str(knowedit_file), "--pre", str(pre_json)])
    assert code == 0
    out = capsys.readouterr().out
    assert "locality" in out and "efficacy" not in out  # default suite: knowedit only


def test_evaluate_command_bad_suite(knowedit_file, capsys):
    code = main(["evaluate", "--model", "tiny-llama", "--data", str(knowedit_file), "--suites", "rome"])
    assert code == 2
    assert "unknown suite" in capsys.readouterr().err
