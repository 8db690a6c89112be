"""bench/mass_edit.py's targets mode split across processes: `--shard I/K` runs share one `--store`,
together they hold every fact's z, and a later run over all facts optimises none (tiny model, MEMIT)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import mass_edit  # noqa: E402

from golden_fast.edit.target_cache import TargetCache  # noqa: E402

FACTS = ROOT / "golden_fast" / "data" / "builtin" / "facts.json"
HP = {"memit": {"mom2_adjustment": False, "v_num_grad_steps": 2, "context_template_length_params": [[3, 1]]}}


def _run(tmp: Path, store: Path, *extra: str) -> None:
    argv = ["targets", "--model", "tiny-llama", "--data", str(FACTS), "--methods", "memit", "--layers", "1,2",
            "--sizes", "5", "--chunk", "2", "--hparams", json.dumps(HP), "--store", str(store),
            "--out", str(tmp / "out"), "--quiet", *extra]
    assert mass_edit.main(argv) == 0


def test_shards_share_one_store_and_cover_every_fact(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    store = tmp_path / "results" / "targets.safetensors"
    _run(tmp_path, store, "--shard", "1/2")  # chunks 1 (facts 2-3)
    assert len(TargetCache.load(store)) == 2
    _run(tmp_path, store, "--shard", "0/2")  # chunks 0 and 2 (facts 0-1, 4)
    assert len(TargetCache.load(store)) == 5  # the second shard's save kept the first one's entries
    assert not (tmp_path / "home" / "targets").exists()  # nothing went to the default store
    capsys.readouterr()
    _run(tmp_path, store)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("targets (")]
    assert len(lines) == 3 and all(" 0 optimised" in ln for ln in lines)


@pytest.mark.parametrize("bad", ["2/2", "1", "a/b", "-1/2"])
def test_a_bad_shard_is_refused(bad, capsys):
    with pytest.raises(SystemExit):
        mass_edit.main(["targets", "--shard", bad])
    assert "--shard" in capsys.readouterr().err
