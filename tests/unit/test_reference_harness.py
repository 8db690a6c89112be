"""The EasyEdit comparison harness (bench/reference/) against a stand-in, without EasyEdit.

The stand-in is a small fake checkout written into tmp_path: the module files, function names,
signatures, module-level caches and printed loss lines the harness drives in EasyEdit
(models/rome: rome_main.execute_rome, compute_u.inv_mom2_cache, repr_tools.get_reprs_at_word_tokens;
models/memit: memit_main.execute_memit / compute_z / compute_ks / COV_CACHE; models/rome/layer_stats;
evaluate/evaluate.compute_edit_quality; the hparams dataclasses and LLaMA YAMLs). Its computations
are written here for the test (plain hooks, one unpadded forward per text, golden-fast's token
positions), implementing the formulas under the harness's shared convention. It is not EasyEdit code.
Its package __init__ files raise: the harness must never run them.

The real comparison (bench/reference/run_reference.py against a clone of zjunlp/EasyEdit) runs
only where EASYEDIT_DIR names a checkout; see test_real_easyedit_comparison.
"""

from __future__ import annotations

import json
import os
import random
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "bench" / "reference"
for p in (REF, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import ref_compare  # noqa: E402
import ref_easyedit  # noqa: E402
import ref_hparams  # noqa: E402
import ref_import  # noqa: E402

# ---------------------------------------------------------------------------------------------
# the stand-in checkout
# ---------------------------------------------------------------------------------------------
_RAISE = 'raise ImportError("stand-in: a package-wide __init__ ran; the harness must not import it")\n'

_CORE = '''
"""Stand-in helpers (test double, not EasyEdit): hooked unpadded forwards and the v*/z loop."""
import torch
from golden_fast.tokens import fill, subject_last_token, target_span


def hooked(model, module_name, ids, idx, delta=None, grad=False):
    got = {}
    mod = model.get_submodule(module_name)

    def hook(m, inp, out):
        y = out[0] if isinstance(out, tuple) else out
        got["in"] = inp[0][0, idx] if inp and torch.is_tensor(inp[0]) else None
        if delta is not None:
            y = y.clone()
            y[0, idx] = y[0, idx] + delta
            got["out"] = y[0, idx]
            return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y
        got["out"] = y[0, idx]

    h = mod.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            logits = model(input_ids=torch.tensor([ids])).logits[0]
    finally:
        h.remove()
    return logits, got


def optimise(model, tok, request, templates, hparams, module_name):
    rows = []
    for t in templates:
        tmpl = t.format(request["prompt"])
        text, _ = fill(tmpl, request["subject"])
        span = target_span(tok, text, request["target_new"])
        _, s = subject_last_token(tok, tmpl, request["subject"])
        rows.append((span.ids[: span.end - 1], s, list(range(span.start - 1, span.end - 1)),
                     span.ids[span.start: span.end]))
    delta = torch.zeros(model.config.hidden_size, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hparams.v_lr)
    init = None
    for it in range(hparams.v_num_grad_steps):
        opt.zero_grad()
        nlls = []
        for ids, s, cols, tgt in rows:
            logits, got = hooked(model, module_name, ids, s, delta=delta, grad=True)
            if init is None:
                init = (got["out"] - delta).detach()
            lp = torch.log_softmax(logits[cols].float(), -1)
            nlls.append(-lp[torch.arange(len(tgt)), torch.tensor(tgt)].mean())
        loss = torch.stack(nlls).mean()
        print(f"loss {round(loss.item(), 3)} = {round(loss.item(), 3)} + 0.0 + 0.0 avg prob of "
              f"[{request['target_new']}] {torch.exp(-loss).item()}")
        if loss < 5e-2 or it == hparams.v_num_grad_steps - 1:
            break
        loss.backward()
        opt.step()
        max_norm = hparams.clamp_norm_factor * init.norm()
        if delta.norm() > max_norm:
            with torch.no_grad():
                delta[...] = delta * max_norm / delta.norm()
    return init, delta.detach()
'''

_REPR_TOOLS = '''
import torch
from golden_fast.tokens import subject_last_token
from . import _core


def get_reprs_at_word_tokens(model, tok, context_templates, words, layer, module_template, subtoken, track="in"):
    ins, outs = [], []
    for t, w in zip(context_templates, words):
        ids, idx = subject_last_token(tok, t, w)
        _, got = _core.hooked(model, module_template.format(layer), ids, idx)
        ins.append(got["in"].detach())
        outs.append(got["out"].detach())
    ins, outs = torch.stack(ins), torch.stack(outs)
    return {"in": ins, "out": outs, "both": (ins, outs)}[track]
'''

_COMPUTE_U = '''
from . import repr_tools

inv_mom2_cache = {}


def compute_u(model, tok, request, hparams, layer, context_templates):
    k = repr_tools.get_reprs_at_word_tokens(
        model=model, tok=tok, context_templates=[t.format(request["prompt"]) for t in context_templates],
        words=[request["subject"]] * len(context_templates), layer=layer,
        module_template=hparams.rewrite_module_tmp, subtoken="last", track="in").mean(0)
    key = (model.config._name_or_path.replace("/", "_"), hparams.rewrite_module_tmp.format(layer))
    u = inv_mom2_cache[key] @ k
    return u / u.norm()
'''

_COMPUTE_V = '''
import torch
from . import _core, repr_tools


def compute_v(model, tok, request, hparams, layer, left_vector, context_templates):
    init, delta = _core.optimise(model, tok, request, context_templates, hparams, hparams.mlp_module_tmp.format(layer))
    cur_in, cur_out = repr_tools.get_reprs_at_word_tokens(
        model=model, tok=tok, context_templates=[request["prompt"]], words=[request["subject"]], layer=layer,
        module_template=hparams.rewrite_module_tmp, subtoken="last", track="both")
    return (init + delta - cur_out[0]) / torch.dot(cur_in[0], left_vector)
'''

_ROME_MAIN = '''
from .compute_u import compute_u
from .compute_v import compute_v
from .rome_hparams import ROMEHyperParams

CONTEXT_TEMPLATES_CACHE = None


def execute_rome(model, tok, request, hparams):
    request = dict(request)
    request["target_new"] = " " + request["target_new"]
    request["prompt"] = request["prompt"].replace(request["subject"], "{}")
    if CONTEXT_TEMPLATES_CACHE is None:
        raise RuntimeError("stand-in: no templates handed over (it never samples its own)")
    layer = hparams.layers[0]
    u = compute_u(model, tok, request, hparams, layer, CONTEXT_TEMPLATES_CACHE)
    v = compute_v(model, tok, request, hparams, layer, u, CONTEXT_TEMPLATES_CACHE)
    return {f"{hparams.rewrite_module_tmp.format(layer)}.weight": (u.detach(), v.detach())}
'''

_REQUIRED = """
    layers: list
    fact_token: str
    v_num_grad_steps: int
    v_lr: float
    v_loss_layer: int
    v_weight_decay: float
    clamp_norm_factor: float
    kl_factor: float
    mom2_adjustment: bool
    rewrite_module_tmp: str
    layer_module_tmp: str
    mlp_module_tmp: str
    attn_module_tmp: str
    ln_f_module: str
    lm_head_module: str
    mom2_dataset: str
    mom2_n_samples: int
    mom2_dtype: str
    alg_name: str
    device: object
    model_name: str
    stats_dir: str
"""
_DEFAULTS = """
    max_length: int = 40
    model_parallel: bool = False
    fp16: bool = False
"""
_ROME_HPARAMS = (
    "import dataclasses\n\n\n@dataclasses.dataclass\nclass ROMEHyperParams:"
    + _REQUIRED + "    context_template_length_params: list\n" + _DEFAULTS
)
_MEMIT_HPARAMS = (
    "import dataclasses\n\n\n@dataclasses.dataclass\nclass MEMITHyperParams:"
    + _REQUIRED + "    layer_selection: str\n    mom2_update_weight: float\n" + _DEFAULTS + "    batch_size: int = 1\n"
)

_MEMIT_MAIN = '''
import torch
from ..rome import _core, repr_tools
from .memit_hparams import MEMITHyperParams

CONTEXT_TEMPLATES_CACHE = None
COV_CACHE = {}


def compute_z(model, tok, request, hparams, layer, context_templates):
    flat = [t for group in context_templates for t in group]
    init, delta = _core.optimise(model, tok, request, flat, hparams, hparams.layer_module_tmp.format(layer))
    return init + delta


def compute_ks(model, tok, requests, hparams, layer, context_templates):
    out = []
    for r in requests:
        groups = [repr_tools.get_reprs_at_word_tokens(
            model=model, tok=tok, context_templates=[t.format(r["prompt"]) for t in g], words=[r["subject"]] * len(g),
            layer=layer, module_template=hparams.rewrite_module_tmp, subtoken="last", track="in").mean(0)
            for g in context_templates]
        out.append(torch.stack(groups).mean(0))
    return torch.stack(out)


def _z_now(model, tok, r, hparams, layer):
    from golden_fast.tokens import subject_last_token
    ids, idx = subject_last_token(tok, r["prompt"], r["subject"])
    return _core.hooked(model, hparams.layer_module_tmp.format(layer), ids, idx)[1]["out"].detach()


def execute_memit(model, tok, requests, hparams, cache_template=None):
    requests = [dict(r, target_new=" " + r["target_new"], prompt=r["prompt"].replace(r["subject"], "{}"))
                for r in requests]
    z_layer = hparams.layers[-1]
    zs = torch.stack([compute_z(model, tok, r, hparams, z_layer, CONTEXT_TEMPLATES_CACHE) for r in requests], 1)
    names = {l: f"{hparams.rewrite_module_tmp.format(l)}.weight" for l in hparams.layers}
    saved = {l: model.get_parameter(n).detach().clone() for l, n in names.items()}
    model_name = model.config._name_or_path.replace("/", "_")
    deltas = {}
    for i, l in enumerate(hparams.layers):
        ks = compute_ks(model, tok, requests, hparams, l, CONTEXT_TEMPLATES_CACHE).T.double()
        cur = torch.stack([_z_now(model, tok, r, hparams, z_layer) for r in requests], 1)
        resid = ((zs - cur) / (len(hparams.layers) - i)).double()
        cov = COV_CACHE[(model_name, hparams.rewrite_module_tmp.format(l))].double()
        adj = torch.linalg.solve(hparams.mom2_update_weight * cov + ks @ ks.T, ks)
        with torch.no_grad():
            model.get_parameter(names[l])[...] += (resid @ adj.T).float()
        deltas[names[l]] = (adj, resid)
    with torch.no_grad():
        for l, n in names.items():
            model.get_parameter(n).copy_(saved[l])
    return deltas
'''

_LAYER_STATS = '''
import torch
from datasets import load_dataset  # the harness serves local texts through this name


class _Mom2:
    def __init__(self):
        self.mom2, self.count = None, 0

    def moment(self):
        return self.mom2 / self.count


class _Stat:
    def __init__(self):
        self.mom2 = _Mom2()


def layer_stats(model, tokenizer, layer_name, stats_dir, ds_name, to_collect, model_name=None, sample_size=None,
                precision=None, batch_tokens=None, download=True, progress=None, force_recompute=False, hparams=None):
    ds = load_dataset("wikimedia/wikipedia", "20231101.en")["train"]
    dtype = getattr(torch, precision or "float64")
    stat = _Stat()
    mod = model.get_submodule(layer_name)
    n = min(sample_size or len(ds), len(ds))
    if progress is None:  # as EasyEdit: a plain substitute, then called with total=
        progress = lambda x: x  # noqa: E731
    for i in progress(range(n), total=n):
        ids = tokenizer(ds[i]["text"], truncation=True, max_length=model.config.max_position_embeddings)["input_ids"]
        got = {}
        h = mod.register_forward_hook(lambda m, inp, out: got.update(k=inp[0][0].detach()))
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        h.remove()
        k = got["k"].to(dtype)
        stat.mom2.mom2 = k.T @ k if stat.mom2.mom2 is None else stat.mom2.mom2 + k.T @ k
        stat.mom2.count += k.shape[0]
    return stat
'''

_EVALUATE = '''
from ..models.melo.melo import LORA  # stubbed by the harness
from .evaluate_utils import test_prediction_acc


def compute_edit_quality(model, model_name, hparams, tok, record, device, eval_metric="token_em",
                         test_generation=False):
    ret = {"rewrite_acc": test_prediction_acc(model, tok, record["prompt"], record["target_new"])}
    if "rephrase_prompt" in record:
        ret["rephrase_acc"] = test_prediction_acc(model, tok, record["rephrase_prompt"], record["target_new"])
    ret["locality"] = {}
    for key, v in record.get("locality", {}).items():
        pred = test_prediction_acc(model, tok, v["prompt"], v["ground_truth"], locality=True)
        ret["locality"][f"{key}_output"] = [pred]
    ret["portability"] = {}
    return ret
'''

_EVALUATE_UTILS = '''
import openai  # stubbed by the harness: never called
import torch
from ..trainer import *  # stubbed by the harness
from golden_fast.tokens import target_span


def test_prediction_acc(model, tok, prompt, target, locality=False):
    span = target_span(tok, prompt, target)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([span.ids])).logits[0]
    pred = logits[span.start - 1: span.end - 1].argmax(-1).tolist()
    if locality:
        return pred
    gold = span.ids[span.start: span.end]
    return [sum(a == b for a, b in zip(pred, gold)) / len(gold)]
'''

_YAML_COMMON = """\
stats_dir: "./data/stats"
device: 0
layers: [5]
fact_token: "subject_last"
v_num_grad_steps: 25
v_lr: 5e-1
v_loss_layer: 31
v_weight_decay: 1e-3
kl_factor: 0.0625
rewrite_module_tmp: "model.layers.{}.mlp.down_proj"
layer_module_tmp: "model.layers.{}"
mlp_module_tmp: "model.layers.{}.mlp"
attn_module_tmp: "model.layers.{}.self_attn"
ln_f_module: "model.norm"
lm_head_module: "lm_head"
mom2_dataset: "wikipedia"
mom2_n_samples: 100000
mom2_dtype: "float32"
model_parallel: false
"""


def write_standin(root: Path) -> Path:
    files = {
        "easyeditor/__init__.py": _RAISE,
        "easyeditor/models/__init__.py": _RAISE,
        "easyeditor/evaluate/__init__.py": _RAISE,
        "easyeditor/models/melo/__init__.py": _RAISE,
        "easyeditor/util/__init__.py": "",
        "easyeditor/models/rome/__init__.py": "",
        "easyeditor/models/rome/_core.py": _CORE,
        "easyeditor/models/rome/repr_tools.py": _REPR_TOOLS,
        "easyeditor/models/rome/compute_u.py": _COMPUTE_U,
        "easyeditor/models/rome/compute_v.py": _COMPUTE_V,
        "easyeditor/models/rome/rome_main.py": _ROME_MAIN,
        "easyeditor/models/rome/rome_hparams.py": _ROME_HPARAMS,
        "easyeditor/models/rome/layer_stats.py": _LAYER_STATS,
        "easyeditor/models/memit/__init__.py": "",
        "easyeditor/models/memit/memit_main.py": _MEMIT_MAIN,
        "easyeditor/models/memit/memit_hparams.py": _MEMIT_HPARAMS,
        "easyeditor/evaluate/evaluate.py": _EVALUATE,
        "easyeditor/evaluate/evaluate_utils.py": _EVALUATE_UTILS,
        "hparams/ROME/llama-7b.yaml": 'alg_name: "ROME"\nmodel_name: "./hugging_cache/llama-2-7b-chat"\n'
        + _YAML_COMMON + "clamp_norm_factor: 4\nmom2_adjustment: true\n"
        "context_template_length_params: [[5, 10], [10, 10]]\n",
        "hparams/MEMIT/llama-7b.yaml": 'alg_name: "MEMIT"\nmodel_name: "./hugging_cache/llama-2-7b"\n'
        + _YAML_COMMON.replace("layers: [5]", "layers: [4, 5, 6, 7, 8]")
        + 'clamp_norm_factor: 4\nlayer_selection: "all"\nmom2_adjustment: true\nmom2_update_weight: 15000\n',
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


STANDIN_MODULES = ref_import.modules_for(["rome", "memit", "stats", "eval"])


@pytest.fixture()
def standin(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))  # templates and C caches
    return write_standin(tmp_path / "EasyEdit")


RECORDS = [
    {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_new": "English", "ground_truth": "French",
     "rephrase_prompt": "Danielle Darrieux is a native speaker of",
     "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"},
    {"case_id": 1, "prompt": "The Eiffel Tower is located in", "subject": "Eiffel Tower",
     "target_new": "Rome", "ground_truth": "Paris",
     "rephrase_prompt": "Where is the Eiffel Tower? It is located in",
     "locality_prompt": "The Colosseum is located in", "locality_ground_truth": "Rome"},
]


# ---------------------------------------------------------------------------------------------
# the importer
# ---------------------------------------------------------------------------------------------
def test_importer_is_contained(standin, monkeypatch):
    sentinel = type(sys)("nltk")  # a module a stub shadows during the load must come back
    monkeypatch.setitem(sys.modules, "nltk", sentinel)
    ref_import.preload()  # real third-party modules (transformers' T5, ...), imported normally and kept
    before = dict(sys.modules)
    ee = ref_import.load_easyedit(standin, STANDIN_MODULES)
    assert set(sys.modules) == set(before)
    assert all(sys.modules[k] is v for k, v in before.items())
    assert sys.modules["nltk"] is sentinel
    assert not [n for n in sys.modules if n.startswith("easyeditor")]
    # the loaded functions still work (their globals live on) and the stubs they hold are inert
    assert callable(ee.rome_main.execute_rome)
    with pytest.raises(RuntimeError, match="stubbed"):
        ee.layer_stats.load_dataset("wikipedia")
    assert ee.commit == "unknown"  # not a git work tree
    # a second load in the same process is fine (nothing leaked from the first)
    ref_import.load_easyedit(standin, STANDIN_MODULES)


def test_missing_checkout_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv(ref_import.ENV, raising=False)
    with pytest.raises(ref_import.EasyEditUnavailable, match="EASYEDIT_DIR"):
        ref_import.checkout_dir(None)
    with pytest.raises(ref_import.EasyEditUnavailable, match="not an EasyEdit checkout"):
        ref_import.checkout_dir(tmp_path)


def test_runner_skips_without_checkout(monkeypatch, capsys):
    import run_reference

    monkeypatch.delenv(ref_import.ENV, raising=False)
    assert run_reference.main(["--methods", "rome"]) == 0
    assert "skipped: no EasyEdit checkout given" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# translation and parsing
# ---------------------------------------------------------------------------------------------
def _tiny():
    from golden_fast.models import load_model

    return load_model("tiny-llama")


def test_translation_field_by_field(standin, tmp_path):
    model, _ = _tiny()
    base = ref_hparams.base_easyedit_hparams(standin, "rome")
    assert base["v_lr"] == 0.5  # "5e-1" read as EasyEdit reads it
    ee = ref_hparams.adapt_to_model(base, "rome", model, [1], str(tmp_path), "corpus.txt", 8)
    assert ee["v_loss_layer"] == 3 and ee["layers"] == [1] and ee["device"] == "cpu"
    ee, notes = ref_hparams.apply_convention(ee, "shared")
    assert ee["v_weight_decay"] == 0 and ee["kl_factor"] == 0 and notes
    gf, _ = ref_hparams.to_golden_fast("rome", ee, 4)
    assert gf["v_loss_layer"] is None and gf["nll_stop"] == 0.05 and gf["mom2_dataset"] == "corpus.txt"
    assert gf["context_template_length_params"] == [[5, 10], [10, 10]]
    for key in ("v_num_grad_steps", "v_lr", "clamp_norm_factor", "mom2_n_samples", "mom2_dtype"):
        assert gf[key] == ee[key]
    from golden_fast.edit.config import make_config

    make_config("rome", gf)  # a valid golden-fast config
    with pytest.raises(ref_hparams.TranslationError, match="no translation"):
        ref_hparams.to_golden_fast("rome", {**ee, "brand_new_field": 1}, 4)
    with pytest.raises(ref_hparams.TranslationError, match="last layer"):
        ref_hparams.to_golden_fast("rome", {**ee, "v_loss_layer": 2}, 4)
    with pytest.raises(ref_hparams.TranslationError, match="key flags"):
        ref_hparams.to_golden_fast("r-rome", {**ee, "original_implementation": True}, 4)
    a = {**ee, "nullspace_threshold": 2e-2, "L2": 1.0, "layer_selection": "all", "mom2_update_weight": 15000.0}
    a.pop("context_template_length_params")
    gf_a, notes_a = ref_hparams.to_golden_fast("alphaedit", a, 4, c_max_eig=4.0)
    assert gf_a["nullspace_rel_threshold"] == pytest.approx(5e-3) and gf_a["L2"] == 1.0
    assert gf_a["context_template_length_params"] == [[10, 5]]


def test_tied_head_is_found():
    from golden_fast.models import load_model

    model, _ = load_model("tiny-gpt2")
    base = {"layers": [1], "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj", "layer_module_tmp": "transformer.h.{}",
            "mlp_module_tmp": "transformer.h.{}.mlp", "attn_module_tmp": "transformer.h.{}.attn",
            "ln_f_module": "transformer.ln_f", "lm_head_module": "lm_head"}
    if not model.config.tie_word_embeddings:
        pytest.skip("tiny-gpt2 is not tied")
    ee = ref_hparams.adapt_to_model(base, "memit", model, [1], "/tmp", "c", 1)
    assert ee["lm_head_module"] == "transformer.wte"
    with pytest.raises(ref_hparams.TranslationError, match="no module"):
        ref_hparams.adapt_to_model({**base, "mlp_module_tmp": "nope.{}"}, "memit", model, [1], "/tmp", "c", 1)


def test_second_moments_one_pass(tmp_path, monkeypatch):
    """All layers' C from ONE statistics pass, also uncached (the timing row compares that pass)."""
    import ref_inputs

    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    model, tok = _tiny()
    _, corpus = _inputs(tmp_path)
    calls = []
    real = ref_inputs.get_second_moment
    monkeypatch.setattr(ref_inputs, "get_second_moment", lambda *a, **k: calls.append(a) or real(*a, **k))
    C = ref_inputs.second_moments(model, tok, range(4), str(corpus), 20, cache=False)
    assert sorted(C) == [0, 1, 2, 3] and len(calls) == 1
    assert C[1].dtype == torch.float64 and C[1].shape == (128, 128)


def test_loss_curves_parsing():
    printed = "\n".join([
        "Computing right vector (v)", "Recording initial value of v*",
        "loss 3.2 = 3.2 + 0.0 + 0.0 avg prob of [ English] 0.04",
        "loss 1.5 = 1.5 + 0.0 + 0.0 avg prob of [ English] 0.2",
        "Delta norm: 3", "Computing right vector (v)",
        "loss 2.0 = 2.0 + 0.0 + 0.0 avg prob of [ Rome] 0.1",
    ])
    assert ref_easyedit.loss_curves(printed) == [[3.2, 1.5], [2.0]]


def test_compare_rows_and_table(tmp_path):
    a = torch.ones(3, 4, dtype=torch.float64)
    r = ref_compare.tensor_row("edit", "rome", "dW", a * (1 + 1e-4), a, "dW")
    assert r["rel"] == pytest.approx(1e-4) and r["agree"] is True
    assert ref_compare.tensor_row("edit", "rome", "dW", a * 1.1, a, "dW")["agree"] is False
    t = ref_compare.time_row("edit", "rome", "seconds", 10.0, 2.0)
    assert t["agree"] is None and t["speedup"] == 5.0
    m = ref_compare.metric_rows("rome", "x", [{"rewrite_acc": 1.0}], [{"rewrite_acc": 0.5}])
    assert m[0]["agree"] is False
    text = ref_compare.format_table([r, t] + m)
    assert "rel diff" in text and "NO" in text
    path = ref_compare.append_rows(tmp_path / "r.jsonl", [r], {"easyedit_commit": "abc"})
    assert json.loads(path.read_text())["easyedit_commit"] == "abc"


# ---------------------------------------------------------------------------------------------
# end to end on tiny-llama
# ---------------------------------------------------------------------------------------------
_WORDS = """the of and in is a to was on for as by with from at that his her which capital city country France
Paris Germany Berlin Italy Rome Spain Madrid Japan Tokyo located official language spoken French German English
mother tongue native speaker born plays football guitar piano music writer actor president company founded
Eiffel Tower Colosseum Danielle Darrieux Michel Rocard Toko Yasuda""".split()


def _inputs(tmp_path):
    data = tmp_path / "cf.json"
    data.write_text(json.dumps(RECORDS))
    corpus = tmp_path / "corpus.txt"
    # 200 distinct texts of the tiny tokenizer's words: about 2,800 keys for m = 128, so C is well
    # conditioned (a few repeated texts give a singular C, and float32 inverses then disagree)
    rng = random.Random(0)
    corpus.write_text("\n".join(" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(200)))
    return data, corpus


def test_end_to_end_against_standin(standin, tmp_path, capsys):
    """The whole runner on tiny-llama: the stand-in gets the same templates, C, requests and
    settings, so every judged quantity agrees; the rows land in the output folder."""
    import run_reference

    data, corpus = _inputs(tmp_path)
    out = tmp_path / "out"
    argv = ["--easyedit", str(standin), "--model", "tiny-llama", "--data", str(data), "--n", "2", "--layer", "1",
            "--mass-layers", "1-2", "--methods", "rome,memit", "--parts", "edit,stats,eval", "--steps", "4",
            "--corpus", str(corpus), "--mom2-n", "200", "--stats-n", "16", "--out", str(out)]
    assert run_reference.main(argv) == 0
    printed = capsys.readouterr().out
    lines = [json.loads(x) for x in (out / "tiny-llama.jsonl").read_text().splitlines()]
    rows = [r for r in lines if r["part"] not in ("notes", "summary")]
    assert not [r for r in rows if r["quantity"] == "error"]
    judged = [r for r in rows if r["agree"] is not None]
    assert judged and all(r["agree"] for r in judged), [r for r in judged if not r["agree"]]
    quantities = {(r["method"], r["quantity"]) for r in rows}
    for q in [("rome", "record 0 dW"), ("rome", "record 1 v*"), ("rome", "record 0 key in denominator"),
              ("memit", "layer 1 dW"), ("memit", "layer 2 dW"), ("memit", "Z (all records)"),
              ("memit", "K at layer 1")]:
        assert q in quantities
    assert any(r["part"] == "stats" and r["quantity"].startswith("C layer 1") for r in rows)
    assert any(r["part"] == "eval" for r in rows)
    assert any(r["part"] == "metrics" and "golden-fast's evaluator" in r["quantity"] for r in rows)
    dw = next(r for r in rows if r["quantity"] == "record 0 dW")
    assert dw["rel"] < 1e-4
    assert "summary:" in printed and "EasyEdit unknown" in printed
    assert not [n for n in sys.modules if n.startswith("easyeditor")]


def test_standin_difference_is_reported(standin, tmp_path):
    """A stand-in that reads another C gives another ΔW: the harness says so (rel > tolerance)."""
    import run_reference

    data, corpus = _inputs(tmp_path)
    u = standin / "easyeditor/models/rome/compute_u.py"
    u.write_text(u.read_text().replace("u = inv_mom2_cache[key] @ k", "u = k  # ignores C"))
    out = tmp_path / "out"
    argv = ["--easyedit", str(standin), "--model", "tiny-llama", "--data", str(data), "--n", "1", "--layer", "1",
            "--methods", "rome", "--steps", "2", "--no-metrics", "--corpus", str(corpus), "--mom2-n", "200",
            "--out", str(out)]
    assert run_reference.main(argv) == 0
    rows = [json.loads(x) for x in (out / "tiny-llama.jsonl").read_text().splitlines()]
    dw = next(r for r in rows if r.get("quantity") == "record 0 dW")
    assert dw["agree"] is False and dw["rel"] > 1e-2
    ks = next(r for r in rows if r.get("quantity") == "record 0 k*")
    assert ks["agree"] is True  # the keys are still the same: the difference is located in C


# ---------------------------------------------------------------------------------------------
# the real comparison
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_real_easyedit_comparison(tmp_path):
    """ROME on one CounterFact record against the real EasyEdit, 3 steps (about a minute on a
    busy CPU). Needs a checkout (EASYEDIT_DIR), the smollm2-135m weights and the data folder."""
    if not os.environ.get(ref_import.ENV):
        pytest.skip("no EasyEdit checkout: set EASYEDIT_DIR to a clone of github.com/zjunlp/EasyEdit "
                    "(bench/reference/README.md records the commit used)")
    from golden_fast.data.location import data_dir

    if data_dir() is None or not (data_dir() / "counterfact" / "counterfact-edit.json").is_file():
        pytest.skip("no CounterFact file in the data folder ($GOLDEN_FAST_DATA)")
    import run_reference

    out = tmp_path / "out"
    assert run_reference.main(["--n", "1", "--methods", "rome", "--steps", "3", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "smollm2-135m.jsonl").read_text().splitlines()]
    judged = [r for r in rows if r.get("agree") is not None and r["part"] == "edit"]
    assert judged and all(r["agree"] for r in judged), [r for r in judged if not r["agree"]]


# ---------------------------------------------------------------------------------------------
# the side-by-side table of one run


def _run_rows(tag: str, speed: float) -> list[dict]:
    base = {"tag": tag, "model": "m", "n": 10, "n_mass": 20, "steps": 10, "convention": "shared", "threads": 1,
            "device": "cpu", "commit": "abc", "easyedit_commit": "14cea8245f", "timestamp": "2026-12-05T00:00:00"}
    timed = [
        ("edit", "rome", "edit seconds (10 records)", 100.0 * speed, 20.0),
        ("edit", "memit", "edit seconds (20 records)", 400.0 * speed, 80.0),
        ("stats", "C", "seconds: EasyEdit 1 layer / golden-fast all 30 layers", 12.0 * speed, 30.0),
        ("eval", "evaluate", "records/s (pre + post pass, 10 records)", 1.5, 3.0 * speed),
    ]
    rows = [dict(base, part=p, method=m, quantity=q, easyedit=ee, golden_fast=gf, speedup=ee / gf,
                 ee_peak_mib=500.0, gf_peak_mib=400.0, load_ee=[1.0, 1.2], load_gf=[1.2, 1.1])
            for p, m, q, ee, gf in timed]
    rows.append(dict(base, part="summary", method="", quantity="summary",
                     note={"agree": 5, "judged": 6, "differ": ["memit layer 4 dW"], "worst_rel": {"x": 2e-3}}))
    return rows


def test_side_by_side_table_from_the_last_complete_run(tmp_path):
    import side_by_side

    path = tmp_path / "m.jsonl"
    rows = _run_rows("t", 1.0) + _run_rows("other", 7.0) + _run_rows("t", 2.0) + _run_rows("t", 9.0)[:2]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = side_by_side.load_run(path, "t")  # the second run of "t": the third is incomplete (no summary)
    lines = {what.split(":")[0]: rest for what, *rest in side_by_side.timing_lines(run)}
    assert lines["ROME"][:3] == ["20.00", "2.00", "10.0x"]  # per edit
    assert lines["MEMIT"][:3] == ["40.00", "4.00", "10.0x"]  # per fact
    assert lines["statistics"][:3] == ["24.00", "1.00", "24.0x"]  # golden-fast's 30 layers, per layer
    assert lines["evaluation"][:3] == ["1.50", "6.00", "4.0x"]  # records/s: golden-fast over EasyEdit
    assert lines["ROME"][3:] == ["500 / 400", "1.0–1.2 / 1.2–1.1"]
    text = side_by_side.markdown(run)
    assert "5 of 6 compared quantities agree" in text and "memit layer 4 dW" in text
    with pytest.raises(SystemExit, match="no complete run tagged 'nope'"):
        side_by_side.load_run(path, "nope")


def test_replace_section(tmp_path):
    from _common import replace_section

    doc = tmp_path / "README.md"
    doc.write_text("a\n<!-- s -->\nold\n<!-- /s -->\nb\n")
    replace_section(doc, "s", "new\n")
    assert doc.read_text() == "a\n<!-- s -->\nnew\n<!-- /s -->\nb\n"
    doc.write_text("a\n<!-- /s -->\n<!-- s -->\n")
    with pytest.raises(ValueError, match="exactly one"):
        replace_section(doc, "s", "x")
