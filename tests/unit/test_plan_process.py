"""The planner's process terms (golden_fast/plan/process.py): the runtime and first-run code every
stage carries, the tokenizer measured from its files, totals that add them, and CPU budgets that
reserve them."""

from __future__ import annotations

import json

import pytest

from golden_fast.plan import Assumptions, plan_model
from golden_fast.plan.process import RUNTIME_BYTES, STAGE_RUNTIME_BYTES, find_tokenizer, tokenizer_bytes

MiB = 2**20


def test_every_stage_carries_the_runtime():
    p = plan_model("tiny-llama", devices=["cpu:64GB"], dtypes=["float32"])
    assert p.tokenizer.startswith("not counted")  # a tiny model has no tokenizer files
    for sp in p.stages:
        m = sp.memory
        assert m.process == {"runtime": RUNTIME_BYTES, "stage_code": STAGE_RUNTIME_BYTES[sp.stage], "tokenizer": 0}
        assert sp.total_bytes == sp.weights_bytes + sp.buffers_bytes + m.device_bytes + m.host_bytes + m.process_bytes
    assert p.stage("load").memory.process_bytes == RUNTIME_BYTES
    assert set(STAGE_RUNTIME_BYTES) == {sp.stage for sp in p.stages}


def test_given_runtime_and_tokenizer():
    asm = Assumptions(runtime_bytes=100 * MiB, tokenizer_bytes=7 * MiB)
    p = plan_model("tiny-llama", devices=["cpu:64GB"], dtypes=["float32"], stages=["load", "lga"], assumptions=asm)
    assert p.tokenizer == "given"
    load, lga = p.stage("load"), p.stage("lga")
    assert load.total_bytes == load.weights_bytes + load.buffers_bytes + 107 * MiB
    assert lga.memory.process_bytes == 107 * MiB + STAGE_RUNTIME_BYTES["lga"]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="non-negative int"):
            Assumptions(tokenizer_bytes=bad)


def test_cpu_budget_reserves_the_process():
    # tiny-llama's weights are under 1 MB: only the runtime can make a 100 MB CPU budget too small
    p = plan_model("tiny-llama", devices=["cpu:100MB", "cpu:1GB", "1x1GB+cpu:100MB", "1x1GB"],
                   dtypes=["float32"], stages=["load"])
    pls = p.stage("load").placements
    assert [pl.verdict for pl in pls] == ["no", "fits", "no", "fits"]
    assert "exceeds cpu" in pls[0].reason
    assert pls[1].max_memory["cpu"] == 10**9 - RUNTIME_BYTES


def test_tokenizer_found_beside_the_config(tmp_path):
    from golden_fast.models import build_tiny

    model, tok = build_tiny("tiny-llama")
    model.config.save_pretrained(tmp_path)
    assert find_tokenizer(tmp_path) is None and tokenizer_bytes(tmp_path / "config.json") is None
    tok.save_pretrained(tmp_path)
    assert find_tokenizer(tmp_path / "config.json") == tmp_path == find_tokenizer(tmp_path)


def test_tokenizer_measured(tmp_path):
    """A real measurement: a fresh interpreter holding the runtime loads the tokenizer (no weights)."""
    from golden_fast.models import build_tiny

    model, tok = build_tiny("tiny-llama")
    model.config.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    p = plan_model(str(tmp_path / "config.json"), devices=["cpu:64GB"], dtypes=["float32"], stages=["load"])
    assert p.tokenizer == f"measured from {tmp_path}"
    n = p.assumptions.tokenizer_bytes
    # a 700-entry vocabulary: its tables are small; what it adds is transformers' tokenizer modules
    assert isinstance(n, int) and 0 <= n < 32 * MiB
    assert p.stage("load").memory.process["tokenizer"] == n


def test_unmeasurable_tokenizer_is_not_counted(tmp_path, monkeypatch):
    from golden_fast.plan import process

    (tmp_path / "tokenizer.json").write_text("{}")
    monkeypatch.setattr(process, "_measure", lambda folder: None)  # e.g. no /proc, or it fails to load
    assert tokenizer_bytes(tmp_path) is None


def test_cli_process_options(capsys):
    from golden_fast.cli import main

    argv = ["plan", "--model", "tiny-llama", "--devices", "cpu:8GB", "--dtypes", "float32", "--stages", "load,stats",
            "--runtime-mib", "300", "--tokenizer-mib", "20", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tokenizer"] == "given"
    load, stats = data["stages"]
    assert load["process_terms"] == {"runtime": 300 * MiB, "stage_code": 0, "tokenizer": 20 * MiB}
    assert stats["process_bytes"] == 320 * MiB + STAGE_RUNTIME_BYTES["stats"]
    assert stats["total_bytes"] == (stats["weights_bytes"] + stats["buffers_bytes"] + stats["work_device_bytes"]
                                    + stats["work_host_bytes"] + stats["process_bytes"])
    assert main(["plan", "--model", "tiny-llama", "--devices", "cpu:8GB", "--stages", "load"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("stage"))
    assert "process" in header and "tokenizer not counted" in out
