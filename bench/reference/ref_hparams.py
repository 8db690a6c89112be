"""EasyEdit hyperparameters -> golden-fast's, field by field, and the conventions both sides share.

The starting point is EasyEdit's own YAML for a LLaMA-family model, read from the checkout
(`base_easyedit_hparams`), adapted to the model at hand (`adapt_to_model`: layers, the last layer
for the loss, module names checked against the model, the tied head, CPU, a scratch stats
folder). `to_golden_fast` then maps every EasyEdit field: copied when the names mean the same,
converted where the meaning differs (v_loss_layer, AlphaEdit's threshold), checked where golden-fast
has one fixed choice (fact_token, layer_selection, R-ROME's key flags), or set aside as
EasyEdit plumbing (device, paths, module templates). An EasyEdit field it does not know is an
error, so a new upstream field cannot be silently dropped.

Conventions (`apply_convention`): the two implementations differ by design in three places
(golden_fast/FORMULAS.md, "Targets v* and z"): weight decay ||δ||/||v0||² (EasyEdit) against
||δ||²/||v0||² (golden-fast), KL(p_δ||p_0) against KL(p_0||p_δ), and the early stop (EasyEdit:
total loss < 0.05, hard-coded; golden-fast: NLL < nll_stop). "shared" sets v_weight_decay and
kl_factor to 0 on both sides: the two losses are then the same function, and with nll_stop = 0.05
the same stopping rule. "native" keeps EasyEdit's values on both sides: the differences are then
expected and measured, not bugs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

#: golden-fast method name -> (EasyEdit alg_name, YAML of a LLaMA model in the checkout)
EASYEDIT_YAML = {
    "rome": ("ROME", "hparams/ROME/llama-7b.yaml"),
    "r-rome": ("R-ROME", "hparams/R-ROME/llama-7b.yaml"),
    "memit": ("MEMIT", "hparams/MEMIT/llama-7b.yaml"),
    "emmet": ("EMMET", "hparams/EMMET/llama-7b.yaml"),
    "alphaedit": ("AlphaEdit", "hparams/AlphaEdit/llama3-8b.yaml"),
}
MASS = ("memit", "emmet", "alphaedit")

#: same name, same meaning: copied
SHARED = (
    "layers", "v_num_grad_steps", "v_lr", "v_weight_decay", "clamp_norm_factor", "kl_factor",
    "mom2_adjustment", "mom2_n_samples", "mom2_dtype",
)
#: same name, same meaning, only for some methods
SHARED_IF = {
    "context_template_length_params": ("rome", "r-rome"),
    "mom2_update_weight": ("memit", "emmet"),
    "emmet_lambda": ("emmet",),
    "update_norm_lambda": ("emmet",),
    "L2": ("alphaedit",),
}
#: EasyEdit plumbing with no golden-fast counterpart (the harness handles what they do)
PLUMBING = (
    "alg_name", "model_name", "device", "stats_dir", "model_parallel", "max_length", "batch_size",
    "P_loc", "rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp", "ln_f_module",
    "lm_head_module", "mom2_dataset",
)

#: EasyEdit's v* / z loop stops once the *total* loss is below this (compute_v.py / compute_z.py)
EASYEDIT_LOSS_STOP = 0.05


class TranslationError(ValueError):
    """An EasyEdit setting golden-fast cannot reproduce; the message names the field."""


def base_easyedit_hparams(checkout: Path, method: str) -> dict[str, Any]:
    """EasyEdit's YAML for a LLaMA model of `method`, as EasyEdit's HyperParams.from_hparams reads it
    (scientific-notation strings become floats)."""
    alg, rel = EASYEDIT_YAML[method]
    data = yaml.safe_load((Path(checkout) / rel).read_text())
    for k, v in list(data.items()):
        if isinstance(v, str):
            try:
                data[k] = float(v)
            except ValueError:
                pass
    if data.get("alg_name") != alg:
        raise TranslationError(f"{rel}: alg_name is {data.get('alg_name')!r}, expected {alg!r}")
    return data


def _has_module(model, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def adapt_to_model(ee: dict[str, Any], method: str, model, layers: list[int], stats_dir: str,
                   corpus: str, n_samples: int, mom2_dtype: str | None = None) -> dict[str, Any]:
    """EasyEdit's hparams for `model`: layers, loss at the last layer, module templates checked,
    the tied head (smollm2: lm_head.weight *is* model.embed_tokens.weight, and named_parameters()
    lists it only under the embedding, so MEMIT/EMMET's get_parameter("lm_head.weight") would fail),
    CPU, a scratch stats folder. The corpus fields: mom2_n_samples is the shared text count;
    EasyEdit's mom2_dataset must stay a name its layer_stats knows (the harness feeds it the local
    texts instead of downloading that dataset)."""
    ee = copy.deepcopy(ee)
    n_layers = model.config.num_hidden_layers
    ee["layers"] = [int(x) for x in layers]
    ee["v_loss_layer"] = n_layers - 1
    for key in ("rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp"):
        name = ee[key].format(ee["layers"][0])
        if not _has_module(model, name):
            raise TranslationError(f"{key}={ee[key]!r}: the model has no module {name!r}")
    if not _has_module(model, ee["ln_f_module"]):
        raise TranslationError(f"ln_f_module={ee['ln_f_module']!r}: no such module")
    params = dict(model.named_parameters())
    if f"{ee['lm_head_module']}.weight" not in params:
        tied = [n[: -len(".weight")] for n, p in params.items()
                if n.endswith(".weight") and p is model.get_output_embeddings().weight]
        if not tied:
            raise TranslationError(f"lm_head_module={ee['lm_head_module']!r}: no parameter holds the head")
        ee["lm_head_module"] = tied[0]  # smollm2: model.embed_tokens
    ee["device"] = "cpu"
    ee["stats_dir"] = str(stats_dir)
    ee["model_parallel"] = False
    if "fp16" in ee:  # R-ROME's llama YAML asks for fp16; the comparison runs float32 on both sides
        ee["fp16"] = False
    name = str(model.config._name_or_path)
    # AlphaEdit picks P's layout from "llama"/"qwen"/"gpt2-xl" in model_name; evaluation checks "t5"
    ee["model_name"] = name if "llama" in name.lower() or model.config.model_type != "llama" else f"{name}-llama"
    ee["mom2_dataset"] = ee.get("mom2_dataset") if ee.get("mom2_dataset") in ("wikipedia", "wikitext") else "wikipedia"
    ee["mom2_n_samples"] = int(n_samples)
    if mom2_dtype:
        ee["mom2_dtype"] = mom2_dtype
    ee["_corpus"] = corpus  # harness-only: the local corpus both sides read (removed before EasyEdit sees it)
    if method == "alphaedit":
        ee["P_loc"] = str(Path(stats_dir) / "no-such-P.pt")  # never present: EasyEdit computes P from C
    return ee


def apply_convention(ee: dict[str, Any], convention: str) -> tuple[dict[str, Any], list[str]]:
    """(hparams, notes) under `convention` ("shared" or "native"); see the module docstring."""
    ee = copy.deepcopy(ee)
    notes = []
    if convention == "shared":
        if ee.get("v_weight_decay") or ee.get("kl_factor"):
            notes.append(
                f"shared convention: v_weight_decay {ee.get('v_weight_decay')} -> 0 and kl_factor "
                f"{ee.get('kl_factor')} -> 0 on both sides (their forms differ by design)")
        ee["v_weight_decay"] = 0.0
        ee["kl_factor"] = 0.0
    elif convention == "native":
        notes.append("native convention: EasyEdit's weight decay ||d||/||v0||^2 and KL(p_d||p_0) against "
                     "golden-fast's ||d||^2/||v0||^2 and KL(p_0||p_d); v*/z differ by design")
    else:
        raise ValueError(f"convention must be 'shared' or 'native', got {convention!r}")
    return ee, notes


def to_golden_fast(method: str, ee: dict[str, Any], n_layers: int, c_max_eig: float | None = None
                   ) -> tuple[dict[str, Any], list[str]]:
    """golden-fast hyperparameters (a dict for golden_fast.edit.config.make_config) equivalent to
    EasyEdit's `ee`, and notes on every conversion."""
    gf: dict[str, Any] = {}
    notes: list[str] = []
    handled = set()

    def take(key):
        handled.add(key)
        return ee[key]

    for key in SHARED:
        if key in ee:
            gf[key] = take(key)
    for key, methods in SHARED_IF.items():
        if key in ee:
            value = take(key)
            if method in methods:
                gf[key] = value
            elif key == "mom2_update_weight" and method == "alphaedit":
                notes.append("mom2_update_weight: unused by AlphaEdit on both sides")
            else:
                raise TranslationError(f"{method}: EasyEdit field {key}={value!r} has no meaning here")
    if method in MASS:
        # EasyEdit's MEMIT family samples its templates with a fixed [(10, 5)] (get_context_templates)
        gf["context_template_length_params"] = [[10, 5]]
    loss_layer = int(take("v_loss_layer"))
    if loss_layer != n_layers - 1:
        raise TranslationError(f"v_loss_layer={loss_layer}: golden-fast reads the loss at the last layer "
                               f"({n_layers - 1}) only")
    gf["v_loss_layer"] = None
    if take("fact_token") != "subject_last":
        raise TranslationError(f"fact_token={ee['fact_token']!r}: golden-fast edits at the subject's last token only")
    if method in MASS and take("layer_selection") != "all":
        raise TranslationError(f"layer_selection={ee['layer_selection']!r}: only 'all' is reproduced")
    if ee.get("fp16"):
        raise TranslationError("fp16: the comparison runs both sides in float32")
    handled.add("fp16")
    if method == "r-rome":
        defaults = (("original_implementation", False), ("enable_prompt_keys", False),
                    ("enable_random_prefix_keys", True))
        flags = {k: bool(ee.get(k, d)) for k, d in defaults}
        handled.update(flags)
        if flags != {"original_implementation": False, "enable_prompt_keys": False, "enable_random_prefix_keys": True}:
            raise TranslationError(f"R-ROME key flags {flags}: golden-fast's r-rome is enable_random_prefix_keys only "
                                   "(template-averaged key in both places)")
    if method == "alphaedit":
        thr = float(take("nullspace_threshold"))
        if c_max_eig is None:
            raise TranslationError("nullspace_threshold is absolute in EasyEdit, relative in golden-fast: "
                                   "the translation needs C's largest eigenvalue")
        gf["nullspace_rel_threshold"] = thr / float(c_max_eig)
        notes.append(f"nullspace_threshold {thr:g} (absolute, on C's singular values) -> nullspace_rel_threshold "
                     f"{gf['nullspace_rel_threshold']:.4g} (x the largest eigenvalue {c_max_eig:.4g})")
    # the stop: EasyEdit's total-loss < 0.05 equals golden-fast's NLL < nll_stop only without decay and KL
    gf["nll_stop"] = EASYEDIT_LOSS_STOP
    if ee.get("v_weight_decay") or ee.get("kl_factor"):
        notes.append("early stop: EasyEdit stops on the total loss < 0.05, golden-fast on the NLL < 0.05 "
                     "(the same rule only when v_weight_decay = kl_factor = 0)")
    gf["mom2_dataset"] = ee.get("_corpus", ee.get("mom2_dataset"))
    handled.update(("_corpus", "mom2_adjustment"))
    handled.update(k for k in PLUMBING if k in ee)
    unknown = sorted(set(ee) - handled)
    if unknown:
        raise TranslationError(f"{method}: EasyEdit field(s) {unknown} have no translation")
    return gf, notes


def alphaedit_shared_C(C: dict, absolute: float, relative: float) -> dict:
    """AlphaEdit's threshold: EasyEdit keeps the eigenvectors of C with eigenvalue < `absolute` (one
    number for every layer), golden-fast those <= `relative` x the largest eigenvalue. With several
    layers whose largest eigenvalues differ, no single relative threshold selects EasyEdit's
    directions everywhere. AlphaEdit uses C only for that selection (the projector P), so under the
    shared convention golden-fast gets, per layer, C with its largest eigenvalue replaced by
    absolute / relative: its relative rule then selects exactly {eigenvalue <= absolute}."""
    import torch

    out = {}
    for layer, c in C.items():
        c = c.to(torch.float64)
        ev, vecs = torch.linalg.eigh(0.5 * (c + c.T))
        top = vecs[:, -1:]
        out[layer] = c + (absolute / relative - float(ev[-1])) * (top @ top.T)
    return out


def for_easyedit(ee: dict[str, Any]) -> dict[str, Any]:
    """The dict EasyEdit's HyperParams dataclass is built from (harness-only keys removed)."""
    return {k: v for k, v in ee.items() if not k.startswith("_")}
