"""An interrupted experiment resumes without redoing finished work, and ends with the same results as
an uninterrupted one: brute force pair by pair, single edits fact by fact, the sequential curve at its
last checkpoint (its journals replayed), the model left as it was whatever happened."""

from __future__ import annotations

import json

import pytest
import torch

import golden_fast.experiment.editors as editors_mod
import golden_fast.experiment.locating as locating
from golden_fast.edit import Editor
from golden_fast.experiment import ExperimentConfig, run_experiment
from golden_fast.models import load_model


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    known = root / "known_1000.json"  # CMA's noise scale from 2 subjects, not ROME's 1,209
    known.write_text(json.dumps([{"known_id": i, "subject": s, "attribute": "Europe", "template": "{} is in",
                                  "prediction": "Europe", "prompt": f"{s} is in"}
                                 for i, s in enumerate(["France", "Italy"])]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model is far faster on one thread on a busy machine
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOLDEN_FAST_HOME", str(root / "home"))
        mp.setenv("GOLDEN_FAST_KNOWN1000", str(known))
        yield root
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llama(env):
    model, tok = load_model("tiny-llama")
    return model, tok, {k: v.clone() for k, v in model.state_dict().items()}


def _config(out, **kw) -> ExperimentConfig:
    values = dict(model="tiny-llama", data="builtin", out=str(out), proxy_n=6, test_n=4, brute_proxy_n=2,
                  test_brute_n=2, stats="identity", v_steps=2, templates=((3, 1),), group_size=2,
                  editors=("r-rome",), n_boot=100, progress=False, batch_methods=(), sequential_methods=())
    values.update(kw)
    return ExperimentConfig(**values)


class Counter:
    """Counts Editor.edit calls (by mode) and raises KeyboardInterrupt, like Ctrl-C, on call `stop_at`."""

    def __init__(self, stop_at: int | None = None, mode: str | None = None):
        self.calls = 0
        self.stop_at = stop_at
        self.mode = mode
        self.real = Editor.edit

    def install(self, monkeypatch) -> Counter:
        def edit(ed, requests, mode=None, *a, **k):  # a function, so that it binds as a method
            if self.mode is None or mode == self.mode:
                self.calls += 1
                if self.calls == self.stop_at:
                    raise KeyboardInterrupt
            return self.real(ed, requests, mode, *a, **k)

        monkeypatch.setattr(Editor, "edit", edit)
        return self


def _unchanged(model, before) -> bool:
    after = model.state_dict()
    return all(torch.equal(before[k], after[k]) for k in before)


def test_interrupted_brute_force_and_editors_resume(env, llama, monkeypatch):
    model, tok, before = llama
    parts = ("lga", "cma", "brute-proxy", "brute-test", "editors")
    lga_calls = []
    real_lga = locating.lga
    monkeypatch.setattr(locating, "lga", lambda *a, **k: lga_calls.append(1) or real_lga(*a, **k))

    # 1. Ctrl-C at the 5th brute-force edit (proxy: 2 facts x 4 layers = 8 pairs)
    out = env / "brute"
    c = Counter(stop_at=5).install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(out, parts=parts), model=model, tok=tok)
    assert len(lga_calls) == 1 and _unchanged(model, before)
    pairs = out / "locate" / "brute-proxy" / "pairs.jsonl"
    assert len(pairs.read_text().splitlines()) == 4

    # 2. resumed; Ctrl-C inside the editors part, while the 3rd R-ROME fact is evaluated
    c = Counter().install(monkeypatch)
    evals = []
    real_eval = editors_mod.evaluate

    def evaluate(*a, **k):
        evals.append(1)
        if len(evals) == 3:
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(editors_mod, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(out, parts=parts), model=model, tok=tok)
    assert len(lga_calls) == 1  # LGA finished in run 1: not recomputed
    assert c.calls == 4 + 8  # the 4 missing proxy pairs, then the 8 test pairs; none redone
    assert _unchanged(model, before)
    rows_path = next((out / "editors").glob("r-rome-L*.jsonl"))
    assert len(rows_path.read_text().splitlines()) == 2

    # 3. resumed to the end: only the facts still missing are edited
    monkeypatch.setattr(editors_mod, "evaluate", real_eval)
    each = []
    real_each = Editor.edit_each
    monkeypatch.setattr(Editor, "edit_each", lambda ed, reqs, *a, **k: each.append(len(reqs)) or real_each(
        ed, reqs, *a, **k))
    run_experiment(_config(out, parts=parts), model=model, tok=tok)
    assert c.calls == 12 and len(lga_calls) == 1
    assert each[0] == 2 and all(n == 4 for n in each[1:]), each  # 2 facts were left at the first layer
    assert _unchanged(model, before)

    # the same results as a run never interrupted
    Counter().install(monkeypatch)
    clean = env / "clean"
    run_experiment(_config(clean, parts=parts), model=model, tok=tok)
    for name in ("brute-proxy.json", "brute-test.json"):
        a = json.loads((out / "locate" / name).read_text())
        b = json.loads((clean / "locate" / name).read_text())
        assert a["extra"]["brute_force"]["M"] == b["extra"]["brute_force"]["M"], name
        assert a["chosen"] == b["chosen"]
    for path in (clean / "editors").glob("r-rome-L*.jsonl"):
        mine = {r["key"]: r["metrics"] for r in map(json.loads, (out / "editors" / path.name).read_text().splitlines())}
        ref = {r["key"]: r["metrics"] for r in map(json.loads, path.read_text().splitlines())}
        assert mine == ref, path.name


def _curve(out, method="r-rome"):
    return json.loads((out / "mass" / f"sequential-{method}" / "curve.json").read_text())


def _strip(curve):
    return [(p["edits"], p["summary"], p["update_norm"]) for p in curve]


def test_interrupted_sequential_curve_resumes_from_its_journals(env, llama, monkeypatch):
    model, tok, before = llama
    cfg = dict(parts=("mass-sequential",), sequential_methods=("r-rome",), mass_layer=1, sequential_n=6,
               sequential_every=2)

    # Ctrl-C when the second segment (edits 3-4) starts: the first is kept, the model restored
    out = env / "seq"
    c = Counter(stop_at=2, mode="sequential").install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(out, **cfg), model=model, tok=tok)
    folder = out / "mass" / "sequential-r-rome"
    assert [p["edits"] for p in _curve(out)] == [2]
    assert sorted(p.name for p in folder.glob("journal-*")) == ["journal-00002"]
    assert _unchanged(model, before)

    # resumed: the journal of edits 1-2 is replayed, only segments 3-4 and 5-6 are edited
    c = Counter(mode="sequential").install(monkeypatch)
    run_experiment(_config(out, **cfg), model=model, tok=tok)
    assert c.calls == 2 and [p["edits"] for p in _curve(out)] == [2, 4, 6]
    assert _unchanged(model, before)

    # identical to a curve never interrupted (the replayed weights are bitwise the edited ones)
    clean = env / "seq-clean"
    run_experiment(_config(clean, **cfg), model=model, tok=tok)
    assert _strip(_curve(out)) == _strip(_curve(clean))

    # a journal saved whose point was never recorded (killed in between) is dropped and redone
    curve = _curve(out)
    (folder / "curve.json").write_text(json.dumps(curve[:-1]))
    c = Counter(mode="sequential").install(monkeypatch)
    run_experiment(_config(out, **cfg), model=model, tok=tok)
    assert c.calls == 1 and _strip(_curve(out)) == _strip(_curve(clean))
    assert _unchanged(model, before)


def test_changing_the_cma_answer_recomputes_cma_alone(env, llama, monkeypatch):
    model, tok, _ = llama
    calls = {"lga": 0, "cma": 0}
    real_lga, real_cma = locating.lga, locating.causal_trace

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapped

    monkeypatch.setattr(locating, "lga", count("lga", real_lga))
    monkeypatch.setattr(locating, "causal_trace", count("cma", real_cma))
    out = env / "cma"
    cfg = dict(parts=("lga", "cma", "report"), cma_samples=2, cma_window=2)
    # the random tiny model never gives the records' answers: every fact skipped, no layer
    run_experiment(_config(out, **cfg, cma_answer="data"), model=model, tok=tok)
    assert (out / "locate" / "cma-error.txt").exists() and not (out / "locate" / "cma.json").exists()
    assert "CMA chose no layer (n_used 0)" in (out / "report.md").read_text()
    # the model's own answer: CMA (only) is traced again, and chooses a layer
    run_experiment(_config(out, **cfg, cma_answer="greedy"), model=model, tok=tok)
    assert calls == {"lga": 1, "cma": 2}
    assert (out / "locate" / "cma.json").exists() and not (out / "locate" / "cma-error.txt").exists()
    res = json.loads((out / "results.json").read_text())["results"]
    assert res["cma"]["n_used"] == 6 and res["cma"]["n_skipped"] == 0 and "cma" in res["chosen"]
    run_experiment(_config(out, **cfg, cma_answer="greedy"), model=model, tok=tok)
    assert calls == {"lga": 1, "cma": 2}


def test_a_torn_last_row_is_cut_and_that_fact_redone(tmp_path):
    from golden_fast.fileio import append_jsonl, read_jsonl, write_json

    path = tmp_path / "rows.jsonl"
    append_jsonl(path, {"key": "a", "v": 1.0})
    append_jsonl(path, {"key": "b", "v": float("nan")})  # NaN is stored as null: JSON has no NaN
    with path.open("a") as f:
        f.write('{"key": "c", "v"')  # killed in the middle of a write
    assert read_jsonl(path) == [{"key": "a", "v": 1.0}, {"key": "b", "v": None}]
    append_jsonl(path, {"key": "c", "v": 3})  # the next row starts on a line of its own
    assert [r["key"] for r in read_jsonl(path)] == ["a", "b", "c"]
    write_json(tmp_path / "x.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_editors_part_runs_before_brute_test_and_adds_the_golden_layer_later(env, llama):
    """The editors part beside an unfinished brute-test: the chosen layers now, the golden one on rerun."""
    model, tok, before = llama
    out = env / "early-editors"
    first = run_experiment(_config(out, parts=("lga", "editors")), model=model, tok=tok)
    assert "not known yet" in first["parts"]["editors"]
    early = {p.name for p in (out / "editors").glob("r-rome-L*.jsonl")}
    assert early  # the LGA variants' layers
    run_experiment(_config(out, parts=("brute-test", "editors")), model=model, tok=tok)
    G = json.loads((out / "locate" / "brute-test.json").read_text())["chosen"]
    late = {p.name for p in (out / "editors").glob("r-rome-L*.jsonl")}
    assert early <= late and f"r-rome-L{G:02d}.jsonl" in late
    assert _unchanged(model, before)


def test_editors_part_without_any_located_layer_is_refused(env, llama):
    model, tok, _ = llama
    with pytest.raises(ValueError, match="needs a chosen layer"):
        run_experiment(_config(env / "no-layers", parts=("editors",)), model=model, tok=tok)


def test_editors_n_judges_the_first_test_facts_and_cannot_change_later(env, llama):
    """--editors-n: the editors part edits only the first n test facts, and the report uses exactly them;
    a rerun with another n is refused rather than mixing two fact sets."""
    model, tok, before = llama
    out = env / "editors-n"
    res = run_experiment(_config(out, editors_n=2, parts=("brute-test", "editors", "report")), model=model,
                         tok=tok)
    test_keys = json.loads((out / "split.json").read_text())["test"]
    assert len(test_keys) == 4
    rows = [json.loads(line) for p in (out / "editors").glob("r-rome-L*.jsonl") for line in p.read_text().splitlines()]
    assert rows and {r["key"] for r in rows} == set(test_keys[:2])
    results = json.loads((out / "results.json").read_text())["results"]
    assert results["editors"]["r-rome"]["rows"], res["parts"]
    assert all(row["overall"]["n"] == 2 for row in results["editors"]["r-rome"]["rows"])
    assert "## r-rome on 2 test facts" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="facts"):
        run_experiment(_config(out, editors_n=3, parts=("editors",)), model=model, tok=tok)
    assert _unchanged(model, before)


def test_editors_n_above_test_n_is_refused(tmp_path):
    with pytest.raises(ValueError, match="editors_n"):
        _config(tmp_path, editors_n=5)


def test_editors_edit_only_the_facts_held_apart(env, llama):
    """With at least 10 test facts held apart from brute-test's, only those are edited (the tables judge
    no other); a folder made when every test fact was edited keeps its list."""
    model, tok, before = llama
    out = env / "held-apart"
    cfg = dict(test_n=13, test_brute_n=2, editors_n=12, layers=(1,))
    run_experiment(_config(out, parts=("lga", "editors"), **cfg), model=model, tok=tok)
    test_keys = json.loads((out / "split.json").read_text())["test"]
    rows = [json.loads(line) for p in (out / "editors").glob("r-rome-L*.jsonl") for line in p.read_text().splitlines()]
    assert {r["key"] for r in rows} == set(test_keys[2:12]) and len(rows) == 10
    assert json.loads((out / "editors" / "meta.json").read_text())["facts"] == test_keys[2:12]
    # the report judges those 10, all held apart from the 2 that chose the golden layer
    run_experiment(_config(out, parts=("brute-test", "editors", "report"), **cfg), model=model, tok=tok)
    judged = json.loads((out / "results.json").read_text())["results"]["editors"]["r-rome"]
    assert judged["n_judged"] == 10 and judged["held_apart"] and judged["n_chose_golden"] == 2
    assert "## r-rome on 10 test facts at each chosen layer" in (out / "report.md").read_text()
    # a folder that holds every test fact's edits (made before) goes on with all of them
    legacy = env / "held-apart-legacy"
    run_experiment(_config(legacy, parts=("lga",), **cfg), model=model, tok=tok)
    keys = json.loads((legacy / "split.json").read_text())["test"][:12]
    (legacy / "editors").mkdir()
    meta = json.loads((out / "editors" / "meta.json").read_text()) | {"facts": keys}
    (legacy / "editors" / "meta.json").write_text(json.dumps(meta))
    layer = json.loads((legacy / "locate" / "lga-down.json").read_text())["chosen"]
    (legacy / "editors" / f"r-rome-L{layer:02d}.jsonl").write_text("")
    run_experiment(_config(legacy, parts=("editors",), **cfg), model=model, tok=tok)
    rows = [json.loads(line) for line in (legacy / "editors" / f"r-rome-L{layer:02d}.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == keys
    assert _unchanged(model, before)
