"""Drive EasyEdit's own functions on the shared inputs, and read back what they computed.

Nothing here re-implements an EasyEdit computation. The harness
- hands over the shared inputs through EasyEdit's own module-level caches: the context templates
  (`CONTEXT_TEMPLATES_CACHE` of each *_main module, which EasyEdit fills by sampling when empty)
  and the second moment C (ROME's `inv_mom2_cache`, the MEMIT family's `COV_CACHE`, filled with
  exactly what EasyEdit would store after its own layer_stats pass: torch.inverse(C).float() and
  C.float());
- feeds its covariance pass (layer_stats) local texts instead of a Hugging Face download, by
  replacing the module's `load_dataset` global for the duration of the call;
- records intermediate values at EasyEdit's function boundaries (`recording`: a wrapper on a module
  global that passes every call through unchanged and keeps its arguments and result): the keys from
  repr_tools.get_reprs_at_word_tokens, z from compute_z, K from compute_ks;
- reads the step count and loss curve from the lines EasyEdit's loop prints.
Every such change is undone on exit (context managers), and the model's requires_grad flags,
which EasyEdit's nethook.set_requires_grad leaves off, are put back.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ref_hparams import for_easyedit

#: golden-fast method -> (main module key, execute function, hparams module key, hparams class)
METHODS = {
    "rome": ("rome_main", "execute_rome", "rome_hparams", "ROMEHyperParams"),
    "r-rome": ("r_rome_main", "execute_r_rome", "r_rome_hparams", "R_ROMEHyperParams"),
    "memit": ("memit_main", "execute_memit", "memit_hparams", "MEMITHyperParams"),
    "emmet": ("emmet_main", "execute_emmet", "emmet_hparams", "EMMETHyperParams"),
    "alphaedit": ("alphaedit_main", "apply_AlphaEdit_to_model", "alphaedit_hparams", "AlphaEditHyperParams"),
}
_LOSS_LINE = re.compile(r"^loss (\S+) = (\S+) \+ (\S+) \+ (\S+) avg prob of")


def make_hparams(ee, method: str, ee_dict: dict[str, Any]):
    """EasyEdit's HyperParams dataclass of `method`, built from the translated dict."""
    _, _, mod, cls = METHODS[method]
    return getattr(ee.modules[mod], cls)(**for_easyedit(ee_dict))


# -- handing over the shared inputs -------------------------------------------------------------
def feed_templates(ee, method: str, templates: Sequence[str], grouping: str = "flat") -> None:
    """Put the shared context templates where EasyEdit looks for its sampled ones.

    ROME / R-ROME keep a flat list. The MEMIT family keeps groups ([["{}"], [5 prefixes]]) and
    averages the keys per group, then over groups (compute_ks): the bare prompt's key weighs 1/2.
    grouping "flat" hands them as one group, which makes that average the plain mean over the
    templates (golden-fast's k*); "easyedit" keeps EasyEdit's two groups."""
    main = ee.modules[METHODS[method][0]]
    templates = list(templates)
    if method in ("rome", "r-rome"):
        main.CONTEXT_TEMPLATES_CACHE = templates
    elif grouping == "flat":
        main.CONTEXT_TEMPLATES_CACHE = [templates]
    elif grouping == "easyedit":
        if templates[0] != "{}":
            raise ValueError("the first template must be the bare prompt '{}'")
        main.CONTEXT_TEMPLATES_CACHE = [["{}"], templates[1:]]
    else:
        raise ValueError(f"grouping must be 'flat' or 'easyedit', got {grouping!r}")


def feed_covariance(ee, method: str, model, hparams, C: dict[int, torch.Tensor]) -> None:
    """Fill EasyEdit's covariance caches with C, keyed as EasyEdit keys them."""
    model_name = model.config._name_or_path.replace("/", "_")
    dtype = getattr(torch, hparams.mom2_dtype)
    for layer, c in C.items():
        key = (model_name, hparams.rewrite_module_tmp.format(layer))
        if method in ("rome", "r-rome"):
            mod = ee.modules["rome_u" if method == "rome" else "r_rome_u"]
            mod.inv_mom2_cache[key] = torch.inverse(c.to(dtype)).float()  # what get_inv_cov stores
        else:
            ee.modules[METHODS[method][0]].COV_CACHE[key] = c.float().cpu()  # what get_cov stores


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, texts):
        self.texts = list(texts)

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return {"text": self.texts[i]}


@contextlib.contextmanager
def feed_texts(ee, texts: Sequence[str]) -> Iterator[None]:
    """EasyEdit's layer_stats reads `load_dataset(name, config)["train"]`; serve the local texts."""
    mod = ee.modules["layer_stats"]
    old = mod.load_dataset
    mod.load_dataset = lambda *a, **k: {"train": _ListDataset(texts)}
    try:
        yield
    finally:
        mod.load_dataset = old


# -- reading back ---------------------------------------------------------------------------------
@contextlib.contextmanager
def recording(module, name: str, printed: io.StringIO | None = None) -> Iterator[list]:
    """Wrap `module.name`: calls pass through unchanged; yields the list of (args, kwargs, result,
    what the call printed into `printed`, the redirected stdout, if given)."""
    calls: list = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = printed.tell() if printed is not None else 0
        out = original(*args, **kwargs)
        text = printed.getvalue()[start:] if printed is not None else ""
        calls.append((args, kwargs, out, text))
        return out

    setattr(module, name, wrapper)
    try:
        yield calls
    finally:
        setattr(module, name, original)


@contextlib.contextmanager
def grad_flags_kept(model) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def loss_curves(printed: str) -> list[list[float]]:
    """Per optimisation (a compute_v / compute_z call): the total losses EasyEdit printed, one per step."""
    curves: list[list[float]] = []
    prev_was_loss = False
    for line in printed.splitlines():
        m = _LOSS_LINE.match(line.strip())
        if m:
            if not prev_was_loss:
                curves.append([])
            curves[-1].append(float(m.group(1)))
        prev_was_loss = bool(m) or (prev_was_loss and not line.strip())
    return curves


# -- one method -----------------------------------------------------------------------------------
def run_single(ee, method: str, model, tok, request: dict, hparams) -> dict[str, Any]:
    """One ROME / R-ROME edit by EasyEdit's execute_rome / execute_r_rome on the unedited weights.

    Returns ΔW (d, m) as EasyEdit applies it, u (C⁻¹k*, normalised), the right vector, k* (the
    template mean of the keys compute_u read), the key and output in the denominator (ROME: the bare
    prompt's; R-ROME: the template means), v* (= right · (k·u) + output, EasyEdit's target), the steps
    and losses it printed, and the wall time of the call."""
    main_key, fn, _, _ = METHODS[method]
    main = ee.modules[main_key]
    layer = hparams.layers[0]
    buf = io.StringIO()
    with grad_flags_kept(model), recording(ee.modules["repr_tools"], "get_reprs_at_word_tokens") as reprs, \
            contextlib.redirect_stdout(buf):
        t0 = time.perf_counter()
        deltas = getattr(main, fn)(model, tok, request, hparams)
        seconds = time.perf_counter() - t0
    w_name = f"{hparams.rewrite_module_tmp.format(layer)}.weight"
    u, right = (t.detach().double() for t in deltas[w_name])
    keys_calls = [c for c in reprs if c[1].get("track") == "in"]
    io_calls = [c for c in reprs if c[1].get("track") == "both"]
    k_star = keys_calls[0][2].double().mean(0)
    ins = torch.stack([c[2][0][0].double() for c in io_calls])
    outs = torch.stack([c[2][1][0].double() for c in io_calls])
    k_den, out_den = ins.mean(0), outs.mean(0)
    v_star = right * float(k_den @ u) + out_den
    curves = loss_curves(buf.getvalue())
    return {
        "dW": torch.outer(right, u), "u": u, "right": right, "k_star": k_star, "k_den": k_den,
        "v_star": v_star, "loss_curve": curves[0] if curves else [], "steps": len(curves[0]) if curves else 0,
        "seconds": seconds, "printed": buf.getvalue(),
    }


def run_mass(ee, method: str, model, tok, requests: list[dict], hparams) -> dict[str, Any]:
    """One batch by EasyEdit's execute_memit / execute_emmet / apply_AlphaEdit_to_model on the
    unedited weights. Returns {layer: ΔW (d, m)}, Z (n, d) from compute_z, K (n, m) of the first
    layer from compute_ks (unedited weights), per-request loss curves, the wall time."""
    main_key, fn, _, _ = METHODS[method]
    main = ee.modules[main_key]
    buf = io.StringIO()
    names = {l: f"{hparams.rewrite_module_tmp.format(l)}.weight" for l in hparams.layers}
    before = {l: model.get_parameter(n).detach().clone() for l, n in names.items()}
    with grad_flags_kept(model), recording(main, "compute_z", buf) as zs, recording(main, "compute_ks") as ks, \
            contextlib.redirect_stdout(buf), _scratch_cwd():
        t0 = time.perf_counter()
        if method == "alphaedit":
            # P and its lifelong cache are computed in apply_*, which edits the model in place
            main.P_loaded = False
            main.cache_c_new = False
            getattr(main, fn)(model, tok, requests, hparams, copy=False, return_orig_weights=False)
            seconds = time.perf_counter() - t0
            dW = {l: (model.get_parameter(n).detach().double() - before[l].double()) for l, n in names.items()}
            with torch.no_grad():
                for l, n in names.items():
                    model.get_parameter(n).copy_(before[l])
        else:
            deltas = getattr(main, fn)(model, tok, requests, hparams)
            seconds = time.perf_counter() - t0
            dW = {l: (deltas[n][1].double() @ deltas[n][0].double().T) for l, n in names.items()}  # resid @ adj_kᵀ
    Z = torch.stack([c[2].detach().double() for c in zs])
    K = ks[0][2].detach().double()
    curves = [sum(loss_curves(c[3]), []) for c in zs]  # what each compute_z call printed
    return {"dW": dW, "Z": Z, "K": K, "loss_curves": curves, "steps": [len(c) for c in curves],
            "seconds": seconds, "printed": buf.getvalue()}


@contextlib.contextmanager
def _scratch_cwd() -> Iterator[None]:
    """AlphaEdit saves null_space_project.pt into the working directory: give it a scratch one."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="easyedit-cwd-") as d:
        os.chdir(d)
        try:
            yield
        finally:
            os.chdir(old)


# -- statistics -----------------------------------------------------------------------------------
def _no_progress(iterable, total=None):
    # layer_stats(progress=None) substitutes `lambda x: x` and then calls it with total=: a TypeError
    return iterable


def layer_stats(ee, model, tok, layer_name: str, texts: Sequence[str], dtype: str, stats_dir: str,
                hparams=None) -> tuple[torch.Tensor, int, float]:
    """(C, token count, seconds) of one layer by EasyEdit's layer_stats on `texts`, nothing cached.

    EasyEdit's DataLoader uses 2 worker processes (num_workers=2 in layer_stats): they tokenise; the
    forward passes run in this process."""
    with grad_flags_kept(model), feed_texts(ee, texts), contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        stat = ee.modules["layer_stats"].layer_stats(
            model, tok, layer_name, stats_dir, "wikipedia", to_collect=["mom2"], sample_size=len(texts),
            precision=dtype, progress=_no_progress, force_recompute=True, hparams=hparams,
        )
        seconds = time.perf_counter() - t0
    return stat.mom2.moment().double(), int(stat.mom2.count), seconds


# -- evaluation -----------------------------------------------------------------------------------
def evaluate_records(ee, model, tok, records: list[dict], hparams, pre: list[dict] | None = None) -> list[dict]:
    """EasyEdit's compute_edit_quality per record (teacher-forced token accuracy). With `pre` (the
    same call's output on the unedited model), locality per key = mean(pre tokens == post tokens),
    EasyEdit's editor convention (finalize_locality_metrics). Returns the raw results."""
    out = []
    with contextlib.redirect_stdout(io.StringIO()):
        for i, rec in enumerate(records):
            r = ee.modules["evaluate"].compute_edit_quality(model, hparams.model_name, hparams, tok, rec, "cpu")
            if pre is not None:
                for key in rec.get("locality", {}):
                    a, b = pre[i]["locality"][f"{key}_output"], r["locality"][f"{key}_output"]
                    r["locality"][f"{key}_acc"] = [float(np.mean(np.equal(x, y))) for x, y in zip(a, b)]
            out.append(r)
    return out


def metrics_of(result: dict) -> dict[str, float]:
    """rewrite_acc, rephrase_acc, locality (mean over keys) from one compute_edit_quality result."""
    def mean(x):
        x = list(x) if isinstance(x, (list, tuple)) else [x]
        return float(sum(float(v) for v in x) / len(x))

    m = {"rewrite_acc": mean(result["rewrite_acc"])}
    if "rephrase_acc" in result:
        m["rephrase_acc"] = mean(result["rephrase_acc"])
    locs = [mean(v) for k, v in result.get("locality", {}).items() if k.endswith("_acc")]
    if locs:
        m["locality"] = sum(locs) / len(locs)
    return m
