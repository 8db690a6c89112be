"""golden-fast against EasyEdit, side by side: same model, requests, templates, C; one table.

    python bench/reference/run_reference.py --easyedit /path/to/EasyEdit \\
        --data $DATA/counterfact/counterfact-edit.json --n 2 --layer 5 --methods rome,r-rome --steps 20

Parts (--parts): "edit" (each method of --methods: keys, v*/z, ΔW, per-record metrics, time and
peak memory of each side), "stats" (C of one layer: EasyEdit's layer_stats on the same texts against
golden-fast's one-pass statistics of all layers), "eval" (per-record metrics of the unedited model and
records/s of each evaluator). Both sides run in this one process, interleaved (the side that goes
first alternates from block to block), with the same thread count; the load average is recorded
before and after every block. The table is printed and its rows appended to
bench/results/reference/<model>.jsonl. See bench/reference/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (HERE, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

METHODS = ("rome", "r-rome", "memit", "emmet", "alphaedit")
SINGLE = ("rome", "r-rome")


def _parse_layers(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--easyedit", default=None, help="EasyEdit checkout (default $EASYEDIT_DIR)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=None,
                    help="CounterFact file (default $GOLDEN_FAST_DATA/counterfact/counterfact-edit.json)")
    ap.add_argument("--n", type=int, default=2, help="records for ROME / R-ROME and evaluation")
    ap.add_argument("--n-mass", type=int, default=None, help="records for MEMIT / EMMET / AlphaEdit (default --n)")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--layer", type=int, default=5, help="ROME / R-ROME layer, and the statistics' layer")
    ap.add_argument("--mass-layers", default=None, help="MEMIT family layers, e.g. 4-8 (default: EasyEdit's YAML)")
    ap.add_argument("--methods", default="rome,r-rome")
    ap.add_argument("--parts", default="edit", help="comma list of edit, stats, eval")
    ap.add_argument("--steps", type=int, default=None, help="v_num_grad_steps on both sides (default: EasyEdit's YAML)")
    ap.add_argument("--convention", default="shared", choices=("shared", "native"))
    ap.add_argument("--grouping", default="flat", choices=("flat", "easyedit"),
                    help="MEMIT family key averaging: flat (golden-fast's plain mean) or easyedit (bare prompt 1/2)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override an EasyEdit hparams field after the convention (both sides get it through the "
                         "translation), e.g. --set v_weight_decay=0.001 to measure one by-design difference alone")
    ap.add_argument("--corpus", default="model-sampled", help="golden-fast corpus for C (shared by both sides)")
    ap.add_argument("--mom2-n", type=int, default=320, help="texts of C used by the edits (golden-fast's cache)")
    ap.add_argument("--stats-n", type=int, default=64, help="texts of the statistics comparison")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-metrics", action="store_true", help="skip the per-record metrics of the edits")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "reference"))
    ap.add_argument("--tag", default="")
    return ap.parse_args(argv)


def _trim() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Block:
    """Time, peak RSS above the start, and the load average around one side's run."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        from golden_fast.experiment.memory import reset_peak_rss, rss_bytes

        _trim()  # hand freed heap back to the OS, so the previous block's garbage is not this one's headroom
        self.reset = reset_peak_rss()
        self.rss0 = rss_bytes() or 0
        self.load0 = os.getloadavg()[0]
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        from golden_fast.experiment.memory import peak_rss_bytes

        self.seconds = time.perf_counter() - self.t0
        self.peak_mib = (peak_rss_bytes() - self.rss0) / 2**20 if self.reset else None
        self.load1 = os.getloadavg()[0]
        return False

    def info(self):
        return {"load": [round(self.load0, 2), round(self.load1, 2)]}


def interleaved(i: int, run_ee, run_gf):
    """Run both sides; EasyEdit first on even blocks, golden-fast first on odd ones."""
    order = [("ee", run_ee), ("gf", run_gf)] if i % 2 == 0 else [("gf", run_gf), ("ee", run_ee)]
    out = {}
    for name, fn in order:
        with Block(name) as b:
            res = fn()
        out[name] = (res, b)
    return out["ee"], out["gf"], [n for n, _ in order]


def edit_part(i, method, ctx, args, rows, notes):
    import ref_compare as cmp
    import ref_easyedit as E
    import ref_golden as G
    import ref_hparams as H
    import ref_inputs as I
    import torch
    import yaml

    ee, model, tok, tok_ee = ctx["ee"], ctx["model"], ctx["tok"], ctx["tok_ee"]
    single = method in SINGLE
    reqs = ctx["requests"] if single else ctx["requests_mass"]
    base = H.base_easyedit_hparams(ee.root, method)
    layers = [args.layer] if single else (_parse_layers(args.mass_layers) if args.mass_layers else base["layers"])
    eed = H.adapt_to_model(base, method, model, layers, ctx["stats_dir"], args.corpus, args.mom2_n)
    if args.steps is not None:
        eed["v_num_grad_steps"] = args.steps
    eed, conv_notes = H.apply_convention(eed, args.convention)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in eed:
            raise SystemExit(f"--set {item}: {method}'s EasyEdit hparams have no field {key!r}")
        eed[key] = yaml.safe_load(value)
        conv_notes.append(f"--set {key}={eed[key]!r} on both sides")
    C = ctx["C"](layers)
    cmax = float(torch.linalg.eigvalsh(C[layers[-1]]).max()) if method == "alphaedit" else None
    gfd, tr_notes = H.to_golden_fast(method, eed, model.config.num_hidden_layers, c_max_eig=cmax)
    if method == "alphaedit":
        # EasyEdit's threshold is one number for every layer; golden-fast's relative one too: both
        # pick the same directions when every layer's largest eigenvalue is the same, else say so
        eig = {l: float(torch.linalg.eigvalsh(C[l]).max()) for l in layers}
        if args.convention == "native" and len(layers) > 1 and max(eig.values()) / min(eig.values()) > 1 + 1e-9:
            tr_notes.append(f"AlphaEdit: largest eigenvalue of C differs across layers {eig}; the relative "
                            "threshold (taken at the last layer) selects other directions at the other layers")
    C_gf = C
    if method == "alphaedit" and args.convention == "shared":
        C_gf = H.alphaedit_shared_C(C, float(eed["nullspace_threshold"]), gfd["nullspace_rel_threshold"])
        tr_notes.append("AlphaEdit, shared convention: golden-fast gets per layer C with its largest eigenvalue set "
                        "to threshold / rel_threshold, so its relative rule selects EasyEdit's {eigenvalue < "
                        "threshold} at every layer (C enters AlphaEdit only through P)")
    cfg = G.config(method, gfd)
    templates = I.templates(model, tok, cfg.context_template_length_params)
    ee.reset()
    E.feed_templates(ee, method, templates, grouping="flat" if single else args.grouping)
    hp = E.make_hparams(ee, method, eed)
    E.feed_covariance(ee, method, model, hp, C)
    notes[method] = conv_notes + tr_notes + [
        f"{len(templates)} context templates (golden-fast's sampler, handed to both)"]
    records = [I.easyedit_request(r) for r in reqs]
    digest = I.weights_digest(model)

    if single:
        def run_ee():
            return [E.run_single(ee, method, model, tok_ee, rec, hp) for rec in records]

        def run_gf():
            return G.run_single(model, tok, reqs, method, cfg, C)
    else:
        def run_ee():
            return E.run_mass(ee, method, model, tok_ee, records, hp)

        def run_gf():
            return G.run_mass(model, tok, reqs, method, cfg, C_gf, templates)

    (ee_res, ee_b), (gf_res, gf_b), order = interleaved(i, run_ee, run_gf)
    if I.weights_digest(model) != digest:
        raise RuntimeError(f"{method}: the model is not bitwise as before after both sides ran")
    gfnote = "" if args.grouping == "flat" or single else "EasyEdit keys: bare prompt weighs 1/2 (by design)"
    if single:
        for r, (e, g) in enumerate(zip(ee_res, gf_res["records"])):
            tag = f"record {r}"
            rows.append(cmp.tensor_row("edit", method, f"{tag} dW", g["dW"], e["dW"], "dW"))
            rows.append(cmp.tensor_row("edit", method, f"{tag} k*", g["k_star"], e["k_star"], "key"))
            rows.append(cmp.tensor_row("edit", method, f"{tag} key in denominator", g["k_den"], e["k_den"], "key",
                                       note="bare prompt's key" if method == "rome" else "template mean k*"))
            rows.append(cmp.tensor_row("edit", method, f"{tag} v*", g["v_star"], e["v_star"], "value"))
            rows.append(cmp.row("edit", method, f"{tag} steps", e["steps"], g["steps"], exact=True,
                                note=f"final loss EE {e['loss_curve'][-1] if e['loss_curve'] else None:.4g} / "
                                     f"GF {g['loss_curve'][-1] if g['loss_curve'] else float('nan'):.4g}"))
        ee_s = sum(e["seconds"] for e in ee_res)
        gf_s = gf_res["seconds"]
    else:
        for l in sorted(ee_res["dW"]):
            rows.append(cmp.tensor_row("edit", method, f"layer {l} dW", gf_res["dW"][l], ee_res["dW"][l], "dW"))
        rows.append(cmp.tensor_row("edit", method, f"K at layer {min(ee_res['dW'])}", gf_res["K"], ee_res["K"], "key",
                                   note=gfnote))
        rows.append(cmp.tensor_row("edit", method, "Z (all records)", gf_res["Z"], ee_res["Z"], "value"))
        rows.append(cmp.row("edit", method, "steps per record", ee_res["steps"], gf_res["steps"], exact=True))
        if method == "alphaedit":
            thr = float(eed["nullspace_threshold"])
            # EasyEdit prints only the count; its rule (singular values of the float32 C below the threshold)
            # is applied here to the C it was given, to compare with golden-fast's null-space dimensions
            ee_rank = [int((torch.linalg.svdvals(C[l].float()) < thr).sum()) for l in sorted(layers)]
            gf_rank = [gf_res["null_space_rank"][l] for l in sorted(layers)]
            rows.append(cmp.row("edit", method, "null-space dimension per layer", ee_rank, gf_rank, exact=True,
                                note="EasyEdit's: its rule on its C (computed by the harness)"))
        ee_s, gf_s = ee_res["seconds"], gf_res["seconds"]
    rows.append(cmp.time_row("edit", method, f"edit seconds ({len(reqs)} records)", ee_s, gf_s,
                             _mib(ee_b), _mib(gf_b), note=f"order {'/'.join(order)}",
                             load_ee=ee_b.info()["load"], load_gf=gf_b.info()["load"]))

    if not args.no_metrics:
        ee_dw = [{args.layer: e["dW"]} for e in ee_res] if single else [ee_res["dW"]]
        gf_dw = [{args.layer: g["dW"]} for g in gf_res["records"]] if single else [gf_res["dW"]]
        ee_m, gf_m = {"ee": [], "gf": []}, {"ee": [], "gf": []}
        pre_ee = E.evaluate_records(ee, model, tok_ee, records, hp)
        pre_gf = G.evaluate_records(model, tok, reqs)
        groups = [[j] for j in range(len(reqs))] if single else [list(range(len(reqs)))]
        for gi, idx in enumerate(groups):
            for side, dws in (("ee", ee_dw), ("gf", gf_dw)):
                with I.applied(model, ctx["adapter"], dws[gi]):
                    res = E.evaluate_records(ee, model, tok_ee, [records[j] for j in idx], hp,
                                             pre=[pre_ee[j] for j in idx])
                    ee_m[side] += [E.metrics_of(x) for x in res]
                    gf_m[side] += G.metrics_of(G.evaluate_records(model, tok, [reqs[j] for j in idx], pre=pre_gf))
        if I.weights_digest(model) != digest:
            raise RuntimeError(f"{method}: the model is not bitwise as before after the evaluation")
        both = "EasyEdit's edit vs golden-fast's edit"
        rows += cmp.metric_rows(method, f"{both}, EasyEdit's evaluator", ee_m["ee"], ee_m["gf"])
        rows += cmp.metric_rows(method, f"{both}, golden-fast's evaluator", gf_m["ee"], gf_m["gf"])
        rows += cmp.metric_rows(method, "EasyEdit's evaluator vs golden-fast's, on EasyEdit's edit",
                                ee_m["ee"], gf_m["ee"])


def _mib(b):
    return None if b.peak_mib is None else round(b.peak_mib, 1)


def stats_part(i, ctx, args, rows, notes):
    import ref_compare as cmp
    import ref_easyedit as E
    import ref_inputs as I

    model, tok, ee = ctx["model"], ctx["tok"], ctx["ee"]
    texts = I.corpus_texts(model, tok, args.corpus, args.stats_n)
    layer = args.layer
    name = f"model.layers.{layer}.mlp.down_proj"
    n_layers = model.config.num_hidden_layers

    def run_ee():
        return E.layer_stats(ee, model, ctx["tok_ee"], name, texts, "float32", ctx["stats_dir"])

    def run_gf():
        t0 = time.perf_counter()
        Cs = I.second_moments(model, tok, range(n_layers), args.corpus, args.stats_n, "float32", cache=False)
        return Cs, time.perf_counter() - t0

    (ee_res, ee_b), (gf_res, gf_b), order = interleaved(i, run_ee, run_gf)
    C_ee, count_ee, s_ee = ee_res
    Cs, s_gf = gf_res
    with Block("gf1") as one:  # golden-fast on the one layer too (not interleaved: context only)
        I.second_moments(model, tok, [layer], args.corpus, args.stats_n, "float32", cache=False)
    rows.append(cmp.tensor_row("stats", "C", f"C layer {layer} ({len(texts)} texts, float32 sums)", Cs[layer], C_ee,
                               "C"))
    what = f"seconds: EasyEdit 1 layer / golden-fast all {n_layers} layers"
    rows.append(cmp.time_row("stats", "C", what, s_ee, s_gf,
                             _mib(ee_b), _mib(gf_b), note=f"order {'/'.join(order)}", load_ee=ee_b.info()["load"],
                             load_gf=gf_b.info()["load"]))
    rows.append(cmp.time_row("stats", "C", "seconds: EasyEdit 1 layer / golden-fast the same 1 layer", s_ee,
                             one.seconds, None, _mib(one), note="golden-fast run after the pair",
                             load_gf=one.info()["load"]))
    notes["stats"] = [f"texts: the first {len(texts)} of golden-fast's corpus {args.corpus!r}, fed to EasyEdit's "
                      f"layer_stats in place of its Hugging Face dataset; EasyEdit counted {count_ee} tokens",
                      "EasyEdit's DataLoader tokenises in 2 worker processes (num_workers=2, its setting)"]


def eval_part(i, ctx, args, rows, notes):
    import ref_compare as cmp
    import ref_easyedit as E
    import ref_golden as G
    import ref_hparams as H
    import ref_inputs as I

    model, tok, ee, reqs = ctx["model"], ctx["tok"], ctx["ee"], ctx["requests"]
    records = [I.easyedit_request(r) for r in reqs]
    base = H.base_easyedit_hparams(ee.root, "rome")
    hp = E.make_hparams(ee, "rome", H.adapt_to_model(base, "rome", model, [args.layer], ctx["stats_dir"],
                                                     args.corpus, args.mom2_n))

    def run_ee():
        pre = E.evaluate_records(ee, model, ctx["tok_ee"], records, hp)
        return [E.metrics_of(x) for x in E.evaluate_records(ee, model, ctx["tok_ee"], records, hp, pre=pre)]

    def run_gf():
        pre = G.evaluate_records(model, tok, reqs)
        return G.metrics_of(G.evaluate_records(model, tok, reqs, pre=pre))

    (ee_m, ee_b), (gf_m, gf_b), order = interleaved(i, run_ee, run_gf)
    rows += cmp.metric_rows("evaluate", "unedited model", ee_m, gf_m)
    n = len(reqs)
    rows.append(cmp.time_row("eval", "evaluate", f"records/s (pre + post pass, {n} records)",
                             round(n / ee_b.seconds, 3), round(n / gf_b.seconds, 3), _mib(ee_b), _mib(gf_b),
                             note=f"order {'/'.join(order)}; speedup column is EE/GF of records/s"))
    notes["eval"] = ["EasyEdit: compute_edit_quality per record (rewrite, rephrase, locality outputs), locality = "
                     "mean(pre tokens == post tokens) as its editor computes it; "
                     "golden-fast: evaluate(suites=knowedit)"]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("GIT_OPTIONAL_LOCKS", "0")  # the provenance's `git status` must not write the index
    import torch

    torch.set_num_threads(args.threads)
    from ref_import import EasyEditUnavailable, load_easyedit, modules_for

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; known: {', '.join(METHODS)}")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    wanted = (methods if "edit" in parts else []) + [p for p in parts if p in ("stats", "eval")]
    if "edit" in parts and not args.no_metrics:
        wanted.append("eval")
    try:
        ee = load_easyedit(args.easyedit, modules_for(wanted))
    except EasyEditUnavailable as exc:
        print(f"skipped: {exc}")
        return 0

    import _common
    import ref_compare as cmp
    import ref_inputs as I

    from golden_fast.data.location import data_file
    from golden_fast.models import get_adapter

    data = args.data or str(data_file("counterfact/counterfact-edit.json"))
    model, tok = I.load_shared_model(args.model)
    n_mass = args.n_mass or args.n
    cache: dict[int, torch.Tensor] = {}

    def C(layers):
        missing = [l for l in layers if l not in cache]
        if missing:
            cache.update(I.second_moments(model, tok, missing, args.corpus, args.mom2_n))
        return {l: cache[l] for l in layers}

    stats_dir = tempfile.mkdtemp(prefix="easyedit-stats-")
    ctx = {"ee": ee, "model": model, "tok": tok, "tok_ee": I.easyedit_tokenizer(tok), "adapter": get_adapter(model),
           "requests": I.requests(data, args.n, args.offset), "requests_mass": I.requests(data, n_mass, args.offset),
           "C": C, "stats_dir": stats_dir}
    prov = _common.provenance("cpu")
    prov.update({"easyedit_commit": ee.commit, "model": args.model, "threads": torch.get_num_threads(),
                 "convention": args.convention, "grouping": args.grouping, "steps": args.steps, "n": args.n,
                 "n_mass": n_mass, "layer": args.layer, "tag": args.tag})
    out_path = Path(args.out) / f"{args.model}.jsonl"
    all_rows: list[dict] = []
    notes: dict[str, list[str]] = {}
    jobs = [(f"edit {m}", lambda i, rows, m=m: edit_part(i, m, ctx, args, rows, notes)) for m in methods
            if "edit" in parts]
    if "stats" in parts:
        jobs.append(("stats", lambda i, rows: stats_part(i, ctx, args, rows, notes)))
    if "eval" in parts:
        jobs.append(("eval", lambda i, rows: eval_part(i, ctx, args, rows, notes)))
    for block, (name, job) in enumerate(jobs):
        rows: list[dict] = []
        t0 = time.time()
        try:
            job(block, rows)
        except Exception as exc:  # one failing part must not lose the others' rows
            import traceback

            traceback.print_exc()
            rows.append(cmp.row(name.split()[0], name.split()[-1], "error", note=f"{type(exc).__name__}: {exc}"))
        key = name.split()[-1]
        rows += [{"part": "notes", "method": key, "quantity": "notes", "note": " | ".join(notes.get(key, []))}]
        cmp.append_rows(out_path, rows, {**prov, "wall_s": round(time.time() - t0, 1)})
        all_rows += rows
        print(cmp.format_table([r for r in rows if r["part"] != "notes"]), flush=True)
        print(flush=True)

    table_rows = [r for r in all_rows if r["part"] != "notes"]
    print(cmp.format_table(table_rows))
    print()
    for key, lines in notes.items():
        for line in lines:
            print(f"note [{key}]: {line}")
    summary = cmp.summarise(table_rows)
    print(f"summary: {summary['agree']}/{summary['judged']} judged rows agree; differ: {summary['differ'] or 'none'}")
    print(f"EasyEdit {ee.commit} at {ee.root}; golden-fast {prov['commit']}; {prov['device']}; "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    cmp.append_rows(out_path, [{"part": "summary", "method": "", "quantity": "summary", "note": summary}], prov)
    print(f"rows appended to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
