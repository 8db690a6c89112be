"""`golden-fast experiment` end to end on a tiny model: every part, the report's sections and figures,
the results JSON, and the model left bitwise as it was."""

from __future__ import annotations

import json
import re

import pytest
import torch

from golden_fast.edit import Editor
from golden_fast.experiment import ExperimentConfig, run_experiment
from golden_fast.models import load_model


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache (context templates sampled once for the module), one torch thread (the tiny
    model is far faster on one thread than with OpenMP threads fighting a busy machine), and a small
    known_1000 file for CMA's noise scale."""
    root = tmp_path_factory.mktemp("experiment")
    known = root / "known_1000.json"
    known.write_text(json.dumps([
        {"known_id": i, "subject": s, "attribute": a, "template": "{} is located in", "prediction": a,
         "prompt": f"{s} is located in"}
        for i, (s, a) in enumerate([("France", "Europe"), ("Japan", "Asia"), ("Egypt", "Africa")])
    ]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOLDEN_FAST_HOME", str(root / "home"))
        mp.setenv("GOLDEN_FAST_KNOWN1000", str(known))
        yield root
    torch.set_num_threads(threads)


def _config(out, **kw) -> ExperimentConfig:
    values = dict(model="tiny-llama", data="builtin", out=str(out), proxy_n=6, test_n=4, brute_proxy_n=2,
                  test_brute_n=2, stats="identity", v_steps=2, templates=((3, 1),), group_size=2,
                  cma_answer="greedy", cma_samples=2, cma_window=2, batch_sizes=(3, 6), sequential_n=4,
                  sequential_every=2, mass_layers=(1, 2), n_boot=100, progress=False)
    values.update(kw)
    return ExperimentConfig(**values)


def test_whole_experiment_writes_the_report(env):
    model, tok = load_model("tiny-llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = env / "run"
    res = run_experiment(_config(out), model=model, tok=tok)

    # every part ran, in order, and the model is bitwise as it was (every edit reverted or restored)
    assert list(res["parts"]) == ["lga", "hybrid", "cma", "brute-proxy", "brute-test", "editors", "mass-batch",
                                  "mass-sequential", "report"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    for name in ("report.html", "report.md", "results.json"):
        assert (out / name).is_file()
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for section in ("Chosen layers", "LGA (down, signed, paper)", "LGA (down, cosine)", "LGA (down, new_norm)",
                    "Causal tracing (CMA)", "CMA: average indirect effect per layer",
                    "Brute force on proxy facts", "Brute force on test facts: the golden layer",
                    "Golden vs sample-wise optimal layers (test facts)", "r-rome on 4 test facts",
                    "rome on 4 test facts", "emmet on 4 test facts", "Mass editing", "Mass editing: quality",
                    "Mass editing: time and memory", "Wall time", "Metric conventions", "Settings", "Environment"):
        assert f"<h2>{section}" in html, section
        assert f"## {section}" in md, section
    # figures: 3 LGA variants, CMA, 2 brute-force curves, editors by layer, 2 mass-editing figures
    assert len(re.findall(r"src='data:image/png;base64,", html)) == 9
    assert len(list((out / "figures").glob("*.png"))) == 9
    assert "rewrite_acc:" in html and "overall (ours)" in html  # the metric conventions

    r = json.loads((out / "results.json").read_text())["results"]
    layers = r["candidate_layers"]
    assert layers == [0, 1, 2, 3]
    chosen = r["chosen"]
    assert {"lga-down-signed (paper)", "lga-down-cosine", "lga-down-new_norm", "hybrid", "cma",
            "brute-force"} <= set(chosen)
    # CMA with the greedy answer uses every proxy fact; the counts are reported
    assert r["cma"]["n_used"] + r["cma"]["n_skipped"] == 6 and r["cma"]["n_skipped"] == 0
    assert "6 of 6 proxy facts used, 0 skipped" in md
    G = r["golden"]["test_golden_layer"]
    assert G in layers and r["golden"]["n_facts"] == 2
    gap = r["golden"]["gap"]["overall"]
    assert gap["lo"] <= gap["gap"] <= gap["hi"] and gap["gap"] >= 0
    for label, m in chosen.items():
        assert m["distance_to_test_golden"] == abs(m["layer"] - G), label
    # each editor judged at every chosen layer and at the golden one, on the 4 test facts
    for method in ("r-rome", "rome", "emmet"):
        e = r["editors"][method]
        assert e["layers"] == sorted({m["layer"] for m in chosen.values()} | {G})
        rows = {row["method"]: row for row in e["rows"]}
        assert rows["test golden (reference)"]["vs_golden"]["diff"] == 0
        assert all(row["overall"]["n"] == 4 for row in e["rows"])
    # the mass-editing curves: one point per size / checkpoint, with time and peak memory
    batch, seq = r["mass"]["batch"], r["mass"]["sequential"]
    assert [p["n"] for p in batch["emmet"]] == [3, 6] and [p["n"] for p in batch["memit"]] == [3, 6]
    assert all(p["layers"] == [1, 2] and p["summary"]["rewrite_acc"]["n"] == p["n"] for p in batch["memit"])
    # the run's target cache: EMMET's 6 reuse the 3 of its first point, MEMIT reuses EMMET's z (and
    # the editors part's, at a shared layer), and every point is timed with the reused targets at
    # their original cost
    assert all(p["targets_reused_seconds"] > 0 for p in [batch["emmet"][1], *batch["memit"]])
    assert all(p["edit_seconds"] > p["targets_reused_seconds"] for p in [*batch["emmet"], *batch["memit"]])
    for method in ("r-rome", "rome"):
        assert [p["edits"] for p in seq[method]] == [2, 4]
        # sequential editing at LGA's layer, every fact edited so far evaluated at each checkpoint
        assert all(p["layer"] == chosen["lga-down-signed (paper)"]["layer"] for p in seq[method])
        assert [p["summary"]["rewrite_acc"]["n"] for p in seq[method]] == [2, 4]
        assert seq[method][1]["cum_edit_seconds"] >= seq[method][0]["cum_edit_seconds"] > 0
        assert all(p["peak"]["peak_mib"] > 0 for p in seq[method])
    assert r["timings"]["brute-proxy"]["runs"] == 1

    # a second run finds everything done: no edit at all, the same chosen layers
    calls = []
    real = Editor.edit

    def counting(self, *a, **k):
        calls.append(self.method)
        return real(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Editor, "edit", counting)
        mp.setattr(Editor, "edit_each", lambda *a, **k: calls.append("each"))
        run_experiment(_config(out), model=model, tok=tok)
    assert calls == []
    r2 = json.loads((out / "results.json").read_text())["results"]
    assert r2["chosen"] == chosen and r2["timings"]["brute-proxy"]["runs"] == 2


def test_editors_use_the_statistics_cache_with_stats_preset(env):
    """stats="preset": one C from the statistics cache for every editor (not C = I): the same edits
    then move the weights differently."""
    model, tok = load_model("tiny-llama")
    norms = {}
    for stats in ("identity", "preset"):
        out = env / f"stats-{stats}"
        cfg = _config(out, stats=stats, mom2_n_samples=8, parts=("brute-test", "editors"), editors=("r-rome",),
                      layers=(1, 2))
        run_experiment(cfg, model=model, tok=tok)
        rows = [json.loads(line) for p in sorted((out / "editors").glob("r-rome-L*.jsonl"))
                for line in p.read_text().splitlines()]
        assert rows and all(r["update_norm"] > 0 for r in rows)
        norms[stats] = [r["update_norm"] for r in rows]
    assert any(abs(a - b) > 1e-6 * max(a, b) for a, b in zip(norms["identity"], norms["preset"]))
    assert list((env / "home" / "stats").rglob("*n8*")), "C was not taken from the statistics cache"


def test_experiment_report_renders_in_headless_chromium(env, chromium):
    """The experiment's own report.html (LGA and CMA parts, their figures inlined) opens in a real
    browser: the screenshot is not blank and shows the figures' line colour, so the images decoded."""
    import subprocess

    from matplotlib import image

    model, tok = load_model("tiny-llama")
    out = env / "render"
    run_experiment(_config(out, parts=("lga", "cma", "report")), model=model, tok=tok)
    shot = env / "render-shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
         "--window-size=1200,3000", (out / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    pix = image.imread(shot)[..., :3]
    assert pix.std() > 0.05  # not one flat colour
    # matplotlib's first line colour, C0 = #1f77b4, drawn by every per-layer score plot
    c0 = (abs(pix[..., 0] - 0x1F / 255) < 0.08) & (abs(pix[..., 1] - 0x77 / 255) < 0.08) & \
         (abs(pix[..., 2] - 0xB4 / 255) < 0.08)
    assert c0.sum() > 200, "no figure rendered"


def test_editors_meta_records_each_method_preset(tmp_path, monkeypatch):
    """The editors' and mass parts' folders record each method's resolved hyperparameters (preset and
    the study's overrides), so a preset changed between runs is refused, not mixed."""
    import golden_fast.edit.config as edit_config
    from golden_fast.experiment.runner import Context
    from golden_fast.fileio import check_meta

    model, tok = load_model("tiny-llama")
    name = model.config.name_or_path
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / f"{name}.yaml").write_text("emmet:\n  layers: [1]\n  v_lr: 0.5\n")
    monkeypatch.setattr(edit_config, "PRESET_DIR", tmp_path / "presets")
    ctx = Context(config=_config(tmp_path / "run"), model=model, tok=tok, facts=None, layers=[0, 1],
                  out=tmp_path / "run")
    meta = ctx.editors_meta(["emmet", "r-rome"])
    hp = meta["editor_hparams"]
    assert hp["emmet"]["v_lr"] == 0.5 and "layers" not in hp["emmet"]
    assert hp["emmet"]["v_num_grad_steps"] == 2  # the study's override (v_steps) on top of the preset
    assert ctx.editors_meta(["emmet"], with_layers=True)["editor_hparams"]["emmet"]["layers"] == [1]
    folder = tmp_path / "run" / "editors"
    check_meta(folder, meta, "editors", adopt=("editor_hparams",))
    (folder / "emmet-L01.json").write_text("{}")
    (tmp_path / "presets" / f"{name}.yaml").write_text("emmet:\n  layers: [1]\n  v_lr: 4.0\n")
    with pytest.raises(ValueError, match=r"editor_hparams\['emmet'\]: was \{'v_lr': 0.5\}, now \{'v_lr': 4.0\}"):
        check_meta(folder, ctx.editors_meta(["emmet", "r-rome"]), "editors", adopt=("editor_hparams",))
