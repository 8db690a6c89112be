"""bench/tune_editor.py: each setting's row records the editor's resolved hyperparameters, and a rerun
skips a setting only when those are already there (a changed preset is measured again)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import tune_editor  # noqa: E402

FIXED = {"layers": [1], "mom2_adjustment": False, "v_num_grad_steps": 2, "context_template_length_params": [[3, 1]]}


def test_rows_record_resolved_hparams_and_reruns_skip_on_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    args = ["--method", "r-rome", "--model", "tiny-llama", "--data", "builtin", "--n", "2", "--grid",
            '{"v_lr": [0.5]}', "--fixed", json.dumps(FIXED), "--out", str(tmp_path / "tune")]
    try:
        assert tune_editor.main(args) == 0
        path = tmp_path / "tune" / "r-rome.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == 1
        hp = rows[0]["hparams"]
        assert hp["v_lr"] == 0.5 and hp["layers"] == [1] and hp["v_num_grad_steps"] == 2
        assert "v_weight_decay" in hp  # the preset's fields too, not only the setting
        assert tune_editor.main(args) == 0  # the same resolved hyperparameters: skipped
        assert len(path.read_text().splitlines()) == 1
        # a row made under another preset value is not this setting: measured again
        rows[0]["hparams"]["v_weight_decay"] = hp["v_weight_decay"] + 1.0
        path.write_text(json.dumps(rows[0]) + "\n")
        assert tune_editor.main(args) == 0
        assert len(path.read_text().splitlines()) == 2
        # the summary ranks this grid's rows only: the row of the other preset value is left out
        capsys.readouterr()
        assert tune_editor.main(args) == 0
        last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert len(path.read_text().splitlines()) == 2 and last["settings"] == 1
        # a row from before the record is matched on its setting alone
        legacy = {k: v for k, v in rows[0].items() if k != "hparams"}
        path.write_text(json.dumps(legacy) + "\n")
        assert tune_editor.main(args) == 0
        assert len(path.read_text().splitlines()) == 1
    finally:
        torch.set_num_threads(threads)
