"""`golden-fast locate` end to end on a tiny model: each method, its files, its errors."""

from __future__ import annotations

import json

import pytest

from golden_fast.cli import main
from golden_fast.data import EditRequest
from golden_fast.locate import LayerScores


@pytest.fixture()
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    facts = [
        ("The capital of {} is", "France", "Rome", "Paris"),
        ("{} plays the", "Toko Yasuda", "piano", "guitar"),
        ("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
    ]
    path = tmp_path / "facts.json"
    reqs = [EditRequest(p, s, t, ground_truth=g, case_id=i) for i, (p, s, t, g) in enumerate(facts)]
    path.write_text(json.dumps([r.to_dict() for r in reqs]))
    return path


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_lga(data, tmp_path, capsys):
    rc = main(
        [
            "locate",
            "--model",
            "tiny-llama",
            "--data",
            str(data),
            "--method",
            "lga",
            "--n",
            "2",
            "--theta",
            "mlp",
            "--variant",
            "cosine",
            "--top-k",
            "2",
            "--plot",
            str(tmp_path / "l.png"),
            "--json",
            str(tmp_path / "l.json"),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "lga (cosine)" in out and _last_json(out)["n"] == 2
    s = LayerScores.from_json(tmp_path / "l.json")
    assert s.settings["theta"] == "mlp" and len(s.top_k) == 2 and s.chosen == _last_json(out)["chosen"]
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"


def test_cma_with_heatmap(data, tmp_path, capsys):
    rc = main(
        [
            "locate",
            "--model",
            "tiny-gpt2",
            "--data",
            str(data),
            "--method",
            "cma",
            "--answer",
            "greedy",
            "--window",
            "2",
            "--samples",
            "3",
            "--layers",
            "1-3",
            "--heatmap",
            str(tmp_path / "h.png"),
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "skipped 0 of 3" in out and (tmp_path / "h.png").is_file()
    assert _last_json(out)["chosen"] in (1, 2, 3)


def test_brute_resumes(data, tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_text("mom2_adjustment: false\nv_num_grad_steps: 2\ncontext_template_length_params: [[3, 1]]\n")
    args = [
        "locate",
        "--model",
        "tiny-gpt2",
        "--data",
        str(data),
        "--method",
        "brute",
        "--n",
        "1",
        "--layers",
        "0,2",
        "--hparams",
        str(hp),
        "--out",
        str(tmp_path / "bf"),
        "--no-progress",
    ]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "golden layers over 1 request" in first
    assert main(args) == 0  # everything is on file: no edit runs again
    assert capsys.readouterr().out.splitlines()[-3:] == first.splitlines()[-3:]
    assert len((tmp_path / "bf" / "pairs.jsonl").read_text().splitlines()) == 2


def test_errors_are_one_line(data, capsys):
    assert main(["locate", "--model", "tiny-gpt2", "--data", str(data), "--method", "cma"]) == 2
    err = capsys.readouterr().err
    assert "all 3 request(s) skipped" in err and "Traceback" not in err
    assert main(["locate", "--model", "tiny-gpt2", "--data", str(data), "--n", "0"]) == 2
