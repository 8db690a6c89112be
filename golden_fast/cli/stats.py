"""`golden-fast stats`: key second moments C_l = E[k kᵀ] of several layers in one pass, cached.

    golden-fast stats --model smollm2-135m --layers 0-29 --corpus model-sampled --n-samples 2000
    golden-fast stats --model M --layers 4,8,12 --corpus texts/ --dtype float64 --condition
"""

from __future__ import annotations

import argparse
import json
import time

from golden_fast.cli import CLIError, add_threads_argument


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """"0-29", "3,5,7", "1-3,7", "all" -> sorted layer indices (each checked against n_layers)."""
    spec = spec.strip()
    if spec == "all":
        return list(range(n_layers))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise CLIError(f"bad layer list {spec!r}: expected e.g. 0-29, 3,5,7 or all", code=2) from None
    bad = sorted(x for x in out if not 0 <= x < n_layers)
    if bad:
        raise CLIError(f"layers {bad} out of range: the model has {n_layers} layers (0-{n_layers - 1})",
                       code=2)
    return sorted(out)


def register(sub: argparse._SubParsersAction) -> None:
    from golden_fast.stats import StatsConfig

    d = StatsConfig()
    p = sub.add_parser("stats", help="key second moments C_l of several layers in one pass (cached)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zoo name, tiny-* name, local folder or Hugging Face id")
    p.add_argument("--layers", default="all", help="e.g. 0-29, 3,5,7 or all (default: all)")
    p.add_argument("--corpus", default=d.corpus,
                   help="a .txt/.jsonl file or directory, model-sampled (alias builtin-sampled: the "
                        f"offline fallback), wikitext-103 or wikipedia (default: {d.corpus})")
    p.add_argument("--n-samples", type=int, default=d.n_samples, help=f"texts read (default {d.n_samples})")
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"], help="accumulation dtype")
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per text, capped by context")
    p.add_argument("--batch-tokens", type=int, default=d.batch_tokens, help="token budget of a batch")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="save partial sums every N texts (0: never)")
    p.add_argument("--seed", type=int, default=d.seed, help="corpus shuffling / sampling seed")
    p.add_argument("--model-dtype", default="float32", help="dtype to load the model in")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-cache", action="store_true", help="compute without reading or writing the cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--condition", action="store_true", help="print each C's eigenvalue range and condition")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_threads_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from golden_fast.models import get_adapter, load_model
    from golden_fast.stats import StatsConfig, second_moments

    config = StatsConfig(
        corpus=args.corpus, n_samples=args.n_samples, dtype=args.dtype, max_length=args.max_length,
        batch_tokens=args.batch_tokens, checkpoint_every=args.checkpoint_every, seed=args.seed,
        cache=not args.no_cache,
    )
    model, tok = load_model(args.model, dtype=args.model_dtype, device=args.device)
    layers = parse_layers(args.layers, get_adapter(model).n_layers)
    t0 = time.perf_counter()
    stats = second_moments(model, tok, layers, config, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    first = stats[layers[0]]
    computed = [layer for layer, s in stats.items() if not s.from_cache]
    info = {
        "model": args.model,
        "layers": layers,
        "computed": computed,
        "from_cache": [layer for layer in layers if layer not in computed],
        "tokens": first.count,
        "texts": first.n_texts,
        "dtype": config.dtype,
        "m": first.m,
        "seconds": round(seconds, 3),
        "cache": str(first.path.parent) if first.path is not None else None,
    }
    if args.condition:
        info["conditioning"] = {}
        for layer, s in stats.items():
            c = s.conditioning()
            info["conditioning"][layer] = {"min_eig": c.min_eig, "max_eig": c.max_eig, "cond": c.cond,
                                           "rank": c.rank}
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"cache:   {info['cache'] or '(not cached: --no-cache)'}")
    print(f"layers:  {len(layers)} ({args.layers}); computed {len(computed)}, "
          f"from cache {len(info['from_cache'])}")
    print(f"tokens:  {first.count} from {first.n_texts} texts, m = {first.m}, {config.dtype}")
    print(f"time:    {seconds:.2f} s")
    if args.condition:
        for layer, c in info["conditioning"].items():
            print(f"  layer {layer:3d}: min_eig {c['min_eig']:.3e}  max_eig {c['max_eig']:.3e}  "
                  f"cond {c['cond']:.3e}  rank {c['rank']}/{first.m}")
    return 0
