"""Evaluation, perplexity, causal tracing and brute force in 2 gloo ranks against one process: the
same per-request results and choices, and brute force's pairs each written once, resumable with any
number of processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _spawn_ranks import run_ranks
from test_locate_brute import Fake  # the same deterministic custom method as the one-process tests

from golden_fast import distributed as D
from golden_fast.data import EditRequest, Probe
from golden_fast.evaluate import evaluate
from golden_fast.evaluate.perplexity import perplexity
from golden_fast.locate import brute_force as bf
from golden_fast.locate.brute_force import brute_force
from golden_fast.locate.causal_trace import CMAConfig, causal_trace
from golden_fast.models import load_model

MODEL = "tiny-gpt2"  # one family everywhere: each spawned rank pays for one model import only
SUITES = ("knowedit", "counterfact")
TEXT = ("The capital of France is Paris. Toko Yasuda plays the guitar. " * 6).strip()


# ---- evaluation and perplexity ----------------------------------------------------------------


def _eval_requests() -> list[EditRequest]:
    # 5 requests (uneven shards); a locality probe shared by requests that land on different ranks
    shared = Probe("The capital of Italy is", ("Rome",))
    return [
        EditRequest("The capital of {} is", "France", "Rome", ground_truth="Paris", case_id=1, index=0,
                    rephrase_prompts=["Paris is the capital of", "The main city of France is"],
                    locality=(shared, Probe("Michel Rocard was born in", ("1930",))),
                    portability=(Probe("The language of the capital of France is", ("English", "French")),)),
        EditRequest("{} plays the", "Toko Yasuda", "piano", ground_truth="guitar", case_id=2, index=1,
                    rephrase_prompts=["Toko Yasuda is a player of the"], locality=(shared,)),
        EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", ground_truth="French",
                    case_id=3, index=2, locality=(Probe("The official language of Spain is", ("Spanish",)),)),
        EditRequest("{} was created by", "Apple A5", "Google", ground_truth="Apple", case_id=4, index=3,
                    locality=(shared,)),
        EditRequest("The headquarters of {} is in", "Nokia", "Tokyo", case_id=5, index=4),
    ]


def _perturb(model: torch.nn.Module) -> None:
    """A deterministic stand-in for an edit, so that locality is not trivially 1."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _report_parts(report) -> dict:
    means = {m: s.mean for m, s in report.summary().items()}
    return {"rows": report.rows, "predictions": report.predictions, "means": means,
            "n_scored": report.meta["n_scored_sequences"]}


def _failure(model, tok, reqs) -> str:
    """The error of an evaluation whose second request (rank 1's) lacks pre-edit predictions."""
    pre = evaluate(model, tok, [reqs[2]], suites=SUITES)  # request 1's locality probe is not in it
    try:
        evaluate(model, tok, [reqs[2], reqs[1]], pre=pre, suites=SUITES)
    except (ValueError, RuntimeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _evaluate_all() -> dict:
    model, tok = load_model(MODEL)
    reqs = _eval_requests()
    pre = evaluate(model, tok, reqs, suites=SUITES, batch_size=4, n_boot=100)
    _perturb(model)
    post = evaluate(model, tok, reqs, pre=pre, suites=SUITES, batch_size=4, n_boot=100, fluency=True,
                    fluency_tokens=6, fluency_batch_size=2)
    exact = evaluate(model, tok, reqs, pre=pre, suites=SUITES, route="per-record", n_boot=100)
    ppl = perplexity(model, tok, TEXT, window=16, max_tokens=None, batch_size=2, progress=False)
    return {"pre": _report_parts(pre), "post": _report_parts(post), "exact": _report_parts(exact),
            "ppl": (ppl.nll, ppl.tokens, ppl.windows), "ranks": post.meta.get("data_parallel_ranks"),
            "failure": _failure(model, tok, reqs)}


def _evaluate_and_trace() -> dict:
    return _evaluate_all() | {"cma": _cma()}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """(the 2 ranks' results, one process's): one spawn for evaluation, perplexity and tracing."""
    tmp = tmp_path_factory.mktemp("dp")
    # no known_1000 anywhere: sigma comes from the proxy requests' subjects, all of them on every rank
    env = {"GOLDEN_FAST_HOME": str(tmp / "home"), "GOLDEN_FAST_DATA": str(tmp / "no-data")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("GOLDEN_FAST_KNOWN1000", raising=False)
        return run_ranks(_evaluate_and_trace, 2, env=env), _evaluate_and_trace()


def test_evaluation_rows_and_predictions_equal_one_process(evaluated):
    (r0, r1), one = evaluated
    assert r0["ranks"] == r1["ranks"] == 2 and one["ranks"] is None
    for part in ("pre", "post", "exact"):
        assert r0[part]["rows"] == r1[part]["rows"], part
        assert r0[part]["predictions"] == r1[part]["predictions"], part
        assert list(r0[part]["predictions"]) == list(one[part]["predictions"]), part  # same order too
        assert r0[part]["predictions"] == one[part]["predictions"], part
        assert r0[part]["n_scored"] == one[part]["n_scored"], part
        got, ref = r0[part]["rows"], one[part]["rows"]
        assert [(r.position, r.case_id, r.metric, r.n) for r in got] == [
            (r.position, r.case_id, r.metric, r.n) for r in ref], part
    # one unpadded forward per sequence: bitwise the same numbers whatever the shard
    assert r0["exact"]["rows"] == one["exact"]["rows"]
    assert r0["exact"]["means"] == one["exact"]["means"]
    # batched scoring groups other sequences per rank: float rounding at most
    for a, b in zip(r0["post"]["rows"], one["post"]["rows"]):
        assert a.value == pytest.approx(b.value, abs=1e-6), (a, b)
    assert r0["post"]["means"].keys() == one["post"]["means"].keys()
    metrics = {r.metric for r in one["post"]["rows"]}
    assert {"locality", "portability", "neighborhood", "paraphrase", "fluency"} <= metrics
    fluency = [r for r in r0["post"]["rows"] if r.metric == "fluency"]
    assert fluency == [r for r in one["post"]["rows"] if r.metric == "fluency"] and len(fluency) == 5


def test_a_failing_request_fails_every_rank(evaluated):
    (r0, r1), one = evaluated
    assert one["failure"].startswith("ValueError: record 1 (case_id 2)") and "no predictions" in one["failure"]
    assert r1["failure"] == one["failure"]  # the rank holding the request raises its own error
    assert r0["failure"] == f"RuntimeError: rank 1 failed: {one['failure']}"  # the other one is told, not left waiting


def test_perplexity_equals_one_process(evaluated):
    (r0, r1), one = evaluated
    assert r0["ppl"] == r1["ppl"] == one["ppl"]  # the same batch sums, added in the same order
    assert one["ppl"][2] >= 3  # several batches of 2 windows: some on each rank


# ---- causal tracing ---------------------------------------------------------------------------

# ground truths the tiny GPT-2 predicts (traced) or not (skipped by ROME's rule)
CMA_FACTS = [
    ("The capital of {} is", "France", "is"),
    ("{} plays the", "Toko Yasuda", "Paris"),
    ("The mother tongue of {} is", "Danielle Darrieux", "is"),
    ("The official language of {} is", "Italy", "Paris"),
    ("{} was born in", "Albert Einstein", "in"),
]
CMA_CONFIG = CMAConfig(window=3, samples=4, batch_rows=8)


def _cma_requests() -> list[EditRequest]:
    return [EditRequest(p, s, "Rome", ground_truth=g, case_id=10 + i, index=i) for i, (p, s, g) in enumerate(CMA_FACTS)]


def _cma() -> dict:
    model, tok = load_model(MODEL)
    s = causal_trace(model, tok, _cma_requests(), config=CMA_CONFIG)
    e = s.extra
    return {"chosen": s.chosen, "scores": s.scores, "variants": s.variants, "n_used": s.n_used,
            "skipped": e["skipped"], "sigma": e["sigma"], "source": e["noise_source"], "requests": e["requests"],
            "arrays": [np.asarray(e[k]) for k in ("p_clean", "p_corrupted", "p_restored")]}


def test_causal_trace_equals_one_process(evaluated):
    (r0, r1), both = evaluated
    r0, r1, one = r0["cma"], r1["cma"], both["cma"]
    assert one["source"] == "proxy subjects" and one["n_used"] == 3 and len(one["skipped"]) == 2
    for r in (r0, r1):
        assert r["sigma"] == one["sigma"] and r["source"] == one["source"]
        assert (r["chosen"], r["scores"], r["variants"], r["n_used"]) == (
            one["chosen"], one["scores"], one["variants"], one["n_used"])
        assert r["skipped"] == one["skipped"] and r["requests"] == one["requests"]
        for a, b in zip(r["arrays"], one["arrays"]):
            assert np.array_equal(a, b)


# ---- brute force ------------------------------------------------------------------------------

BF_FACTS = [
    ("The capital of {} is", "France", "Rome", "Paris"),
    ("{} plays the", "Toko Yasuda", "piano", "guitar"),
    ("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
]
BF_LAYERS = [0, 1, 3]
N_PAIRS = len(BF_FACTS) * len(BF_LAYERS)


def _bf_requests() -> list[EditRequest]:
    probe = Probe("The capital of Italy is", ("Rome",))
    return [
        EditRequest(p, s, t, ground_truth=g, case_id=100 + i, index=i, rephrase_prompts=[p.replace("{}", s) + ","],
                    locality=(probe,))
        for i, (p, s, t, g) in enumerate(BF_FACTS)
    ]


def _stop_rank1_after(n_rows: int) -> None:
    """Rank 1 stops after writing `n_rows` pairs (as if killed): the next write raises."""
    if D.rank() != 1:
        return
    written = []
    append = bf.append_jsonl

    def append_then_stop(path, row, **kwargs):
        if len(written) == n_rows:
            raise RuntimeError("rank 1 stopped")
        append(path, row, **kwargs)
        written.append(row)

    bf.append_jsonl = append_then_stop


def _brute(out: str | None, stop_after: int | None = None) -> dict:
    if stop_after is not None:
        _stop_rank1_after(stop_after)
    model, tok = load_model(MODEL)
    fake = Fake()
    res = brute_force(model, tok, _bf_requests(), BF_LAYERS, {"method": fake}, out=out, progress=False)
    return {"M": res.M, "metrics": res.metrics, "keys": res.keys, "refs": res.refs, "seconds": res.seconds,
            "pre_seconds": res.pre_seconds, "calls": fake.calls, "golden": res.golden(n_boot=50).golden}


def _pairs_on_disk(out: Path) -> list[tuple[str, int]]:
    """Every (key, layer) in every pairs file, duplicates included."""
    return [(json.loads(line)["key"], json.loads(line)["layer"]) for f in sorted(out.glob("pairs*.jsonl"))
            for line in f.read_text().splitlines()]


def _same_result(got: dict, ref: dict) -> None:
    assert got["metrics"] == ref["metrics"] and got["keys"] == ref["keys"] and got["refs"] == ref["refs"]
    assert np.array_equal(got["M"], ref["M"], equal_nan=True)
    assert got["golden"] == ref["golden"]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    return {"GOLDEN_FAST_HOME": str(tmp_path / "home")}


def test_brute_force_two_ranks_equal_one_process(tmp_path, home):
    one = _brute(None)
    assert "locality" in one["metrics"] and one["calls"] == N_PAIRS
    out = tmp_path / "bf"
    r0, r1 = run_ranks(_brute, 2, str(out), env=home)
    _same_result(r0, one)
    _same_result(r1, one)
    assert np.array_equal(r0["seconds"], r1["seconds"]) and r0["pre_seconds"] == r1["pre_seconds"]
    assert r0["calls"] + r1["calls"] == N_PAIRS and r0["calls"] == 5  # strided: pairs 0, 2, .., 8
    pairs = _pairs_on_disk(out)
    assert len(pairs) == len(set(pairs)) == N_PAIRS
    assert [f.name for f in out.glob("pairs*.jsonl")] == ["pairs.jsonl"]  # the parts were merged


def test_brute_force_resumes_across_world_sizes(tmp_path, home):
    """1 process stopped, 2 ranks with rank 1 stopped (twice), then 1 process: each run does only
    the missing pairs, each pair is written once, and the end result is one process's."""
    one = _brute(None)
    out = tmp_path / "bf"
    model, tok = load_model(MODEL)
    with pytest.raises(KeyboardInterrupt):
        brute_force(model, tok, _bf_requests(), BF_LAYERS, {"method": Fake(fail_at=3)}, out=out, progress=False)
    assert len(_pairs_on_disk(out)) == 2
    # 7 pairs left: rank 0 does its 4, rank 1 writes 1 of its 3 and stops
    with pytest.raises(RuntimeError, match="rank 1 stopped"):
        run_ranks(_brute, 2, str(out), 1, env=home)
    assert sorted(f.name for f in out.glob("pairs*.jsonl")) == [
        "pairs.jsonl", "pairs.rank0-of-2.jsonl", "pairs.rank1-of-2.jsonl"]
    kept = _pairs_on_disk(out)
    assert len(kept) == len(set(kept)) == 7
    # the same world size again: 2 pairs left, rank 0 does its one, rank 1 stops before writing
    with pytest.raises(RuntimeError, match="rank 1 stopped"):
        run_ranks(_brute, 2, str(out), 0, env=home)
    kept = _pairs_on_disk(out)
    assert len(kept) == len(set(kept)) == 8
    last = _brute(str(out))
    assert last["calls"] == 1
    _same_result(last, one)
    pairs = _pairs_on_disk(out)
    assert len(pairs) == len(set(pairs)) == N_PAIRS
    assert [f.name for f in out.glob("pairs*.jsonl")] == ["pairs.jsonl"]  # the parts were merged
