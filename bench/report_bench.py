"""Markdown tables from a pytest-benchmark JSON file of the bench/test_bench_*.py suites.

One table per benchmark group (a hot path: its baseline and candidates, timed in the same run), the
baseline first, then the candidates from slowest to fastest, with p50 and p20-p80 of the timed
rounds, the speedup over the baseline (recomputed here from the medians, so a `-k` run that timed
both still gets it) and what each suite measured besides time (peak tensor memory, errors against
the truth). A header names the machine: CPU, torch threads, load average at start and end.

    pytest bench --benchmark-enable --benchmark-json=.benchmarks/latest.json
    python bench/report_bench.py .benchmarks/latest.json                 # Markdown on stdout
    python bench/report_bench.py .benchmarks/latest.json --out t.md --csv
        # also append the figures to bench/results/<device-slug>.csv (bench "pytest_bench")
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

# extra_info keys shown in the notes column, with how to print them
_NOTES = {
    "peak_tensor_bytes": lambda v: f"peak tensors {v / 2**20:.1f} MiB",
    "max_rel_err_vs_f64": lambda v: f"max rel err vs f64 {v:.1e}",
    "max_ulp_vs_f64": lambda v: f"max {v:.0f} ulp from f64 rounded once",
    "max_abs_logprob_diff": lambda v: f"max logprob diff {v:.1e}",
    "max_rel_err_vs_lu": lambda v: f"max rel err vs LU {v:.1e}",
    "max_rel_err_one_vs_per_layer": lambda v: f"one pass vs per-layer rel err {v:.1e}",
    "max_rel_delta_diff": lambda v: f"delta rel diff {v:.1e}",
}


def _unit(seconds: float) -> tuple[str, float]:
    for name, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return name, scale
    return "µs", 1e-6


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}" if x >= 1 else f"{x:.3f}"


def load_rows(data: dict) -> dict[str, list[dict]]:
    """group -> rows (name, label, role, p20/p50/p80 seconds, rounds, extra_info)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        times = b["stats"].get("data") or [b["stats"]["median"]]
        pct = _common.percentiles(sorted(times))
        pct["p50"] = b["stats"]["median"]  # pytest-benchmark's own median: the same statistic
        groups[b.get("group") or b["name"]].append(
            {
                "name": b["name"],
                "label": info.get("candidate", b["name"]),
                "role": info.get("role", "candidate"),
                "rounds": b["stats"]["rounds"],
                "info": info,
                **pct,
            }
        )
    return groups


def _load(x: float | None) -> str:
    return "?" if x is None else f"{x:.1f}"


def machine_header(data: dict) -> str:
    mi = data.get("machine_info", {})
    gf = mi.get("golden_fast", {})
    cpu = gf.get("cpu") or mi.get("cpu", {}).get("brand_raw", "unknown CPU")
    loads = [b.get("extra_info", {}).get("load_average") for b in data["benchmarks"]]
    loads = [x for x in loads if x is not None]
    parts = [
        f"{cpu}, {gf.get('logical_cpus', '?')} logical CPUs, torch {gf.get('torch', '?')} with "
        f"{gf.get('torch_threads', '?')} thread(s)",
        f"load average (1 min) {_load(gf.get('load_average_start'))} at the start, "
        f"{_load(gf.get('load_average_end'))} at the end"
        + (f", {min(loads):.1f}-{max(loads):.1f} after each benchmark" if loads else ""),
        f"commit {gf.get('commit', data.get('commit_info', {}).get('id', '?'))}, {data.get('datetime', '?')}",
    ]
    return "Machine: " + "; ".join(parts) + "."


def group_table(group: str, rows: list[dict]) -> str:
    base = next((r for r in rows if r["role"] == "baseline"), None)
    rows = sorted(rows, key=lambda r: (r is not base, -r["p50"]))  # baseline, then slowest to fastest
    unit, scale = _unit(max(r["p50"] for r in rows) if base is None else base["p50"])
    out = [f"**{group}**", "", f"| route | p50 ({unit}) | p20-p80 ({unit}) | rounds | speedup | notes |",
           "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        speedup = "baseline" if r is base else (f"{base['p50'] / r['p50']:.2f}x" if base else "")
        notes = "; ".join(fmt(r["info"][k]) for k, fmt in _NOTES.items() if k in r["info"])
        out.append(
            f"| {r['label']} | {_fmt(r['p50'] / scale)} | {_fmt(r['p20'] / scale)}-{_fmt(r['p80'] / scale)} "
            f"| {r['rounds']} | {speedup} | {notes} |"
        )
    return "\n".join(out)


def report(data: dict) -> str:
    groups = load_rows(data)
    return "\n\n".join([machine_header(data), *(group_table(g, rows) for g, rows in groups.items())]) + "\n"


def append_csv(data: dict) -> Path | None:
    """Append p20/p50/p80, speedup and memory of every benchmark to bench/results/<device-slug>.csv."""
    gf = data.get("machine_info", {}).get("golden_fast", {})
    prov = {
        "device_slug": gf.get("device_slug", "unknown"),
        "device": f"{gf.get('cpu')} ({gf.get('torch_threads')} threads)",  # as _common.device_name
        "torch": gf.get("torch", "?"),
        "commit": gf.get("commit", "?"),
    }
    path = None
    for group, rows in load_rows(data).items():
        base = next((r for r in rows if r["role"] == "baseline"), None)
        for r in rows:
            vals = [(f"{r['name']}/{k}", r[k], "s") for k in ("p50", "p20", "p80")]
            if base is not None and r is not base:
                vals.append((f"{r['name']}/speedup", base["p50"] / r["p50"], "x"))
            if "peak_tensor_bytes" in r["info"]:
                vals.append((f"{r['name']}/peak_tensor_bytes", r["info"]["peak_tensor_bytes"], "bytes"))
            details = {"group": group, "route": r["label"], "role": r["role"], "rounds": r["rounds"],
                       "load_average": r["info"].get("load_average"), "datetime": data.get("datetime")}  # fmt: skip
            path = _common.append_results("pytest_bench", vals, prov, details)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="pytest-benchmark JSON (--benchmark-json)")
    ap.add_argument("--out", default=None, help="write the Markdown here instead of stdout")
    ap.add_argument("--csv", action="store_true", help="append the figures to bench/results/<device-slug>.csv")
    args = ap.parse_args()
    data = json.loads(Path(args.json).read_text())
    if not data.get("benchmarks"):
        print(f"{args.json}: no benchmarks (were they run with --benchmark-enable?)", file=sys.stderr)
        return 1
    md = report(data)
    if args.out:
        Path(args.out).write_text(md)
    else:
        print(md, end="")
    if args.csv:
        print(f"rows appended to {append_csv(data)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
