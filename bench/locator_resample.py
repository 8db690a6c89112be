"""How often each locator lands in the golden band, on resampled proxy sets of a recorded brute-force
pool (FORMULAS.md, section "Hybrid locator and golden band"), and at what cost.

Per model, from the study's folder (bench/results/experiment/<model>-<data>/):
  1. the pool: the brute-force grids of the proxy and test facts (locate/brute-proxy/, locate/test-pairs/),
     merged by fact key; facts not yet at every layer are left out;
  2. LGA (the study's settings, from locate/lga-down.json) on every fact the grids hold or will hold,
     saved once as bench/results/locate/<model>/lga-pool.json and reused while it covers the facts;
  3. causal tracing (the study's settings, from locate/cma.json) on the same facts, in chunks, within a
     time budget, saved as cma-pool.json (per-fact curves; a rerun traces only the facts still missing);
     CMA's draws come from the traced facts only when it could not trace them all;
  4. `resample_locators`: proxy brute force, the hybrid (LGA shortlist, library defaults), brute force
     on the first 2 facts of each set (what the hybrid's budget buys without shortlist or halving), LGA
     alone, CMA alone; band = the pool's golden band; cost in edits, seconds and as a ratio to the study's
     proxy brute force (20 facts x every layer);
  5. bench/results/locate/<model>/resample.json and a Markdown table.

    OMP_NUM_THREADS=1 .venv/bin/python bench/locator_resample.py --model smollm2-135m
    .venv/bin/python bench/locator_resample.py --model smollm2-135m --table     # from the saved JSON

Seconds: a brute-force edit costs the mean "seconds" recorded in the grids' rows (edit + evaluate +
revert); LGA and CMA cost their measured seconds per fact in this run, times the proxy-set size.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES, study_facts  # noqa: E402

from golden_fast.fileio import read_json, write_json  # noqa: E402
from golden_fast.locate.hybrid import HybridConfig, budget_n0  # noqa: E402
from golden_fast.locate.resample import (  # noqa: E402
    Pool,
    add_costs,
    cma_matrix,
    cma_only,
    cost_table,
    hybrid_lookup,
    lga_matrix,
    lga_only,
    proxy_brute,
    resample_locators,
)

OUT = ROOT / "bench/results/locate"
STUDY_PROXY_FACTS = 20  # the study's proxy brute force: 20 facts at every layer
BASE_SIZES = (5, 10, 20, 50)
HYBRID = "hybrid (LGA shortlist)"
# the hybrid's budget (library default): at most 2 trial edits per candidate layer, so brute force on
# the first 2 facts of a proxy set costs what the hybrid may spend at most
BUDGET_PER_LAYER = int(HybridConfig().budget_per_layer)
EQUAL_COST = f"brute force on {BUDGET_PER_LAYER} facts (the hybrid's budget)"
#: alternatives of the hybrid's default settings (c = 8, n0 by the budget rule), run only when asked
#: (--hybrid-alt): fixed first rounds, and a shorter shortlist
HYBRID_ALTERNATIVES: dict[str, dict[str, Any]] = {
    "n0=4": {"n0": 4},  # 8 x 4 + 4 x 4 + 2 x 8 = 64 edits at most
    "n0=3": {"n0": 3},  # 8 x 3 + 4 x 3 + 2 x 6 = 48 edits at most
    "n0=2": {"n0": 2},  # 8 x 2 + 4 x 2 + 2 x 4 = 32 edits at most
    "c=6": {"c": 6},  # 6 x 4 + 3 x 4 + 2 x 8 = 52 edits at most
    # LGA's shortlist, a third or a quarter kept a round
    "eta=3": {"eta": 3},
    "eta=4": {"eta": 4},
    # every layer, no LGA: n0 = 1, cut short by the budget of 2 edits per layer
    "all": {"c": "all"},
    "all+eta=3": {"c": "all", "eta": 3},
    "all+eta=4": {"c": "all", "eta": 4},
    # the same at 3 edits per layer: 0.15 of the study's proxy brute force
    "all+eta=4+3/layer": {"c": "all", "eta": 4, "budget_per_layer": 3.0},
}


# ---- the study's facts and settings ----------------------------------------------------------------


def pairs_files(study: Path) -> list[Path]:
    return [study / "locate" / "brute-proxy" / "pairs.jsonl", study / "locate" / "test-pairs" / "pairs.jsonl"]


def grid_facts(study: Path) -> tuple[dict[str, Any], list[str]]:
    """(key -> request of every fact the study's grids hold or will hold, the proxy grid's keys)."""
    from golden_fast.locate.brute_force import request_key

    cfg, facts = study_facts(study)
    proxy, test = facts.proxy[: cfg.brute_proxy_n], facts.test[: cfg.test_brute_n]
    keyed = {request_key(r): r for r in proxy + test}
    return keyed, [request_key(r) for r in proxy]


def lga_config(study: Path) -> Any:
    from golden_fast.locate.lga import LGAConfig

    return LGAConfig(**read_json(study / "locate" / "lga-down.json")["settings"])


def cma_config(study: Path) -> Any:
    from golden_fast.locate.causal_trace import CMAConfig

    stored = read_json(study / "locate" / "cma.json")["settings"]
    names = {f.name for f in dataclasses.fields(CMAConfig)}
    return CMAConfig(**{k: v for k, v in stored.items() if k in names})


def seconds_per_edit(files: Sequence[Path], keys: Sequence[str]) -> tuple[float, int]:
    """(mean recorded seconds of an edit over the pool facts' rows, rows counted)."""
    want = set(keys)
    secs = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        for line in text[: text.rfind("\n") + 1].splitlines():
            row = json.loads(line)
            if row["key"] in want and row.get("seconds") is not None:
                secs.append(float(row["seconds"]))
    if not secs:
        raise SystemExit("the brute-force rows record no seconds")
    return float(np.mean(secs)), len(secs)


# ---- LGA and causal tracing on the facts ------------------------------------------------------------


def _settings_match(stored: Mapping[str, Any], config: Any) -> bool:
    want = json.loads(json.dumps(dataclasses.asdict(config)))
    return all(stored.get(k) == v for k, v in want.items())


def pool_lga(model: Any, tok: Any, keyed: Mapping[str, Any], path: Path, config: Any) -> Any:
    """LGA's LayerScores on every fact of `keyed` (reused from `path` when it covers them with these
    settings); the fact keys are recorded in extra["keys"]."""
    from golden_fast.locate import LayerScores
    from golden_fast.locate.lga import lga

    if path.exists():
        s = LayerScores.from_json(path)
        if _settings_match(s.settings, config) and set(keyed) <= set(s.extra.get("keys") or []):
            print(f"LGA: reusing {path.relative_to(ROOT)}", flush=True)
            return s
    keys = list(keyed)
    s = lga(model, tok, [keyed[k] for k in keys], None, config)
    s.extra["keys"] = keys
    write_json(path, s.to_dict())
    print(f"LGA on {len(keys)} facts: {s.wall_time:.1f} s", flush=True)
    return s


def _merge_cma(parts: Sequence[Any], keys: Sequence[str], config: Any, source: str) -> Any:
    """One CMA LayerScores from per-chunk runs: per-fact curves concatenated, scores re-averaged."""
    from golden_fast.locate import LayerScores

    ex = [p.extra for p in parts]
    restored = np.concatenate([np.asarray(e["p_restored"], dtype=np.float64) for e in ex])
    low = np.concatenate([np.asarray(e["p_corrupted"], dtype=np.float64) for e in ex])
    extra = {
        "keys": list(keys),
        "tried": [k for e in ex for k in e["tried"]],
        "skipped": [s for e in ex for s in e["skipped"]],
        "n_skipped": sum(int(e["n_skipped"]) for e in ex),
        "sigma": ex[0]["sigma"],
        "noise_source": ex[0]["noise_source"],
        "p_clean": np.concatenate([np.asarray(e["p_clean"], dtype=np.float64) for e in ex]),
        "p_corrupted": low,
        "p_restored": restored,
        "requests": [r for e in ex for r in e["requests"]],
        "chunk_seconds": [float(p.wall_time) for p in parts],
        # traced in this script's runs (the rest reused from the study's identical traces)
        "own_facts": sum(int(e.get("own_facts", p.n_requests)) for e, p in zip(ex, parts)),
        "own_seconds": sum(float(e.get("own_seconds", p.wall_time)) for e, p in zip(ex, parts)),
        "reused_from_study": [k for e in ex for k in e.get("reused_from_study", [])],
    }
    return LayerScores.build(
        "cma",
        parts[0].layers,
        {"indirect_effect": (restored - low[:, None]).mean(0), "restored": restored.mean(0)},
        "indirect_effect",
        tukey_k=config.tukey_k,
        top_k=config.top_k,
        wall_time=float(sum(p.wall_time for p in parts)),
        settings=dataclasses.asdict(config) | {"noise_subjects": source},
        n_requests=len(extra["tried"]),
        n_used=len(keys),
        extra=extra,
    )


def _merge_all(parts: Sequence[Any], config: Any) -> Any:
    return _merge_cma(parts, [k for p in parts for k in p.extra["keys"]], config, parts[0].settings["noise_subjects"])


def _study_part(path: Path, keyed: Mapping[str, Any], tried: set[str], config: Any) -> Any | None:
    """The study's traces of facts of `keyed` not yet tried, as one part (None: none, or other settings)."""
    from golden_fast.locate import LayerScores

    if not path.exists():
        return None
    s = LayerScores.from_json(path)
    if not _settings_match(s.settings, config):
        return None
    key_of = {keyed[k].ref: k for k in keyed if k not in tried}
    rows = [i for i, r in enumerate(s.extra["requests"]) if r["ref"] in key_of]
    if not rows:
        return None
    ex = s.extra
    keys = [key_of[ex["requests"][i]["ref"]] for i in rows]
    s.extra = {
        "keys": keys,
        "tried": keys,
        "skipped": [],
        "n_skipped": 0,
        "sigma": ex["sigma"],
        "noise_source": ex["noise_source"],
        "p_clean": [ex["p_clean"][i] for i in rows],
        "p_corrupted": [ex["p_corrupted"][i] for i in rows],
        "p_restored": [ex["p_restored"][i] for i in rows],
        "requests": [ex["requests"][i] for i in rows],
        "own_facts": 0,
        "own_seconds": 0.0,
        "reused_from_study": keys,
    }
    s.wall_time = s.wall_time / s.n_requests * len(rows)
    s.n_requests = s.n_used = len(rows)
    return s


def _chunk_keys(s: Any, keyed: Mapping[str, Any], chunk: Sequence[str]) -> Any:
    """A chunk's LayerScores with extra["keys"] (traced facts) and extra["tried"] (all of the chunk)."""
    by_ref = {keyed[k].ref: k for k in chunk}
    s.extra["keys"] = [by_ref[r["ref"]] for r in s.extra["requests"]]
    s.extra["tried"] = list(chunk)
    return s


def pool_cma(model: Any, tok: Any, keyed: Mapping[str, Any], path: Path, config: Any, budget_s: float,
             study_cma: Path, chunk: int = 4) -> Any | None:
    """Causal tracing's LayerScores on the facts of `keyed`, traced in chunks until done or until
    `budget_s` seconds have passed; resumed from `path` (same settings) and saved after each chunk.
    Facts the study traced with the same settings (`study_cma`) are taken from there: the traces are
    deterministic (seeded noise, the same sigma), so tracing them again would give the same curves."""
    from golden_fast.locate import LayerScores
    from golden_fast.locate.causal_trace import causal_trace

    parts: list[Any] = []
    if path.exists():
        old = LayerScores.from_json(path)
        if _settings_match(old.settings, config):
            parts = [old]
        else:
            print(f"CMA: {path.relative_to(ROOT)} was made with other settings; tracing again", flush=True)
    tried = {k for p in parts for k in p.extra["tried"]}
    reused = _study_part(study_cma, keyed, tried, config)
    if reused is not None:
        parts.append(reused)
        tried |= set(reused.extra["tried"])
        print(f"CMA: {len(reused.extra['tried'])} fact(s) reused from the study's traces", flush=True)
    todo = [k for k in keyed if k not in tried]
    t0 = time.perf_counter()
    for lo in range(0, len(todo), chunk):
        if time.perf_counter() - t0 > budget_s:
            print(f"CMA: time budget spent; {len(todo) - lo} fact(s) left untraced", flush=True)
            break
        part = todo[lo : lo + chunk]
        try:
            s = causal_trace(model, tok, [keyed[k] for k in part], None, config)
        except ValueError as exc:  # every fact of the chunk skipped (clean model wrong)
            if "skipped" not in str(exc):
                raise
            print(f"CMA: chunk skipped entirely: {exc}", flush=True)
            continue
        parts.append(_chunk_keys(s, keyed, part))
        merged = _merge_all(parts, config)
        write_json(path, merged.to_dict())
        parts = [merged]
        print(f"CMA: {merged.n_used} fact(s) traced, {_cma_seconds_per_fact(merged):.1f} s per fact", flush=True)
    if len(parts) > 1:
        merged = _merge_all(parts, config)
        write_json(path, merged.to_dict())
        parts = [merged]
    return parts[0] if parts else None


# ---- the resampling ------------------------------------------------------------------------------------


def sizes_for(n: int) -> list[int]:
    """5, 10, 20, 50 (those <= n) and the pool size when below 100."""
    sizes = [s for s in BASE_SIZES if s <= n]
    if n < 100 and n not in sizes:
        sizes.append(n)
    return sizes


def locators(lga_per: np.ndarray, alternatives: Sequence[str] = ()) -> dict[str, Any]:
    locs = {"proxy brute force": proxy_brute(), HYBRID: hybrid_lookup(lga=lga_per), "LGA only": lga_only(lga_per),
            EQUAL_COST: proxy_brute(first=BUDGET_PER_LAYER)}
    for name in alternatives:
        alt = HYBRID_ALTERNATIVES[name]
        locs[f"hybrid, {name}"] = hybrid_lookup(lga=None if alt.get("c") == "all" else lga_per, **alt)
    return locs


def study_choices(pool: Pool, proxy_keys: Sequence[str], locs: Mapping[str, Any], band: Any,
                  cma_per: np.ndarray) -> list[dict[str, Any]]:
    """Each locator once on the study's own proxy set (the proxy grid's facts, in order), as rows of
    one draw each (`add_costs` prices them like the resampled rows)."""
    pos = {k: i for i, k in enumerate(pool.keys)}
    rows = np.array([pos[k] for k in proxy_keys if k in pos])
    every = dict(locs)
    if not np.isnan(cma_per[rows]).any():
        every["CMA only"] = cma_only(cma_per)
    out = []
    for name, loc in every.items():
        p = loc(pool, rows, 0)
        hit = int(p.layer in band.band)
        out.append({"locator": name, "size": len(rows), "draws": 1, "hits": hit, "hit_rate": float(hit),
                    "mean_edits": float(p.edits), "chosen": [p.layer], "edits": [p.edits], "info": [p.info]})
    return out


def shortlist_coverage(rows: Sequence[Mapping[str, Any]], band: Sequence[int]) -> list[dict[str, Any]]:
    """Per hybrid row: in how many draws LGA's shortlist held a band layer (the halving's ceiling)."""
    inside = set(band)
    return [
        {"locator": r["locator"], "size": r["size"], "draws": r["draws"],
         "shortlist_has_band": sum(bool(inside & set(i["shortlist"])) for i in r["info"]),
         "stopped_early": sum(bool(i["stopped_early"]) for i in r["info"])}
        for r in rows if r["info"] and "shortlist" in r["info"][0]
    ]


def _commit() -> str:
    """The checked-out commit, read from .git without running git ("unknown" when not found)."""
    git = ROOT / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"


def run(model_name: str, cma_budget_s: float, draws: int, seed: int, alternatives: Sequence[str]) -> dict[str, Any]:
    import torch

    from golden_fast.models import load_model

    torch.set_num_threads(1)
    study = STUDIES[model_name]
    out = OUT / model_name
    files = pairs_files(study)
    pool = Pool.from_pairs(files)
    keyed, proxy_keys = grid_facts(study)
    missing = [k for k in pool.keys if k not in keyed]
    if missing:
        raise SystemExit(f"pool facts not among the study's facts: {missing[:3]}")
    print(f"{model_name}: pool of {pool.n} facts x {len(pool.layers)} layers ({len(pool.dropped)} incomplete left out)",
          flush=True)
    model, tok = load_model(json.loads((study / "config.json").read_text())["model"])
    lga_s = pool_lga(model, tok, keyed, out / "lga-pool.json", lga_config(study))
    cma_s = pool_cma(model, tok, keyed, out / "cma-pool.json", cma_config(study), cma_budget_s,
                     study / "locate" / "cma.json")
    return analyse(model_name, pool, files, proxy_keys, lga_s, cma_s, draws, seed, alternatives)


def _cma_seconds_per_fact(s: Any) -> float:
    """Seconds per fact of the traces made here (those reused from the study: the study's own rate)."""
    if s is None:
        return 0.0
    own = int(s.extra.get("own_facts", s.n_requests))
    if own:
        return float(s.extra.get("own_seconds", s.wall_time)) / own
    return s.wall_time / s.n_requests


def analyse(model_name: str, pool: Pool, files: Sequence[Path], proxy_keys: Sequence[str], lga_s: Any, cma_s: Any,
            draws: int, seed: int, alternatives: Sequence[str]) -> dict[str, Any]:
    out = OUT / model_name
    lga_per = lga_matrix(lga_s, pool)
    cma_per = cma_matrix(cma_s, pool) if cma_s is not None else np.full(pool.values.shape, np.nan)
    band = pool.band()
    sizes = sizes_for(pool.n)
    locs = locators(lga_per, alternatives)
    traced = [k for k, row in zip(pool.keys, cma_per) if not np.isnan(row).any()]
    cma_all = len(traced) == pool.n
    if cma_all:
        locs["CMA only"] = cma_only(cma_per)
    rep = resample_locators(pool, locs, band, sizes=sizes, draws=draws, seed=seed)
    rows = rep.rows
    if not cma_all and traced:
        sub = pool.subset(traced)
        sub_rep = resample_locators(sub, {"CMA only": cma_only(cma_per[[pool.keys.index(k) for k in traced]])},
                                    band, sizes=sizes_for(sub.n), draws=draws, seed=seed)
        rows = rows + [r | {"drawn_from": f"the {sub.n} traced facts"} for r in sub_rep.rows]
    spe, n_rows = seconds_per_edit(files, pool.keys)
    ref_edits = STUDY_PROXY_FACTS * len(pool.layers)
    lga_spf = lga_s.wall_time / lga_s.n_requests
    cma_spf = _cma_seconds_per_fact(cma_s)
    per_fact = {"LGA only": lga_spf, "CMA only": cma_spf, HYBRID: lga_spf}
    per_fact |= {f"hybrid, {a}": 0.0 if HYBRID_ALTERNATIVES[a].get("c") == "all" else lga_spf for a in alternatives}
    rows = add_costs(rows, spe, per_fact, ref_edits)
    result = {
        "model": model_name,
        "band": band.to_dict(),
        "rows": rows,
        "skipped_sizes": rep.skipped,
        "shortlist_coverage": shortlist_coverage(rows, band.band),
        "study_proxy_set": add_costs(study_choices(pool, proxy_keys, locs, band, cma_per), spe, per_fact, ref_edits),
        "settings": rep.settings | {
            "band": {"n_boot": band.n_boot, "seed": band.seed, "confidence": band.confidence, "metric": pool.metric},
            "hybrid": {"c": 8, "n0": "budget: at most 2 trial edits per candidate layer (budget_n0)",
                       "n0_at_20_facts": budget_n0(8, len(pool.layers), 20), "tukey_k": 1.0, "confidence": 0.95,
                       "n_boot": 2000, "early_stop": True,
                       "min_stop_facts": 8, "shortlist": f"LGA {lga_s.variant}, mean over the proxy set"},
            "hybrid_alternatives": {a: HYBRID_ALTERNATIVES[a] for a in alternatives},
            "lga": lga_s.settings,
            "cma": cma_s.settings if cma_s is not None else None,
            "cma_traced": len(traced),
            "cma_draws": "the same sets as the others" if cma_all
            else f"drawn from the {len(traced)} traced facts only",
            "seconds_per_edit": spe,
            "seconds_per_edit_source": f"mean 'seconds' of the {n_rows} brute-force rows of the pool facts",
            "lga_seconds_per_fact": lga_spf,
            "cma_seconds_per_fact": cma_spf,
            "per_fact_seconds_source": "measured in this run (one thread, shared machine)",
            "reference_edits": ref_edits,
            "reference": f"the study's proxy brute force: {STUDY_PROXY_FACTS} facts x {len(pool.layers)} layers",
        },
        "provenance": {
            "commit": _commit(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "pool": pool.n,
            "pool_dropped": pool.dropped,
            "files": [str(f.relative_to(ROOT)) for f in files],
            "lga_file": str((out / "lga-pool.json").relative_to(ROOT)),
            "cma_file": str((out / "cma-pool.json").relative_to(ROOT)),
        },
    }
    write_json(out / "resample.json", result)
    return result


# ---- the tables ----------------------------------------------------------------------------------------


def markdown(result: Mapping[str, Any]) -> str:
    b, s = result["band"], result["settings"]
    inband = [j for j, layer in enumerate(b["layers"]) if layer in b["band"]]
    lines = [
        f"## {result['model']}: pool of {result['provenance']['pool']} facts x {len(b['layers'])} layers",
        "",
        f"Golden layer {b['golden']}, golden band {b['band']} ({b['confidence']:.0%} paired percentile bootstrap of "
        f"d(l) = mean_i [M(i, G) - M(i, l)], {b['n_boot']} resamples, seed {b['seed']}, metric {s['metric']}).",
        "",
        "| layer | mean | d(l) | interval |",
        "|---:|---:|---:|---|",
    ]
    lines += [f"| {b['layers'][j]} | {b['mean'][j]:.4f} | {b['diff'][j]:.4f} | [{b['lo'][j]:.4f}, {b['hi'][j]:.4f}] |"
              for j in inband]
    lines += [
        "",
        f"Cost reference: {s['reference']} = {s['reference_edits']} edits x {s['seconds_per_edit']:.1f} s "
        f"({s['seconds_per_edit_source']}); LGA {s['lga_seconds_per_fact']:.2f} s/fact, CMA "
        f"{s['cma_seconds_per_fact']:.2f} s/fact ({s['per_fact_seconds_source']}). CMA's draws: {s['cma_draws']}.",
        "",
        f"The study's proxy set ({result['study_proxy_set'][0]['size']} facts):",
        "",
        "| locator | layer | in band | edits | edits / brute | seconds | seconds / brute |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['locator']} | {r['chosen'][0]} | {'yes' if r['hits'] else 'no'} | {r['edits'][0]} | "
              f"{r['edit_ratio']:.3f} | {r['mean_seconds']:.0f} | {r['seconds_ratio']:.3f} |"
              for r in result["study_proxy_set"]]
    lines += ["", f"Resampled proxy sets ({s['draws']} draws per size, seed {s['seed']}):", ""]
    order = {name: i for i, name in enumerate(dict.fromkeys(r["locator"] for r in result["rows"]))}
    lines.append(cost_table(sorted(result["rows"], key=lambda r: (order[r["locator"]], r["size"]))))
    if result.get("shortlist_coverage"):
        lines += ["", "The hybrid's shortlist (LGA's top c) held a band layer in:", "",
                  "| locator | size | draws with a band layer shortlisted | early stops |", "|---|---:|---:|---:|"]
        lines += [f"| {c['locator']} | {c['size']} | {c['shortlist_has_band']}/{c['draws']} | {c['stopped_early']} |"
                  for c in sorted(result["shortlist_coverage"], key=lambda c: (order[c["locator"]], c["size"]))]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(STUDIES), required=True)
    ap.add_argument("--table", action="store_true", help="print the Markdown from the saved resample.json")
    ap.add_argument("--cma-budget-min", type=float, default=20.0, help="time for new causal traces (minutes)")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hybrid-alt", default="", help=f"comma-separated: {', '.join(HYBRID_ALTERNATIVES)}")
    args = ap.parse_args(argv)
    if args.table:
        saved = read_json(OUT / args.model / "resample.json")
        if saved is None:
            raise SystemExit(f"no {OUT / args.model / 'resample.json'}; run without --table first")
        print(markdown(saved))
        return
    alts = [a for a in args.hybrid_alt.split(",") if a]
    unknown = [a for a in alts if a not in HYBRID_ALTERNATIVES]
    if unknown:
        raise SystemExit(f"unknown --hybrid-alt {unknown}; choose from {list(HYBRID_ALTERNATIVES)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(markdown(run(args.model, 60 * args.cma_budget_min, args.draws, args.seed, alts)))


if __name__ == "__main__":
    main()
