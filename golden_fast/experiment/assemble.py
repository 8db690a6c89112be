"""The experiment's report, assembled from what the parts left on disk (so it can be rewritten at any
time, and shows what is finished): one self-contained HTML file, a Markdown summary and the JSON
results (`golden_fast.report.Report`, which adds versions and the machine)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from golden_fast.edit.registry import get_editor
from golden_fast.evaluate.report import HEADLINE_METRICS
from golden_fast.fileio import read_json, read_jsonl
from golden_fast.locate import LayerScores
from golden_fast.locate.band import GoldenBand, golden_band
from golden_fast.locate.lga import VARIANTS

__all__ = ["collect", "golden_band_of", "write_report"]


def _single(method: str) -> bool:
    """Whether `method` is judged fact by fact (a single editor); False for unknown names (a result
    folder may name an editor whose plug-in is not installed here)."""
    try:
        return get_editor(method).single
    except ValueError:
        return False

_SHOWN = HEADLINE_METRICS
_GOLDEN_LABEL = "test golden (reference)"


def _ci(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "-"
    return f"{d['mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def _diff(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _num(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _brief(s: LayerScores) -> dict[str, Any]:
    """A LayerScores without its bulky extras (the full file stays under locate/)."""
    d = s.to_dict()
    d.pop("extra", None)
    if s.method == "cma":
        d["n_skipped"] = s.extra.get("n_skipped")
        d["skipped"] = s.extra.get("skipped")
    if s.method == "hybrid":
        d.update({k: s.extra.get(k) for k in ("cost", "shortlist", "ranking", "rounds", "stopped_early")})
    return d


def golden_band_of(bt: LayerScores, n_boot: int) -> GoldenBand:
    """The golden band of the brute-force grid on the test facts ("overall"; facts resampled)."""
    bf = bt.extra["brute_force"]
    M = np.array(bf["M"], dtype=np.float64)  # an absent metric (None) becomes NaN
    return golden_band(M, bf["layers"], bf["metrics"], n_boot=n_boot)


def _scores(path: Path) -> LayerScores | None:
    return LayerScores.from_json(path) if path.exists() else None


# ---- collecting results ------------------------------------------------------------------------


def _editor_results(ctx, layers: list[int]) -> dict:
    from golden_fast.experiment.editors import EditorLayerResult

    out = {}
    folder = ctx.out / "editors"
    # the facts the editors part edited (its meta.json): the held-apart ones, or, in a folder made when
    # every test fact was edited, the first editors_n
    keys = (read_json(folder / "meta.json") or {}).get("facts") or \
        (read_json(ctx.out / "split.json") or {}).get("test", [])[: ctx.config.editors_n]
    for method in ctx.config.editors:
        for layer in layers:
            single = folder / f"{method}-L{layer:02d}.jsonl"
            batch = folder / f"{method}-L{layer:02d}.json"
            if single.exists():
                rows = {r["key"]: r for r in read_jsonl(single)}
                if not keys or any(k not in rows for k in keys):
                    continue  # unfinished: left out of the report until it is complete
                out[(method, layer)] = EditorLayerResult(method, layer, keys, [rows[k]["metrics"] for k in keys],
                                                         float(sum(rows[k]["seconds"] for k in keys)))
            elif batch.exists():
                d = read_json(batch)
                out[(method, layer)] = EditorLayerResult(method, layer, d["keys"], d["metrics"], float(d["seconds"]),
                                                         d.get("peak"), d.get("warnings", []))
    return out


def collect(ctx) -> dict[str, Any]:
    """Every finished part's results, JSON-ready (what results.json holds)."""
    from golden_fast.experiment.locating import chosen_layers

    config, loc = ctx.config, ctx.locate_dir
    res: dict[str, Any] = {"config": config.to_dict(), "data": ctx.facts.info(), "candidate_layers": ctx.layers}
    lga = {t: s for t in config.thetas if (s := _scores(loc / f"lga-{t}.json")) is not None}
    res["lga"] = {t: _brief(s) for t, s in lga.items()}
    cma = _scores(loc / "cma.json")
    res["cma"] = _brief(cma) if cma is not None else None
    err = loc / "cma-error.txt"
    res["cma_error"] = err.read_text() if err.exists() else None
    hy = _scores(loc / "hybrid.json")
    res["hybrid"] = _brief(hy) if hy is not None else None
    bp, bt = _scores(loc / "brute-proxy.json"), _scores(loc / "brute-test.json")
    res["brute_proxy"] = _brief(bp) if bp is not None else None
    res["brute_test"] = _brief(bt) if bt is not None else None
    methods = chosen_layers(loc, config.thetas)
    res["chosen"] = methods
    res["golden"] = None
    res["band"] = None
    res["editors"] = {}
    if bt is not None:
        G = bt.chosen
        res["golden"] = bt.extra["golden"] | {"test_golden_layer": G, "n_facts": bt.n_used}
        band = golden_band_of(bt, config.n_boot)
        res["band"] = band.to_dict()
        for m in methods.values():
            m["distance_to_test_golden"] = abs(int(m["layer"]) - G)
            m["in_golden_band"] = int(m["layer"]) in band
        layers = sorted({int(m["layer"]) for m in methods.values()} | {G})
        found = _editor_results(ctx, layers)
        with_ref = dict(methods) | {_GOLDEN_LABEL: {"layer": G, "wall_time": None, "note": "brute force, test facts"}}
        chose_golden = set(bt.extra["brute_force"]["keys"])
        flu = read_json(ctx.out / "editors" / "fluency-pre.json") or {}  # the unedited model's, per fact
        for method in config.editors:
            judged = _judged_editor(method, found, with_ref, G, chose_golden, config.n_boot)
            if judged is not None:
                values = [flu[k] for k in judged["judged_keys"] if k in flu]
                judged["fluency_unedited"] = {"mean": float(np.mean(values)), "n": len(values)} if values else None
                res["editors"][method] = judged
        paper = next((m for k, m in methods.items() if k.endswith("(paper)")), None)
        brute = methods.get("brute-force")
        if paper is not None:
            speed = brute["wall_time"] / paper["wall_time"] if brute and paper["wall_time"] else None
            res["goal"] = {"lga_within_one_layer": paper["distance_to_test_golden"] <= 1,
                           "lga_speedup_vs_brute": speed, "lga_50x_faster": bool(speed and speed >= 50)}
    res["mass"] = _mass(ctx)
    res["timings"] = read_json(ctx.out / "timings.json") or {}
    return res


#: fewer test facts than this held apart from the ones that chose the golden layer: judge on all of them
MIN_HELD_APART = 10


def held_apart(keys: Sequence[str], chose_golden: set[str]) -> tuple[list[int], bool]:
    """(indices of the facts to judge on, whether they are held apart): the facts not among those
    that chose the golden layer when at least MIN_HELD_APART are left, else all of them."""
    held = [i for i, k in enumerate(keys) if k not in chose_golden]
    if len(held) >= MIN_HELD_APART:
        return held, True
    return list(range(len(keys))), False


def _judged_editor(method: str, found: dict, with_ref: dict, G: int, chose_golden: set[str],
                   n_boot: int) -> dict[str, Any] | None:
    """One editor's rows at every chosen layer it has results for (None when the golden layer has none).

    The editor is judged on the test facts that did not choose the golden layer (brute-test's facts),
    when at least MIN_HELD_APART of them are left; otherwise on all, and the result says so."""
    from golden_fast.experiment.editors import EXTRA_METRICS, editor_matrix
    from golden_fast.experiment.locating import judge, mean_ci

    if (method, G) not in found:
        return None
    present = {k: m for k, m in with_ref.items() if (method, int(m["layer"])) in found}
    missing = sorted({f"{k} (layer {m['layer']})" for k, m in with_ref.items() if k not in present})
    layers = sorted({int(m["layer"]) for m in present.values()})
    M, metrics = editor_matrix(found, method, layers)
    keys = found[(method, G)].keys
    held, apart = held_apart(keys, chose_golden)
    M = M[held]
    core = [k for k, m in enumerate(metrics) if m not in EXTRA_METRICS]
    extra = sorted((k for k, m in enumerate(metrics) if m in EXTRA_METRICS),
                   key=lambda k: EXTRA_METRICS.index(metrics[k]))
    rows = judge(M[:, :, core], layers, [metrics[k] for k in core], G, present, n_boot=n_boot)
    for row in rows:
        j = layers.index(int(row["layer"]))
        for k in extra:
            row[metrics[k]] = mean_ci(M[:, j, k], n_boot)
    per_layer = {layer: found[(method, layer)] for layer in layers}
    for row in rows:
        r = per_layer[int(row["layer"])]
        row["edit_seconds"] = r.seconds
        row["seconds_per_fact"] = r.seconds / max(1, len(r.keys)) if _single(method) else None
        row["peak"] = r.peak
    return {
        "layers": layers,
        "metrics": [metrics[k] for k in core + extra],
        "rows": rows,
        "overall_by_layer": {int(layer): float(np.nanmean(_overall(M[:, j, core])))
                             for j, layer in enumerate(layers)},
        "warnings": sorted({w for r in per_layer.values() for w in r.warnings}),
        "held_apart": apart,
        "n_judged": int(M.shape[0]),
        # held apart: the facts edited may leave out those that chose the golden layer altogether
        "n_chose_golden": len(chose_golden) if apart else sum(1 for k in keys if k in chose_golden),
        "not_edited_yet": missing,
        "judged_keys": [keys[i] for i in held],
    }


def _extras_note(e: dict[str, Any]) -> str:
    """What the portability and fluency columns are, with the unedited model's fluency."""
    parts = []
    if "portability" in e["metrics"]:
        n = max((r["portability"]["n"] for r in e["rows"] if r.get("portability")), default=0)
        parts.append(f"portability on the {n} judged facts with two-hop probes")
    if "fluency" in e["metrics"]:
        ref = e.get("fluency_unedited")
        parts.append("fluency: n-gram entropy of a sampled continuation of the prompt"
                     + (f" (unedited model {ref['mean']:.3f} on {ref['n']} facts)" if ref else ""))
    return ("; " + "; ".join(parts) + "; overall is rewrite, rephrase and locality, as for the golden layer"
            if parts else "")


def _overall(M2: np.ndarray) -> np.ndarray:
    """Per fact, the mean of the metrics present ("overall"; FORMULAS.md, section "Brute force and
    the golden layer")."""
    return np.nanmean(M2, axis=1) if M2.size else M2


def _mass(ctx) -> dict[str, Any]:
    config = ctx.config
    folder = ctx.out / "mass"
    batch = {}
    for m in config.batch_methods:
        pts = [read_json(folder / "batch" / f"batch-{m}-n{n:05d}.json") for n in sorted(config.batch_sizes)]
        batch[m] = [p for p in pts if p is not None]
    seq = {}
    for m in config.sequential_methods:
        curve = read_json(folder / f"sequential-{m}" / "curve.json") or []
        seq[m] = curve
    return {"batch": batch, "sequential": seq}


# ---- the report --------------------------------------------------------------------------------


def _conventions(ctx) -> str:
    pre = ctx._pre
    lines = []
    if pre is None and (ctx.out / "pre.json").exists():
        pre = ctx.pre()
    if pre is not None:
        lines += [f"{k}: {v}" for k, v in pre.conventions.items()]
    lines += [
        "overall (ours): per fact, the mean of the metrics present (knowedit: rewrite, rephrase, locality); "
        "the golden layer and every brute-force choice maximise its mean",
        "golden layer G = argmax_l mean_i M(i, l); sample-wise optimum l*_i = argmax_l M(i, l); gap = "
        "mean_i max_l M(i,l) - mean_i M(i,G) with a paired percentile bootstrap (facts resampled, G fixed) and a "
        "Wilcoxon signed-rank p-value (golden_fast.locate.golden)",
        "vs golden: mean_i M(i, chosen) - mean_i M(i, G) on the same test facts, paired bootstrap 95% interval",
        "LGA: S_l = sum_i <grad old answer, grad new target> of the down-projection (paper: signed), Tukey fences "
        "k=1 (linear quartiles); cosine and new_norm are our variants from the same Gram products",
        "hybrid: LGA's shortlist (signed, Tukey k=1, its hybrid_shortlist best kept layers; 'all': every candidate "
        "layer, no LGA), then successive halving with trial edits of the proxy facts by the brute-force editor (n0 "
        "facts per layer first by the budget of 2 trial edits per candidate layer, 1/eta of the layers kept a round, "
        "the facts multiplied by eta; an early stop when the leader's paired bootstrap interval is above every other "
        "layer's); cost in trial edits, wall time = LGA + the trial edits' compute",
        "golden band: the layers l whose paired percentile-bootstrap interval of mean_i [M(i, G) - M(i, l)] on the "
        "test facts (overall) contains 0 (golden_fast.locate.band); G is always in it",
        "CMA: ROME's causal tracing, restored MLP window around l at the subject's last token; indirect effect "
        "averaged over the facts used (answer='data' skips the facts the clean model gets wrong)",
        f"editors at a layer, on the first {ctx.config.editors_n or ctx.config.test_n} test facts: ROME / R-ROME edit "
        "each fact alone (evaluated, then reverted); MEMIT / EMMET edit them all as one batch at that single layer",
        "mass editing: batch points edit the first n pool facts at once; sequential checkpoints evaluate every "
        "fact edited so far; time = editing only; peak memory = resident high-water mark during the editing",
    ]
    return "\n".join(lines)


def _ratio(edits: int | None, brute: int | None) -> str:
    return "-" if edits is None or not brute else f"{edits / brute:.3g}"


def _chosen_rows(chosen: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """The 'Chosen layers' rows: place, cost (time, edits) and golden-band membership of each method."""
    brute = chosen.get("brute-force", {})
    rows = []
    for label, m in chosen.items():
        speed = brute["wall_time"] / m["wall_time"] if brute.get("wall_time") and m.get("wall_time") else None
        in_band = m.get("in_golden_band")
        rows.append([label, m["layer"], m.get("distance_to_test_golden", "-"),
                     "-" if in_band is None else ("yes" if in_band else "no"), m["n"], _num(m["wall_time"]),
                     f"{speed:.1f}x" if speed else "-", _num(m.get("edits"), "d"),
                     _ratio(m.get("edits"), brute.get("edits")), m["note"]])
    return rows


def _band_table(rep, band: dict[str, Any] | None) -> None:
    if not band:
        return
    rows = [[layer, band["mean"][j], band["diff"][j], f"[{band['lo'][j]:+.3f}, {band['hi'][j]:+.3f}]",
             "yes" if layer in band["band"] else "no"] for j, layer in enumerate(band["layers"])]
    rep.table("Golden band (test facts)", ["layer", "mean overall", "golden - layer", "95% CI", "in band"], rows,
              note=f"Golden layer {band['golden']}, band {band['band']} ({len(band['band'])} of "
                   f"{len(band['layers'])} layers) on {band['n']} test facts: the layers whose paired "
                   f"percentile-bootstrap interval ({band['n_boot']} resamples, {band['confidence']:.0%}) of the "
                   "difference to the golden layer contains 0.")


def _hybrid_uses_lga(hy: dict[str, Any]) -> bool:
    return (hy.get("settings") or {}).get("lga") is not None


def _hybrid_text(hy: dict[str, Any], editor: str) -> str:
    from golden_fast.locate.hybrid import rounds_table

    c = hy["cost"]
    return "\n".join([
        f"shortlist (LGA signed, Tukey k=1, best first): {hy['shortlist']}" if _hybrid_uses_lga(hy)
        else f"every candidate layer, no LGA: {hy['shortlist']}",
        rounds_table(hy["rounds"]),
        f"chosen layer {hy['chosen']}: {c['edits']} trial edit(s) with {editor} on up to {hy['n_used']} proxy facts "
        f"(full schedule {c['full_schedule_edits']}){'; stopped early' if hy['stopped_early'] else ''}; "
        f"{hy['wall_time']:.1f} s (LGA {c['lga_seconds']:.1f} s, trial edits {c['pair_seconds']:.1f} s)",
    ])


def write_report(ctx):
    """Write report.html, report.md, results.json and figures/ under the experiment folder."""
    with tempfile.TemporaryDirectory(prefix="gf-figures-") as tmp:  # Report copies them under figures/
        return _write(ctx, Path(tmp))


def _write(ctx, figs: Path):
    from golden_fast.experiment.plots import plot_editor_layers, plot_mass_cost, plot_mass_quality
    from golden_fast.report import Report

    config, out = ctx.config, ctx.out
    res = collect(ctx)
    d = res["data"]
    rep = Report(
        f"golden-fast experiment: {config.model}",
        f"{config.data}: {d['proxy_n']} proxy / {d['test_n']} test facts, pool of {d['pool_n']} for mass editing; "
        f"candidate layers {ctx.layers[0]}..{ctx.layers[-1]} ({len(ctx.layers)})"
        + (" (--quick)" if config.quick else ""),
    )
    data_lines = [
        f"Facts: {config.data} (offset {config.offset}); proxy / test split seeded {config.seed}, disjoint. "
        f"{d['records_read']} record(s) read."
    ]
    if config.skip_invalid:
        data_lines.append(
            f"--skip-invalid: {d['invalid_skipped']} invalid record(s) skipped from the file "
            f"({d['invalid_skipped_before_last_used']} among the records up to the last one used); "
            "the first ones are listed under 'Invalid records'."
        )
    rep.text("Data", "\n\n".join(data_lines))

    # -- locating
    chosen = res["chosen"]
    G = res["golden"]["test_golden_layer"] if res["golden"] else None
    if chosen:
        note = (f"Test golden layer: {G} (brute force with {config.brute_editor} on {res['golden']['n_facts']} "
                f"test facts); golden band {res['band']['band']} (see 'Golden band')." if G is not None
                else "The test golden layer is not computed yet (brute-test part).")
        note += (" edits: the trial edits (edit, evaluate, revert) a method makes on proxy facts; brute force: "
                 "facts x layers; LGA and CMA edit nothing.")
        rep.table("Chosen layers", ["method", "layer", "distance to test golden", "in golden band", "proxy facts",
                                    "wall s", "speedup vs brute force", "edits", "edits / brute force", "note"],
                  _chosen_rows(chosen), note=note)
        if res.get("goal"):
            g = res["goal"]
            sp = g["lga_speedup_vs_brute"]
            rep.text(None, f"Goal: LGA (paper variant) within one layer of the test golden layer: "
                           f"{'yes' if g['lga_within_one_layer'] else 'NO'}; at least 50x faster than brute force: "
                           f"{'yes' if g['lga_50x_faster'] else 'NO'}" + (f" ({sp:.1f}x)." if sp else "."))
    else:
        rep.text("Chosen layers", "No locating part has finished yet.")
    for theta in config.thetas:
        path = ctx.locate_dir / f"lga-{theta}.json"
        if not path.exists():
            continue
        s = LayerScores.from_json(path)
        for v in VARIANTS:
            r = s.reselect(v, tukey_k=1.0)
            title = f"LGA ({theta}, {v}{', paper' if (theta, v) == ('down', 'signed') else ''})"
            rep.figure(title, r.plot(figs / f"lga-{theta}-{v}.png",
                                     title=f"LGA {theta}/{v}: {s.n_used} proxy facts, Tukey k=1 fences dashed"),
                       caption=f"chosen layer {r.chosen}; {s.wall_time:.1f} s")
    cma = _scores(ctx.locate_dir / "cma.json")
    if cma is not None:
        rep.text("Causal tracing (CMA)",
                 f"answer={cma.settings.get('answer')}: {cma.n_used} of {cma.n_requests} proxy facts used, "
                 f"{cma.extra.get('n_skipped')} skipped (the clean model's top token was not the answer); "
                 f"{cma.settings.get('samples')} noisy copies, window {cma.settings.get('window')}, noise from "
                 f"{cma.settings.get('noise_subjects')}. Chosen layer {cma.chosen} in {cma.wall_time:.1f} s.")
        rep.figure("CMA: average indirect effect per layer", cma.plot(figs / "cma.png"))
    elif res["cma_error"]:
        rep.text("Causal tracing (CMA)", f"CMA chose no layer (n_used 0): {res['cma_error']}")
    if res["hybrid"]:
        title = "LGA shortlist" if _hybrid_uses_lga(res["hybrid"]) else "every layer"
        rep.pre(f"Hybrid locator ({title}, trial edits)", _hybrid_text(res["hybrid"], config.brute_editor))
    for which, label in (("proxy", "proxy facts: the brute-force choice"), ("test", "test facts: the golden layer")):
        s = _scores(ctx.locate_dir / f"brute-{which}.json")
        if s is not None:
            rep.figure(f"Brute force on {label}", s.plot(
                figs / f"brute-{which}.png",
                title=f"brute force ({config.brute_editor}), {s.n_used} {which} facts: mean overall per layer; "
                      f"star = golden layer {s.chosen}"))

    # -- golden vs sample-wise
    if res["golden"]:
        g = res["golden"]
        rows = []
        for m in g["metrics"]:
            gap = g["gap"][m]
            rows.append([m, g["golden"][m], gap["golden_mean"], gap["samplewise_mean"], gap["gap"],
                         f"[{gap['lo']:.3f}, {gap['hi']:.3f}]", f"{gap['p_value']:.3g}", gap["n"]])
        rep.table("Golden vs sample-wise optimal layers (test facts)",
                  ["metric", "golden layer", "mean at golden", "mean at sample-wise optimum", "gap", "95% CI",
                   "Wilcoxon p", "facts"], rows,
                  note="Brute force on the test facts; the interval is a paired bootstrap with the golden layer fixed.")
        counts: dict[int, int] = {}
        for layer in g["samplewise"].get("overall", []):
            if layer is not None:
                counts[layer] = counts.get(layer, 0) + 1
        rep.pre("Sample-wise optimal layers (overall): layer -> facts",
                ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-")
        _band_table(rep, res["band"])

    # -- editors at the chosen layers
    if res["editors"]:
        means = {}
        for method, e in res["editors"].items():
            header = ["method", "layer", "overall"] + e["metrics"] + ["vs golden (overall)", "edit s (all facts)"]
            rows = [[r["method"], r["layer"], _ci(r["overall"])] + [_ci(r[m]) for m in e["metrics"]]
                    + [_diff(r["vs_golden"]), _num(r["edit_seconds"])] for r in e["rows"]]
            kind = "each fact edited alone, then reverted" if _single(method) else \
                "all these facts as one batch at that single layer"
            apart = (f"held apart from the {e['n_chose_golden']} that chose the golden layer" if e["held_apart"]
                     else f"including the {e['n_chose_golden']} that chose the golden layer (too few held apart)")
            rep.table(f"{method} on {e['n_judged']} test facts at each chosen layer ({kind})",
                      header, rows, note=f"mean [95% bootstrap CI]; test facts {apart}" + (
                          f"; not edited at their layer yet: {', '.join(e['not_edited_yet'])}"
                          if e["not_edited_yet"] else "") + _extras_note(e) + (
                          f"; warnings: {'; '.join(e['warnings'][:3])}" if e["warnings"] else ""))
            means[method] = e["overall_by_layer"]
        marks: dict[int, list[str]] = {}
        for label, m in chosen.items():
            marks.setdefault(int(m["layer"]), []).append(label.replace(" (paper)", "*"))
        rep.figure("Editors' test metric at each evaluated layer",
                   plot_editor_layers(means, G, {k: ", ".join(v) for k, v in marks.items()},
                                      figs / "editors.png"),
                   caption="mean overall on the test facts; * = the paper's LGA; dashed = test golden layer")
    elif res["golden"]:
        rep.text("Editors at the chosen layers", "Not finished yet (editors part).")

    # -- mass editing
    mass = res["mass"]
    rows = []
    for mode, curves in (("batch", mass["batch"]), ("sequential", mass["sequential"])):
        for method, pts in curves.items():
            for p in pts:
                s = p["summary"]
                rows.append([method, mode, p.get("n", p.get("edits")), ",".join(map(str, p.get("layers", [p.get(
                    "layer")]))), _ci(s.get("rewrite_acc")), _ci(s.get("rephrase_acc")), _ci(s.get("locality")),
                    _num(p.get("cum_edit_seconds", p.get("edit_seconds"))), _num(p.get("eval_seconds")),
                    _num((p.get("peak") or {}).get("peak_mib"), ".0f"),
                    _num((p.get("peak") or {}).get("extra_mib"), ".0f")])
    if rows:
        rep.table("Mass editing", ["method", "mode", "facts", "layers", "rewrite_acc", "rephrase_acc", "locality",
                                   "edit s", "eval s", "peak RSS MiB", "peak above start MiB"], rows,
                  note="sequential: edit s is cumulative, peak memory per segment; metrics over every fact "
                       "edited so far (mean [95% CI])")
        rep.figure("Mass editing: quality", plot_mass_quality(mass["batch"], mass["sequential"],
                                                             figs / "mass-quality.png"))
        rep.figure("Mass editing: time and memory", plot_mass_cost(mass["batch"], mass["sequential"],
                                                                   figs / "mass-cost.png"))
    else:
        rep.text("Mass editing", "Not run yet (mass-batch / mass-sequential parts).")

    # -- time
    rows = []
    for theta, s in res["lga"].items():
        rows.append([f"LGA ({theta}, all variants)", _num(s["wall_time"]), f"{s['n_used']} proxy facts"])
    if res["hybrid"]:
        label = "hybrid (LGA + trial edits)" if _hybrid_uses_lga(res["hybrid"]) else "hybrid (trial edits)"
        rows.append([label, _num(res["hybrid"]["wall_time"]),
                     f"{res['hybrid']['cost']['edits']} trial edits"])
    if res["cma"]:
        rows.append(["CMA", _num(res["cma"]["wall_time"]), f"{res['cma']['n_used']} facts traced"])
    for key, label in (("brute_proxy", "brute force (proxy)"), ("brute_test", "brute force (test ground truth)")):
        if res[key]:
            rows.append([label, _num(res[key]["wall_time"]), f"{res[key]['n_used']} facts x "
                                                              f"{len(res[key]['layers'])} layers"])
    for method, e in res["editors"].items():
        total = sum({r["layer"]: r["edit_seconds"] for r in e["rows"]}.values())  # each layer once
        rows.append([f"{method} at {len(e['layers'])} layer(s)", _num(total), "editing only"])
    for part, t in res["timings"].items():
        rows.append([f"part {part} (session time)", _num(t["seconds"]), f"{t['runs']} run(s)"])
    rep.table("Wall time", ["what", "seconds", "note"], rows,
              note="methods: their own compute summed over resumed runs; parts: wall time of the sessions")
    rep.pre("Metric conventions", _conventions(ctx))
    if d["invalid_examples"]:
        rep.pre("Invalid records (first ones)", "\n".join(d["invalid_examples"]))
    rep.pre("Settings", json.dumps(config.to_dict(), indent=1))
    return rep.write(out, results=res)
