"""The side-by-side time table of one harness run, as Markdown, from bench/results/reference/<model>.jsonl.

    python bench/reference/side_by_side.py --tag side-by-side            # print the table
    python bench/reference/side_by_side.py --tag side-by-side --write    # and fill README.md, bench/README.md

One run (one tag, one commit) gives every row, so the ratios compare two sides measured in the same
process, interleaved, with the same thread count. "faster" is EasyEdit's time over golden-fast's
(for evaluation: golden-fast's records/s over EasyEdit's). Peak memory is each side's resident
high-water mark above the RSS at the start of its block.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT / "bench") not in sys.path:
    sys.path.insert(0, str(ROOT / "bench"))

from _common import replace_section  # noqa: E402

SECTION = "reference-table"
NAMES = {"rome": "ROME", "r-rome": "R-ROME", "memit": "MEMIT", "emmet": "EMMET", "alphaedit": "AlphaEdit"}


def load_run(path: Path, tag: str) -> list[dict[str, Any]]:
    """The rows of the last complete run tagged `tag`: a run appends its blocks' rows as they finish
    and ends with its summary row."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs, current = [], []
    for r in rows:
        if r.get("tag") != tag:
            continue
        current.append(r)
        if r.get("part") == "summary":
            runs.append(current)
            current = []
    if not runs:
        raise SystemExit(f"{path}: no complete run tagged {tag!r}")
    return runs[-1]


def _load(x: Any) -> str:
    return "" if not x else "–".join(f"{v:.1f}" for v in x)


def _mem(r: Mapping[str, Any]) -> str:
    ee, gf = r.get("ee_peak_mib"), r.get("gf_peak_mib")
    return "" if ee is None or gf is None else f"{ee:,.0f} / {gf:,.0f}"


def timing_lines(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str, str, str]]:
    """(what, EasyEdit, golden-fast, faster, peak MiB EE / GF, load EE / GF) per timed row of one run."""
    out = []
    for r in rows:
        if "speedup" not in r:
            continue
        q, ee, gf = r["quantity"], float(r["easyedit"]), float(r["golden_fast"])
        load = " / ".join(x for x in (_load(r.get("load_ee")), _load(r.get("load_gf"))) if x)
        if r["part"] == "edit":
            n = int(q.split("(")[1].split()[0])  # "edit seconds (N records)"
            per = "edit" if r["method"] in ("rome", "r-rome") else "fact"
            what = f"{NAMES.get(r['method'], r['method'])}: seconds per {per} ({n} records)"
            out.append((what, f"{ee / n:.2f}", f"{gf / n:.2f}", f"{ee / gf:.1f}x", _mem(r), load))
        elif r["part"] == "stats" and "all" in q:
            n_layers = int(q.split("all ")[1].split()[0])
            out.append((f"statistics: seconds per layer (EasyEdit one pass per layer, golden-fast one pass "
                        f"for all {n_layers})", f"{ee:.2f}", f"{gf / n_layers:.2f}", f"{ee / (gf / n_layers):.1f}x",
                        _mem(r), load))
        elif r["part"] == "stats":
            out.append(("statistics: seconds for the one layer alone", f"{ee:.2f}", f"{gf:.2f}", f"{ee / gf:.1f}x",
                        _mem(r), load))
        elif r["part"] == "eval":
            out.append((f"evaluation: records/s {q.split('records/s ')[1]}", f"{ee:.2f}", f"{gf:.2f}",
                        f"{gf / ee:.1f}x", _mem(r), load))
    return out


def agreement_line(rows: Sequence[Mapping[str, Any]]) -> str:
    summary = next((r["note"] for r in rows if r.get("part") == "summary"), None)
    if not summary:
        return ""
    worst = max(summary["worst_rel"].values(), default=0.0)
    differ = ", ".join(summary["differ"]) or "none"
    return (f"In the same run, {summary['agree']} of {summary['judged']} compared quantities agree within their "
            f"tolerance (worst relative difference {worst:.1e}); differing: {differ}.")


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table with a provenance line above it."""
    r0 = rows[0]
    lines = timing_lines(rows)
    if not lines:
        raise SystemExit(f"run {r0.get('tag')!r} has no timed rows")
    head = (f"{r0['model']}, {r0['n']} records for ROME / R-ROME and evaluation, {r0['n_mass']} for the MEMIT "
            f"family, {r0['steps']} v*/z steps, {r0['convention']} convention, {r0['threads']} thread(s) each, "
            f"{r0['device']}; golden-fast {r0['commit']}, EasyEdit {r0['easyedit_commit'][:7]}, "
            f"{r0['timestamp'][:10]}, tag `{r0['tag']}` in bench/results/reference/{r0['model']}.jsonl.")
    table = ["| | EasyEdit | golden-fast | faster | peak MiB (EasyEdit / golden-fast) "
             "| load (EasyEdit / golden-fast) |",
             "|---|---:|---:|---:|---:|---|"]
    table += ["| " + " | ".join(cells) + " |" for cells in lines]
    agree = agreement_line(rows)
    return "\n".join([head, "", *table] + (["", agree] if agree else []))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tag", required=True)
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "reference"))
    ap.add_argument("--write", action="store_true", help=f"replace the <!-- {SECTION} --> sections of README.md "
                                                         "and bench/README.md")
    args = ap.parse_args(argv)
    text = markdown(load_run(Path(args.results) / f"{args.model}.jsonl", args.tag))
    print(text)
    if args.write:
        for path in (ROOT / "README.md", ROOT / "bench" / "README.md"):
            replace_section(path, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
