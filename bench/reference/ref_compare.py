"""Numbers from the two sides -> comparison rows -> one printed table and JSONL rows.

A row is one compared quantity: {part, method, quantity, easyedit, golden_fast, rel, agree, note}.
`rel` is the relative Frobenius difference ||gf - ee|| / ||ee|| (EasyEdit the reference), `agree`
whether it is within the row's tolerance (or, for counts and metrics, equality). Rows go to
bench/results/reference/<model>.jsonl with the run's provenance on every line.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

#: default tolerances (relative Frobenius) per quantity kind
TOL = {"dW": 1e-3, "key": 1e-5, "value": 1e-3, "C": 1e-5}


def rel(gf: torch.Tensor, ee: torch.Tensor) -> float:
    gf, ee = gf.detach().double().cpu(), ee.detach().double().cpu()
    if gf.shape != ee.shape:
        raise ValueError(f"shapes differ: golden-fast {tuple(gf.shape)}, EasyEdit {tuple(ee.shape)}")
    den = float(ee.norm())
    return float((gf - ee).norm()) / den if den > 0 else float((gf - ee).norm())


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def row(part: str, method: str, quantity: str, easyedit: Any = None, golden_fast: Any = None,
        rel_diff: float | None = None, tol: float | None = None, note: str = "", exact: bool = False,
        **extra) -> dict[str, Any]:
    """One compared quantity. Judged (`agree`) when a tolerance is given (rel_diff <= tol) or when
    `exact` (equality of the two values); otherwise reported only (times, memory)."""
    if rel_diff is not None and tol is not None:
        agree = bool(rel_diff <= tol)
    elif exact:
        agree = easyedit == golden_fast
    else:
        agree = None
    return {"part": part, "method": method, "quantity": quantity, "easyedit": easyedit, "golden_fast": golden_fast,
            "rel": rel_diff, "tol": tol, "agree": agree, "note": note, **extra}


def tensor_row(part, method, quantity, gf, ee, kind: str, note: str = "", **extra):
    return row(part, method, quantity, f"|.|={float(ee.double().norm()):.5g}", f"|.|={float(gf.double().norm()):.5g}",
               rel(gf, ee), TOL[kind], note, cos=cos(gf, ee), **extra)


def metric_rows(method: str, side: str, ee_metrics: Sequence[Mapping[str, float]],
                gf_metrics: Sequence[Mapping[str, float]], note: str = "") -> list[dict[str, Any]]:
    """Per-record metric equality: `side` names whose edit (or 'unedited') both evaluators judged, or
    for edit comparisons whose evaluator judged both edits."""
    out = []
    for i, (a, b) in enumerate(zip(ee_metrics, gf_metrics)):
        for m in sorted(set(a) | set(b)):
            x, y = a.get(m), b.get(m)
            r = row("metrics", method, f"record {i} {m} [{side}]", _r(x), _r(y), note=note)
            r["agree"] = None if x is None or y is None else abs(x - y) <= 1e-9
            out.append(r)
    return out


def _r(x):
    return None if x is None else round(float(x), 6)


def time_row(part, method, what, ee_s, gf_s, ee_mib=None, gf_mib=None, note="", **extra):
    ratio = ee_s / gf_s if gf_s else math.inf
    return row(part, method, what, round(ee_s, 3), round(gf_s, 3), note=note, speedup=round(ratio, 3),
               ee_peak_mib=ee_mib, gf_peak_mib=gf_mib, **extra)


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of agreeing / differing rows and the worst relative difference per (method, quantity kind)."""
    judged = [r for r in rows if r.get("agree") is not None]
    worst: dict[str, float] = {}
    for r in rows:
        if r.get("rel") is not None:
            key = f"{r['method']}:{r['quantity'].split(' [')[0].split(' record')[0]}"
            worst[key] = max(worst.get(key, 0.0), r["rel"])
    return {"rows": len(rows), "judged": len(judged), "agree": sum(bool(r["agree"]) for r in judged),
            "differ": [f"{r['method']} {r['quantity']}" for r in judged if not r["agree"]], "worst_rel": worst}


def condense(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-record metric rows folded into one row per (method, comparison): how many (record,
    metric) pairs are identical, and which are not. Other rows unchanged. For printing; the JSONL
    keeps every row."""
    out: list[dict[str, Any]] = []
    groups: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r.get("part") != "metrics" or " [" not in r.get("quantity", ""):
            out.append(dict(r))
            continue
        side = r["quantity"].split(" [", 1)[1].rstrip("]")
        key = (r["method"], side)
        if key not in groups:
            groups[key] = {"part": "metrics", "method": r["method"], "quantity": f"per-record metrics [{side}]",
                           "n": 0, "same": 0, "diff": [], "rel": None, "tol": None, "note": ""}
            out.append(groups[key])
        g = groups[key]
        g["n"] += 1
        if r.get("agree"):
            g["same"] += 1
        elif r.get("agree") is False:
            g["diff"].append(f"{r['quantity'].split(' [')[0]}: {r['easyedit']} vs {r['golden_fast']}")
    for g in groups.values():
        diff = g.pop("diff")
        g["easyedit"] = f"{g['n']} (record, metric)"
        g["golden_fast"] = f"{g['same']} identical"
        g["agree"] = g["same"] == g["n"]
        g["note"] = "; ".join(diff)
    return out


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    rows = condense(rows)
    head = ("part", "method", "quantity", "EasyEdit", "golden-fast", "rel diff", "ok", "note")
    body = []
    for r in rows:
        relv = "" if r.get("rel") is None else f"{r['rel']:.2e}"
        ok = {True: "yes", False: "NO", None: ""}[r.get("agree")]
        extra = ""
        if "speedup" in r:
            extra = f"EE/GF time x{r['speedup']}"
            if r.get("ee_peak_mib") is not None:
                extra += f"; peak +{r['ee_peak_mib']:.0f} / +{r['gf_peak_mib']:.0f} MiB"
        note = "; ".join(x for x in (extra, r.get("note") or "") if x)
        body.append((r["part"], r["method"], r["quantity"], _s(r.get("easyedit")), _s(r.get("golden_fast")), relv, ok,
                     note))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    widths[-1] = len(head[-1])
    line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def _s(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, (list, tuple)):
        return ",".join(_s(v) for v in x)
    return str(x)


def append_rows(path: Path, rows: Sequence[Mapping[str, Any]], provenance: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with path.open("a") as f:
        for r in rows:
            f.write(json.dumps({"timestamp": stamp, **provenance, **r}, sort_keys=True, default=str) + "\n")
    return path
