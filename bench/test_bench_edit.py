"""The v* optimisation (golden_fast/edit/values.py; FORMULAS.md, section Targets v* and z) with
prefix reuse (tokens before the subject run once into a KV cache; each step runs only the suffix
tokens through the layers from the edited one up) against `prefix_reuse=False`, which recomputes
every token of every layer at every step as the anchors do. Same request, templates and
hyper-parameters, same run.

The real SmolLM2-135M with its R-ROME preset (layer 6, the 21 cached context templates, KL term on),
one built-in request, 5 Adam steps with the early stop off (nll_stop = 0) so both routes run every
step; a call includes the unedited pass that builds the cache. bench/bench_edit.py times whole
R-ROME edits (25 steps, several requests).

Correctness before timing: both routes give the same initial value and delta (relative difference
< 1e-3, as bench_edit) and the same loss curve.

    pytest bench/test_bench_edit.py --benchmark-enable
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import measure

from golden_fast.data import builtin_facts
from golden_fast.edit.config import preset
from golden_fast.edit.context import context_templates
from golden_fast.edit.values import optimise_targets

STEPS = 5
SITE = "mlp.down.out"  # ROME / R-ROME's v*


@pytest.fixture(scope="module")
def setting(smollm2):
    model, tok = smollm2
    hp = dataclasses.replace(preset("r-rome", "smollm2-135m"), v_num_grad_steps=STEPS, nll_stop=0.0)
    templates = context_templates(model, tok, hp.context_template_length_params)  # sampled once, cached
    return model, tok, hp, templates, [builtin_facts()[0]]


def run(setting, reuse: bool):
    model, tok, hp, templates, reqs = setting
    return optimise_targets(model, tok, reqs, hp.layers[0], SITE, templates, hp, prefix_reuse=reuse)


@pytest.fixture(scope="module")
def checked(setting):
    fast, full = run(setting, True), run(setting, False)
    rel_init = ((fast.init - full.init).norm(dim=1) / full.init.norm(dim=1)).max().item()
    rel_delta = ((fast.delta - full.delta).norm(dim=1) / full.delta.norm(dim=1)).max().item()
    curves_agree = all(
        len(a) == len(b) and torch.allclose(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-5)
        for a, b in zip(fast.loss_curves, full.loss_curves)
    )
    assert rel_init < 1e-3 and rel_delta < 1e-3 and curves_agree, (
        f"prefix reuse != full recompute (init {rel_init:.2e}, delta {rel_delta:.2e}, curves {curves_agree})"
    )
    return rel_delta


@pytest.mark.parametrize("route", ["full_recompute", "prefix_reuse"])
def test_vstar(benchmark, setting, checked, route):
    _, _, hp, templates, reqs = setting
    benchmark.group = (
        f"v* optimisation: SmolLM2-135M R-ROME preset, layer {hp.layers[0]}, {len(templates)} templates, "
        f"{len(reqs)} request, {STEPS} steps"
    )
    reuse = route == "prefix_reuse"
    label = "prefix reuse (KV cache, layers >= l only)" if reuse else "prefix_reuse=False (every token, every layer)"
    # the check fixture ran both routes once already: no warm-up round needed
    measure(
        benchmark,
        lambda: run(setting, reuse),
        role="candidate" if reuse else "baseline",
        rounds=2,  # ~12 s per call of the baseline on one loaded core
        warmup=0,
        candidate=label,
        max_rel_delta_diff=checked,
    )
