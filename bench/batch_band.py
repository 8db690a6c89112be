"""The golden band of a batch editor: one batch of a study's first n test facts at every candidate
layer, judged per fact, and the band by paired bootstrap (`golden_band`), beside R-ROME's band from
the study's brute force on its test facts.

A batch editor's best layer need not be R-ROME's: one batch spreads n facts over one layer's keys,
where R-ROME writes one. This measures it with the study's facts, settings and statistics
(config.json, split.json, pre.json and its second-moment cache), so the two bands compare directly.

    OMP_NUM_THREADS=1 .venv/bin/python bench/batch_band.py --model smollm2-135m --n 100 --threads 1
    .venv/bin/python bench/batch_band.py --model smollm2-135m --table     # from the saved band.json

Resumable: each layer's batch is one file, <out>/<method>-L<layer>.json (`run_editors`), written
when the layer is done; the z go to $GOLDEN_FAST_HOME/targets/<model>-band.safetensors every five
minutes, so an interrupted layer keeps what it optimised. Output:
bench/results/locate/<model>/<method>-band/ (band.json and the per-layer files).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import STUDIES, study_facts  # noqa: E402

from golden_fast.fileio import read_json, write_json  # noqa: E402

OUT = ROOT / "bench/results/locate"
METRICS = ("rewrite_acc", "rephrase_acc", "locality", "overall")


def study_context(study: Path, model: Any = None, tok: Any = None) -> Any:
    """The study's experiment `Context` (its config, facts, candidate layers and folder)."""
    from golden_fast.experiment.runner import Context
    from golden_fast.models import get_adapter, load_model

    cfg, facts = study_facts(study)
    if model is None:
        model, tok = load_model(cfg.model)
    return Context(cfg, model, tok, facts, cfg.candidate_layers(get_adapter(model).n_layers), study)


def rrome_band(study: Path) -> dict[str, Any] | None:
    """R-ROME's golden band over the study's test facts brute force edited at every layer (None when
    that grid holds no complete fact yet)."""
    from golden_fast.locate.resample import Pool

    pairs = study / "locate" / "test-pairs"
    if not (pairs / "pairs.jsonl").is_file():
        return None
    return Pool.from_pairs(pairs).band().to_dict()


def band_of(results: dict, method: str, layers: Sequence[int], n_boot: int = 2000) -> dict[str, Any]:
    """From `run_editors`' results: each layer's mean of every metric, and the golden band of
    `overall` (facts resampled, paired across layers)."""
    from golden_fast.experiment.editors import EXTRA_METRICS, editor_matrix
    from golden_fast.locate.band import golden_band, metric_matrix

    M, metrics = editor_matrix(results, method, layers)
    keep = [k for k, m in enumerate(metrics) if m not in EXTRA_METRICS]  # reported beside overall, not in it
    M, metrics = M[:, :, keep], [metrics[k] for k in keep]
    means = {}
    for m in METRICS:
        values, _ = metric_matrix(M, metrics, m)
        means[m] = values.mean(0).tolist()
    band = golden_band(M, layers, metrics, "overall", n_boot=n_boot)
    seconds = [results[(method, int(layer))].seconds for layer in layers]
    return {"means": means, "band": band.to_dict(), "seconds": seconds}


def run(study: Path, method: str, n: int, out: Path, layers: Sequence[int] | None = None, model: Any = None,
        tok: Any = None, n_boot: int = 2000, progress: bool = True) -> dict[str, Any]:
    from golden_fast.edit.target_cache import TargetCache, reuse_targets
    from golden_fast.experiment.editors import run_editors
    from golden_fast.models import home

    ctx = study_context(study, model, tok)
    cfg = ctx.config
    if n > len(ctx.facts.test):
        raise SystemExit(f"--n {n}: the study has {len(ctx.facts.test)} test facts")
    facts = ctx.facts.test[:n]
    layers = list(ctx.layers if layers is None else layers)
    store = home() / "targets" / f"{Path(str(cfg.model)).name}-band.safetensors"
    t0 = time.perf_counter()
    with reuse_targets(TargetCache.load(store).autosave(store)) as cache:
        results = run_editors(ctx.model, ctx.tok, facts, layers, [method], out, ctx.pre(),
                              hparams=cfg.hparam_overrides(), moments=ctx.moments(layers), suites=cfg.suites,
                              meta=ctx.editors_meta([method]) | {"study": study.name}, progress=progress,
                              extra_keys=[])
        cache.save(store)
    found = band_of(results, method, layers, n_boot)
    summary = {
        "study": study.name,
        "method": method,
        "n": n,
        "layers": layers,
        **found,
        "r-rome band": rrome_band(study),
        "wall_seconds_this_run": time.perf_counter() - t0,
    }
    write_json(out / "band.json", summary)
    return summary


def table(summary: dict[str, Any]) -> str:
    """Markdown: each layer's means, in or out of this editor's band and of R-ROME's."""
    band = set(summary["band"]["band"])
    rr = summary.get("r-rome band")
    rr_band = set(rr["band"]) if rr else set()
    m = summary["means"]
    lines = [f"{summary['method']}, one batch of {summary['n']} test facts, at each layer "
             f"(golden {summary['band']['golden']}; band {sorted(band)}"
             + (f"; R-ROME's golden {rr['golden']}, band {sorted(rr_band)}" if rr else "") + ")",
             "",
             "| layer | rewrite | rephrase | locality | overall | in its band | in R-ROME's band | edit s |",
             "|---|---|---|---|---|---|---|---|"]
    for j, layer in enumerate(summary["layers"]):
        lines.append(f"| {layer} | {m['rewrite_acc'][j]:.3f} | {m['rephrase_acc'][j]:.3f} | {m['locality'][j]:.3f} | "
                     f"{m['overall'][j]:.3f} | {'yes' if layer in band else ''} | "
                     f"{'yes' if layer in rr_band else ''} | {summary['seconds'][j]:.0f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(STUDIES), required=True)
    ap.add_argument("--method", default="emmet", help="a batch editor (default emmet)")
    ap.add_argument("--n", type=int, default=100, help="the study's first n test facts, one batch (default 100)")
    ap.add_argument("--layers", default=None, help="comma-separated (default: the study's candidate layers)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="print the Markdown from the saved band.json")
    args = ap.parse_args(argv)
    out = OUT / args.model / f"{args.method}-band"
    if args.table:
        saved = read_json(out / "band.json")
        if saved is None:
            raise SystemExit(f"{out}/band.json: not there yet")
        print(table(saved))
        return
    import torch

    torch.set_num_threads(args.threads)
    layers = None if args.layers is None else [int(x) for x in args.layers.split(",")]
    summary = run(STUDIES[args.model], args.method, args.n, out, layers)
    print(table(summary))
    print(f"golden {summary['band']['golden']}, band {summary['band']['band']}; "
          f"this run {summary['wall_seconds_this_run']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
