"""How much room a layer has for a batch of facts: the geometry of the keys against the layer's width.

    python bench/mass_capacity.py --sizes 100,1000            # smollm2-135m, CounterFact, layers 4-8
    python bench/mass_capacity.py --table                     # print the saved rows as markdown

A batch editor writes n facts into one down-projection W (d x m) by a least-squares update on their
keys K (m x n). What it can write is bounded by the keys: n targets need n independent key
directions, and the ones the corpus uses (C's large eigenvalues) are protected. On the unedited
model, per edited layer, for each batch size n, this measures

- `eff_rank`: the participation ratio (Σs²)² / Σs⁴ of K's singular values, the number of directions
  the keys really spread over, and the same for C^-1/2 K (`eff_rank_whitened`: the keys as MEMIT's
  and EMMET's solves weigh them);
- `null_rank`: the dimension of AlphaEdit's null space P (its preset threshold), and `eff_rank_PK`:
  the participation ratio of P K, the keys as AlphaEdit can use them;
- `mean_cos`: the mean cosine between two different facts' keys (one common direction dominates
  when it is near 1);
- `delivered_*`: the share of the first layer's residual change R that each editor's solve makes,
  <ΔW K, R> / ||R||², and `miss_*`: ||ΔW K - R|| / ||R||, with the editors' presets (AlphaEdit's
  P and α, MEMIT's λ C). The first layer is exact: the later layers of a batch see the earlier
  layers' updates.

Targets z come from the shared target store (`bench/mass_edit.py targets`); facts without one are
left out and counted. A size larger than the facts with z gets the key geometry alone (eff. ranks,
null space, cosines, from the keys of all its facts; no delivered share). Results:
bench/results/mass/<model>-<data>/capacity.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common  # noqa: E402

from golden_fast.edit import Editor  # noqa: E402
from golden_fast.edit.context import context_templates  # noqa: E402
from golden_fast.edit.keys import keys_at_subject  # noqa: E402
from golden_fast.edit.methods.alphaedit import null_space_projection  # noqa: E402
from golden_fast.edit.methods.memit import residual_at  # noqa: E402
from golden_fast.edit.moments import Moments  # noqa: E402
from golden_fast.edit.target_cache import (  # noqa: E402
    TargetCache,
    request_key,
    reuse_targets,
    settings_key,
    weights_fingerprint,
)
from golden_fast.edit.values import optimise_targets  # noqa: E402
from golden_fast.models import home, load_model  # noqa: E402


def participation_ratio(A: torch.Tensor) -> float:
    """(Σs²)² / Σs⁴ of A's singular values: n for n orthogonal equal columns, 1 for one direction."""
    s2 = torch.linalg.svdvals(A.to(torch.float64)).pow(2)
    return float(s2.sum().pow(2) / s2.pow(2).sum()) if float(s2.sum()) > 0 else 0.0


def mean_cosine(K: torch.Tensor) -> float:
    """Mean cosine between the columns of K, over distinct pairs."""
    Kn = K / K.norm(dim=0, keepdim=True).clamp_min(1e-30)
    G = Kn.T @ Kn
    n = G.shape[0]
    return float((G.sum() - G.diagonal().sum()) / (n * (n - 1))) if n > 1 else 1.0


def delivered(dWK: torch.Tensor, R: torch.Tensor) -> tuple[float, float]:
    """(<ΔW K, R> / ||R||², ||ΔW K - R|| / ||R||)."""
    r2 = float(R.pow(2).sum())
    return float((dWK * R).sum()) / r2, float((dWK - R).norm()) / math.sqrt(r2)


def key_geometry(K: torch.Tensor, C: torch.Tensor, alpha_cfg) -> tuple[dict[str, Any], torch.Tensor]:
    """The measures that need no target: K (m, n) keys, C (m, m); also AlphaEdit's P."""
    m, n = K.shape
    ev, U = torch.linalg.eigh(C)
    inv_sqrt = U @ torch.diag(ev.clamp_min(ev[-1] * 1e-12).rsqrt()) @ U.T
    P, null_rank = null_space_projection(C, alpha_cfg.nullspace_rel_threshold)
    return {"m": m, "n": n, "eff_rank": participation_ratio(K), "eff_rank_whitened": participation_ratio(inv_sqrt @ K),
            "null_rank": null_rank, "eff_rank_PK": participation_ratio(P @ K), "mean_cos": mean_cosine(K)}, P


def layer_rows(K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, alpha_cfg, memit_cfg) -> dict[str, Any]:
    """The measures of one layer: K (m, n) keys, R (d, n) this layer's residual share, C (m, m)."""
    m, n = K.shape
    geometry, P = key_geometry(K, C, alpha_cfg)
    PK = P @ K
    # AlphaEdit: ΔW = R Vᵀ with (P K Kᵀ P + α I) V = P K (first batch: no preserved keys yet)
    A = P @ (K @ K.T) @ P + alpha_cfg.L2 * torch.eye(m, dtype=torch.float64)
    V = torch.linalg.solve(0.5 * (A + A.T), PK)
    a_del, a_miss = delivered(R @ (V.T @ K), R)
    # MEMIT: ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹
    B = memit_cfg.mom2_update_weight * C + K @ K.T
    W = torch.linalg.solve(0.5 * (B + B.T), K)  # (m, n) = (λC + KKᵀ)⁻¹ K
    m_del, m_miss = delivered(R @ (K.T @ W).T, R)
    return geometry | {"delivered_alphaedit": a_del, "miss_alphaedit": a_miss, "delivered_memit": m_del,
                       "miss_memit": m_miss}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    model, tok = load_model(args.model)
    facts = _common.first_facts(args.data, max(args.sizes), args.offset)
    alpha = Editor(model, tok, "alphaedit", hparams={"layers": args.layers} if args.layers else None)
    memit = Editor(model, tok, "memit", hparams={"layers": alpha.layers})
    hp, hm = alpha.hparams, memit.hparams
    layers = list(alpha.layers)
    templates = context_templates(model, tok, hp.context_template_length_params)
    store = home() / "targets" / f"{args.model}.safetensors"
    cache = TargetCache.load(store) if store.exists() else TargetCache()
    t0 = time.perf_counter()
    base = (weights_fingerprint(model),) + settings_key(layers[-1], "out", templates, hp, hp.prefix_reuse)
    # without --optimise, only the facts whose z is stored: the study measures geometry, it does not optimise
    have = facts if args.optimise else [r for r in facts if cache.get(base + request_key(r)) is not None]
    print(f"{len(have)} of {len(facts)} facts have stored z", flush=True)
    if have:
        with reuse_targets(cache):
            tgt = optimise_targets(model, tok, have, layers[-1], "out", templates, hp)
        Z = tgt.init.to(torch.float64) + tgt.delta.to(torch.float64)
        print(f"their z: {time.perf_counter() - t0:.0f} s", flush=True)
        t1 = time.perf_counter()
        keys = keys_at_subject(model, tok, have, layers, templates)  # all layers in one forward
        H = residual_at(model, tok, have, layers[-1])
        print(f"keys of {len(have)} facts at layers {layers}: {time.perf_counter() - t1:.0f} s", flush=True)
    # sizes beyond the stored z: the key geometry alone, from the keys of every fact
    beyond = [n for n in args.sizes if n > len(have)]
    if beyond:
        t1 = time.perf_counter()
        all_keys = keys_at_subject(model, tok, facts[:max(beyond)], layers, templates)
        print(f"keys of {max(beyond)} facts (geometry only): {time.perf_counter() - t1:.0f} s", flush=True)
    moments = Moments.from_stats(model, tok, hp)
    rows = []
    for n in args.sizes:
        k = min(n, len(have))
        R = (Z[:k] - H[:k]).T / len(layers) if have else None  # (d, k): the first layer's share
        for layer in layers:
            if n > len(have):
                K = all_keys[layer][0][:n].to(torch.float64).T
                measures = key_geometry(K, moments.C(layer, K.shape[0]), hp)[0] | dict.fromkeys(
                    ("delivered_alphaedit", "miss_alphaedit", "delivered_memit", "miss_memit"))
            else:
                K = keys[layer][0][:k].to(torch.float64).T
                measures = layer_rows(K, R, moments.C(layer, K.shape[0]), hp, hm)
            row = {"model": args.model, "layer": layer, "band": layers, **measures,
                   "nullspace_rel_threshold": hp.nullspace_rel_threshold, "L2": hp.L2,
                   "mom2_update_weight": hm.mom2_update_weight, "machine": _common.device_name()}
            rows.append(row)
            print(" ".join(f"{key}={v:.3g}" if isinstance(v, float) else f"{key}={v}" for key, v in row.items()
                           if key not in ("band", "machine", "model")), flush=True)
    return rows


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    out = ["| n | layer | key width m | eff. rank of K | of C^-1/2 K | AlphaEdit null space | eff. rank of PK "
           "| mean cos | share delivered: AlphaEdit | MEMIT |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['n']:,} | {r['layer']} | {r['m']:,} | {r['eff_rank']:.1f} | {r['eff_rank_whitened']:.1f} "
                   f"| {r['null_rank']:,} | {r['eff_rank_PK']:.1f} | {r['mean_cos']:.2f} "
                   f"| {_share(r['delivered_alphaedit'])} | {_share(r['delivered_memit'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_fact_args(p)
    p.add_argument("--sizes", type=lambda s: [int(w) for w in s.split(",")], default=[100, 1000])
    p.add_argument("--layers", type=lambda s: [int(w) for w in s.split(",")], default=None)
    p.add_argument("--optimise", action="store_true", help="optimise the missing z instead of leaving facts out")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--table", action="store_true", help="print the saved rows as markdown and stop")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else _common.mass_results_dir(args.model, args.data) / "capacity.json"
    return _common.run_or_table(out, args.table, lambda: run(args), lambda rows: markdown_table(rows or []),
                                args.threads)

if __name__ == "__main__":
    raise SystemExit(main())
