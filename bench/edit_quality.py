"""Edit quality on a real model (issue 4's behaviour lines), resumable part by part.

Parts (results under --out, one file each; a rerun skips what is finished):
  single-r-rome, single-rome  each request edited alone, evaluated, reverted (knowedit suite,
                              locality against the pre-edit report); one JSONL line per request
  batch-memit, batch-emmet    one batch of --n requests, evaluated, reverted
  sequential                  R-ROME and ROME sequentially over --n requests: every --every edits,
                              the rewrite accuracy of the first --every edits and the Frobenius
                              norm of the total update (the collapse curve); the journal is saved
                              at each checkpoint, and a rerun replays it and continues

    python bench/edit_quality.py --model smollm2-135m --part single-r-rome --n 50
    python bench/edit_quality.py --part batch-emmet --n 100
    python bench/edit_quality.py --part sequential --n 200 --every 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_bytes, pyplot, reset_peak_rss, rss_bytes, save_png  # noqa: E402

from golden_fast.data import builtin_facts, load
from golden_fast.data.location import data_dir
from golden_fast.edit import Editor
from golden_fast.edit.config import preset
from golden_fast.edit.journal import EditJournal, apply_journal
from golden_fast.edit.moments import Moments
from golden_fast.evaluate import EvalReport, evaluate
from golden_fast.fileio import atomic_write_json
from golden_fast.models import get_adapter, load_model

DATA = (data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"  # $GOLDEN_FAST_DATA


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=1, default=float)


def _summary(report: EvalReport) -> dict:
    return {k: {"mean": s.mean, "lo": s.lo, "hi": s.hi, "n": s.n} for k, s in report.summary().items()}


def _single(args, model, tok, reqs, pre, method, moments, out: Path) -> dict:
    path = out / f"single-{method}.jsonl"
    done = {json.loads(l)["position"] for l in path.read_text().splitlines()} if path.exists() else set()
    editor = Editor(model, tok, method=method, layers=[args.layer], hparams=dict(args.hp), stats=moments,
                    progress=False)
    todo = [i for i in range(len(reqs)) if i not in done]

    def record(j: int, req, res) -> None:
        # called while request todo[j]'s edit is applied; edit_each reverts it afterwards
        i = todo[j]
        post = evaluate(model, tok, [req], pre=pre)  # pre's locality predictions are keyed by text
        row = {"position": i, "case_id": req.case_id, "seconds": res.wall_time,
               "update_norm": res.traces[0].update_norm, "loss": res.traces[0].loss_curve[-1],
               "nll": res.traces[0].extras.get("nll"),
               **{m: v for m, v in post.by_request().get(0, {}).items()}}
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{method} {i:4d} {req.case_id!s:>6} rewrite {row.get('rewrite_acc', float('nan')):.2f} "
              f"locality {row.get('locality', float('nan')):.2f} {row['seconds']:.1f}s", flush=True)

    # v* of 8 requests per batched loop (edit_each); every 8 edits are on disk before the next
    editor.edit_each([reqs[i] for i in todo], record, group_size=8)
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    keys = sorted({k for r in rows for k in r} - {"position", "case_id"})
    return {k: sum(r[k] for r in rows if k in r) / max(1, sum(k in r for r in rows)) for k in keys} | {"n": len(rows)}


def _batch(args, model, tok, reqs, pre, method, moments, out: Path) -> dict:
    over = {"layers": tuple(args.layers)} if args.layers else {}
    if args.mom2_update_weight is not None:
        over["mom2_update_weight"] = args.mom2_update_weight
    hp = dataclasses.replace(preset(method, args.model), **dict(args.hp), **over)
    tag = f"-w{hp.mom2_update_weight:g}" if "mom2_update_weight" in over else ""
    path = out / f"batch-{method}-{len(reqs)}{tag}.json"
    if path.exists():
        return json.loads(path.read_text())
    rss0 = rss_bytes()
    reset_peak_rss()
    t0 = time.perf_counter()
    res = Editor(model, tok, method=method, hparams=hp, stats=moments, progress=True).edit(reqs, mode="batch")
    edit_s = time.perf_counter() - t0
    peak = peak_rss_bytes()
    post = evaluate(model, tok, reqs, pre=pre)
    res.revert()
    result = {"method": method, "n": len(reqs), "layers": list(hp.layers), "edit_seconds": edit_s,
              "mom2_update_weight": hp.mom2_update_weight,
              # z optimisation (batched, early-stopped requests leave the batch) vs keys + solves + apply
              "targets_seconds": res.traces[0].extras.get("targets_seconds"),
              # peak RSS of the process during edit() beyond what it held before (model, data, C)
              "peak_extra_mib": None if peak is None or rss0 is None else (peak - rss0) / 2**20,
              "summary": _summary(post), "warnings": sorted({w for t in res.traces for w in t.warnings})}
    _write_json(path, result)
    return result


def _sequential(args, model, tok, reqs, method, moments, out: Path) -> list[dict]:
    d = out / f"sequential-{method}"
    d.mkdir(parents=True, exist_ok=True)
    curve_path = d / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.exists() else []
    adapter = get_adapter(model)
    W0 = adapter.down_weight(args.layer).detach().clone()
    # resume: replay the chunk journals saved at each checkpoint, then continue
    for jdir in sorted(d.glob("journal-*")):
        apply_journal(model, EditJournal.load(jdir))
    editor = Editor(model, tok, method=method, layers=[args.layer], hparams=dict(args.hp), stats=moments,
                    progress=False, revert_each=False)
    start = curve[-1]["edits"] if curve else 0
    first = reqs[: args.every]
    for stop in range(start + args.every, len(reqs) + 1, args.every):
        t0 = time.perf_counter()
        res = editor.edit(reqs[stop - args.every : stop], mode="sequential")
        res.journal.save(d / f"journal-{stop:05d}", overwrite=True)
        rep = evaluate(model, tok, first)
        norm = float((adapter.down_weight(args.layer).detach() - W0).double().norm())
        curve.append({"edits": stop, "first_rewrite_acc": rep.summary()["rewrite_acc"].mean,
                      "update_norm": norm, "seconds": time.perf_counter() - t0})
        _write_json(curve_path, curve)
        print(f"{method} after {stop:4d} edits: first-{args.every} rewrite {curve[-1]['first_rewrite_acc']:.3f} "
              f"|W - W0| {norm:.2f}", flush=True)
    with torch.no_grad():  # back to the unedited layer, bitwise, for the next method
        adapter.down_weight(args.layer).copy_(W0)
    return curve


def _plot_sequential(out: Path) -> Path | None:
    """sequential.png: first-k rewrite accuracy and |W - W0| against the number of edits, one line per
    editor whose curve exists (the collapse the anchors' users report, side by side)."""
    curves = {m: json.loads(p.read_text()) for m in ("r-rome", "rome")
              if (p := out / f"sequential-{m}" / "curve.json").exists()}
    if not curves:
        return None
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for m, c in curves.items():
        x = [p["edits"] for p in c]
        ax1.plot(x, [p["first_rewrite_acc"] for p in c], marker="o", label=m)
        ax2.plot(x, [p["update_norm"] for p in c], marker="o", label=m)
    first = curves[next(iter(curves))][0]["edits"]
    ax1.set(xlabel="edits made", ylabel=f"rewrite accuracy of the first {first}", ylim=(0, 1.05))
    ax2.set(xlabel="edits made", ylabel="|W - W0| (Frobenius)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_png(fig, out / "sequential.png")


def _hp_item(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import yaml

    return key.strip(), yaml.safe_load(value)  # numbers, booleans and lists as YAML reads them


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(DATA) if DATA.is_file() else "builtin")
    ap.add_argument("--part", required=True,
                    choices=["single-r-rome", "single-rome", "batch-memit", "batch-emmet", "sequential"])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--layer", type=int, default=6, help="layer of the single-layer editors")
    ap.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="layers of MEMIT/EMMET (default: the preset's)")
    ap.add_argument("--methods", default="r-rome,rome",
                    help="sequential: the editors, in order (one process each can share the cores)")
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--mom2-update-weight", type=float, default=None,
                    help="MEMIT/EMMET lambda (default: the preset's); results are filed per value")
    ap.add_argument("--identity-c", action="store_true", help="C = I instead of the statistics cache")
    ap.add_argument("--hp", action="append", default=[], type=_hp_item, metavar="KEY=VALUE",
                    help="override a preset field (repeatable), e.g. --hp v_weight_decay=0.1; use --out to file "
                         "the results apart")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model, tok = load_model(args.model)
    reqs = (builtin_facts() if args.data == "builtin" else load(args.data, limit=args.n))[: args.n]
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "edit_quality" / args.model)
    out.mkdir(parents=True, exist_ok=True)
    # the statistics follow the --hp overrides too (mom2_n_samples, the corpus), not the preset alone
    stats_hp = {k: v for k, v in dict(args.hp).items() if k in ("mom2_dataset", "mom2_n_samples", "mom2_dtype")}
    hp0 = dataclasses.replace(preset("r-rome", args.model), mom2_adjustment=not args.identity_c, **stats_hp)
    moments = Moments.resolve(None, model, tok, hp0)
    torch.manual_seed(0)
    if args.part == "sequential":
        result = {m: _sequential(args, model, tok, reqs, m, moments, out) for m in args.methods.split(",")}
        print(f"plot: {_plot_sequential(out)}")
    else:
        pre_path = out / f"pre-{len(reqs)}.json"
        pre = EvalReport.from_json(pre_path) if pre_path.exists() else evaluate(model, tok, reqs)
        pre.to_json(pre_path)
        kind, method = args.part.split("-", 1)
        fn = _single if kind == "single" else _batch
        result = fn(args, model, tok, reqs, pre, method, moments, out)
    print(json.dumps({"part": args.part, "model": args.model, "n": len(reqs), "result": result}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
