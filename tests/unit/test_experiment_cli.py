"""`golden-fast experiment` on the command line: --skip-invalid counts what it skips, bad input is one
line naming the problem (exit code 2), settings are checked before anything is computed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from golden_fast.cli import main
from golden_fast.data import builtin_facts
from golden_fast.experiment import ExperimentConfig, quick_config
from golden_fast.experiment.facts import load_facts


@pytest.fixture(autouse=True)
def env(study_env):
    return study_env


def _flat(req) -> dict:
    """A CounterFact (flat, EasyEdit) record from a built-in fact."""
    return {"case_id": req.case_id, "prompt": req.prompt, "subject": req.subject, "target_new": req.target_new,
            "ground_truth": req.ground_truth, "rephrase_prompt": req.rephrase_prompts[0],
            "locality_prompt": req.locality[0].prompt, "locality_ground_truth": req.locality[0].answers[0]}


@pytest.fixture()
def faulty(env):
    """20 CounterFact records, 3 of them malformed (records 2, 5 and 17)."""
    recs = [_flat(r) for r in builtin_facts()[:20]]
    recs[2]["target_new"] = "  "  # blank
    del recs[5]["subject"]  # missing
    recs[17]["ground_truth"] = 7  # not a string
    path = env / "cf-faulty.json"
    path.write_text(json.dumps(recs))
    return path


def test_skip_invalid_keeps_the_valid_records_and_counts_the_others(faulty):
    cfg = ExperimentConfig(data=str(faulty), proxy_n=4, test_n=4, brute_proxy_n=1, test_brute_n=1, skip_invalid=True,
                           batch_methods=(), sequential_methods=())
    facts = load_facts(cfg)
    assert facts.n_invalid == 3 and facts.n_read == 20
    # the first 8 valid records run up to record 9, past two of the bad ones
    assert facts.n_invalid_used == 2
    used = sorted(r.index for r in facts.proxy + facts.test)
    assert used == [0, 1, 3, 4, 6, 7, 8, 9]
    assert "record 2" in facts.errors[0] and "target_new" in facts.errors[0]
    assert "subject" in facts.errors[1] and "ground_truth" in facts.errors[2]
    # without the option the first bad record stops loading, named, with the way out
    with pytest.raises(ValueError, match=r"record 2 .*target_new.*--skip-invalid"):
        load_facts(dataclasses.replace(cfg, skip_invalid=False))


def test_cli_skip_invalid_prints_and_reports_the_count(faulty, env, capsys):
    out = env / "exp"
    rc = main(["experiment", "--model", "tiny-llama", "--data", str(faulty), "--skip-invalid", "--quick",
               "--parts", "report", "--out", str(out), "--no-progress", "--threads", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "skipped 3 invalid record(s) of 20 read" in text
    md = (out / "report.md").read_text()
    assert "--skip-invalid: 3 invalid record(s) skipped" in md and "## Invalid records (first ones)" in md
    data = json.loads((out / "results.json").read_text())["results"]["data"]
    assert data["invalid_skipped"] == 3 and data["records_read"] == 20
    # the quick preset: 6 proxy and 4 test facts; the curves' 8-fact pool extends the test facts
    assert (data["proxy_n"], data["test_n"], data["pool_n"]) == (6, 4, 8)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--data", "no/such/file.json"], ["no/such/file.json"]),
        (["--data", "builtin", "--proxy-n", "0"], ["proxy_n", "positive"]),
        (["--data", "builtin", "--parts", "lga,bogus"], ["parts", "bogus"]),
        (["--data", "builtin", "--test-n", "4", "--test-brute-n", "9"], ["test_brute_n", "test_n"]),
        (["--data", "builtin", "--editors", "rome,grace"], ["editors", "grace"]),
        (["--data", "builtin", "--stats", "wikipedia"], ["stats", "wikipedia"]),
        (["--data", "builtin", "--batch-sizes", "10,200", "--quick"], ["83", "200", "--batch-sizes"]),
    ],
)
def test_cli_bad_input_is_one_line(argv, words, env, capsys):
    rc = main(["experiment", "--model", "tiny-llama", *argv, "--out", str(env / "bad"), "--no-progress"])
    assert rc == 2
    err = _error(capsys)
    assert err.startswith("golden-fast experiment: error:")
    for w in words:
        assert w in err, (w, err)


def test_cli_invalid_record_without_skip_invalid(faulty, env, capsys):
    rc = main(["experiment", "--model", "tiny-llama", "--data", str(faulty), "--quick", "--out", str(env / "x")])
    assert rc == 2
    err = _error(capsys)
    assert "record 2" in err and "target_new" in err and "--skip-invalid" in err


def test_resuming_with_other_core_settings_is_refused(env, capsys):
    out = env / "exp"
    args = ["experiment", "--model", "tiny-llama", "--data", "builtin", "--quick", "--out", str(out), "--no-progress",
            "--parts", "lga", "--threads", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--seed", "3"]) == 2
    err = _error(capsys)
    assert "seed" in err and "another output folder" in err
    # sizes that only add work are fine: a larger brute-force subset
    assert main([*args, "--brute-proxy-n", "3"]) == 0


def test_quick_preset_and_overrides():
    q = quick_config(model="m", data="d", proxy_n=8)
    assert q.quick and q.proxy_n == 8 and q.test_n == 4 and q.stats == "identity"
    assert q.candidate_layers(30) == [0, 10, 19, 29] and q.checkpoints() == [3, 6]
    assert ExperimentConfig(sequential_n=500, sequential_every=50).checkpoints()[-1] == 500
    assert ExperimentConfig(sequential_n=7, sequential_every=3).checkpoints() == [3, 6, 7]
    with pytest.raises(ValueError, match="layers .* out of range"):
        ExperimentConfig(layers=(3, 40)).candidate_layers(30)
