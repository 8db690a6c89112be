"""The main job on the embedded default: `make demo` / `golden-fast demo`.

Loads the default model (smollm2-135m), prints its structure (layers and the MLP
down-projection every editor rewrites), and evaluates the built-in facts before any edit:
how often the model already predicts each fact's old answer, and the new one.
"""

from __future__ import annotations

import dataclasses
import time

from golden_fast.data import builtin_facts
from golden_fast.models import DEFAULT_MODEL, get_adapter, load_model


def _old_answer_requests(requests):
    """The same facts with the old answer as the target: scores "does the model know it"."""
    return [
        dataclasses.replace(r, target_new=r.ground_truth, ground_truth=None, locality=(), portability=())
        for r in requests
        if r.ground_truth
    ]


def structure_table(model) -> str:
    a = get_adapter(model)
    info = a.describe()
    lines = [
        f"model        {info['class']} ({info['family']} adapter), {info['n_params'] / 1e6:.1f}M parameters",
        f"layers       {info['n_layers']}  (d = {info['d_model']}, m = d_ff = {info['d_ff']})",
        f"down-proj    {info['down_proj']}  weight (out x in) = {info['down_weight_shape_out_x_in']}"
        f"  storage: {info['down_storage']}, {info['dtype']}",
    ]
    shapes = {tuple(a.down_weight(l).shape) for l in range(a.n_layers)}
    lines.append(f"             layers 0..{a.n_layers - 1} all {' / '.join(str(s) for s in sorted(shapes))}")
    return "\n".join(lines)


def run_demo(model_name: str | None = None, limit: int | None = None) -> int:
    from golden_fast.evaluate import evaluate

    t0 = time.perf_counter()
    name = model_name or DEFAULT_MODEL
    model, tok = load_model(name)
    print(f"== golden-fast demo: {name} (loaded in {time.perf_counter() - t0:.1f} s)")
    print(structure_table(model))
    facts = builtin_facts()[:limit] if limit else builtin_facts()
    print(f"\n== pre-edit evaluation of the {len(facts)} built-in facts")
    t1 = time.perf_counter()
    new = evaluate(model, tok, facts, suites=("knowedit", "counterfact"), model_name=name)
    old = evaluate(model, tok, _old_answer_requests(facts), suites=("knowedit",), model_name=name)
    s_new, s_old = new.summary(), old.summary()
    print(f"{'what':44s} {'mean':>7s}  95% interval")
    for label, s in [
        ("old answer: token accuracy (already known)", s_old["rewrite_acc"]),
        ("new answer: token accuracy (before editing)", s_new["rewrite_acc"]),
        ("new beats old in mean NLL (efficacy)", s_new.get("efficacy")),
        ("rephrase: new-answer token accuracy", s_new.get("rephrase_acc")),
    ]:
        if s is not None:
            print(f"{label:44s} {s.mean:7.3f}  [{s.lo:.3f}, {s.hi:.3f}]  n={s.n}")
    print(f"(scored in {time.perf_counter() - t1:.1f} s; full report conventions below)\n")
    print(new.table())
    print(f"\n== done in {time.perf_counter() - t0:.1f} s")
    return 0
