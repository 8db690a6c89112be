"""Why a single R-ROME edit can miss the bare prompt: the share of the edit a prompt's key gets.

R-ROME makes W' k* = v* at the template-averaged key k*. A prompt whose key k differs from k*
gets the fraction s = (C⁻¹k*)ᵀk / (C⁻¹k*)ᵀk* of the change in value (1 at k*). This prints s
for the bare prompt (the rewrite prompt) per request, and the range over all context templates,
with the real C and with C = I, at the given layers.

    python bench/key_spread.py --n 24 --layers 4,6,10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from golden_fast.data import load
from golden_fast.data.location import data_dir
from golden_fast.edit.config import preset
from golden_fast.edit.context import context_templates
from golden_fast.edit.keys import keys_at_subject
from golden_fast.edit.moments import Moments
from golden_fast.models import load_model

DATA = (data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"  # $GOLDEN_FAST_DATA


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--layers", default="6")
    args = ap.parse_args()
    model, tok = load_model(args.model)
    reqs = load(args.data, limit=args.n)[: args.n]
    hp = preset("r-rome", args.model)
    templates = context_templates(model, tok, hp.context_template_length_params)
    out = {}
    for layer in (int(x) for x in args.layers.split(",")):
        mom = Moments.from_stats(model, tok, dataclasses.replace(hp, layers=(layer,)))
        K = keys_at_subject(model, tok, reqs, [layer], templates, per_template=True)[layer][0]  # (n, T, m)
        k_star = K.mean(1)
        for name, U in (("C", mom.solve(layer, k_star.T)), ("I", k_star.T)):
            den = (U.T * k_star).sum(1)
            s_all = torch.einsum("mn,ntm->nt", U, K) / den[:, None]
            s_bare = s_all[:, templates.index("{}")]
            out[f"layer{layer}-{name}"] = {"s_bare": [round(x, 3) for x in s_bare.tolist()],
                                           "s_min": float(s_all.min()), "s_max": float(s_all.max())}
            print(f"layer {layer} C={name}: s at the bare prompt " + " ".join(f"{x:.2f}" for x in s_bare.tolist()))
            print(f"    over all {len(templates)} templates: min {float(s_all.min()):.2f} max {float(s_all.max()):.2f}")
    print(json.dumps({"model": args.model, "n": len(reqs), "result": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
