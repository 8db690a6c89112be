"""The inputs both sides get, made once: model and tokenizer, requests, context templates,
second moments C, the corpus texts; and their EasyEdit-shaped views.

One loaded model serves both sides (each side's edit is applied, measured and reverted
before the other runs; `weights_digest` checks that it came back bitwise). EasyEdit gets a
copy of the tokenizer configured as its BaseEditor configures a LLaMA tokenizer for the
locate-then-edit methods (pad = eos, right padding): its compute_v / compute_z index tokens
from the left and rely on right padding.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from golden_fast.data import load as load_requests
from golden_fast.edit.context import context_templates
from golden_fast.models import load_model
from golden_fast.stats import StatsConfig, get_second_moment, resolve_corpus


def load_shared_model(name: str):
    """(model, tok) in float32 on the CPU, eval mode."""
    model, tok = load_model(name)
    model.eval()
    return model, tok


def easyedit_tokenizer(tok):
    """A copy of `tok` as EasyEdit's BaseEditor sets it up for LLaMA-family models with ROME,
    R-ROME, MEMIT, EMMET, AlphaEdit (editors/editor.py): pad_token_id = eos_token_id, padding right."""
    t = copy.deepcopy(tok)
    t.pad_token_id = t.eos_token_id
    t.padding_side = "right"
    return t


def requests(path: str, n: int, offset: int = 0):
    return load_requests(path, limit=n, offset=offset)


def templates(model, tok, length_params) -> list[str]:
    """golden-fast's context templates (sampled once per model and cached): both sides get these."""
    return list(context_templates(model, tok, tuple(tuple(x) for x in length_params)))


def second_moments(model, tok, layers: Sequence[int], corpus: str, n_samples: int, dtype: str = "float32",
                   cache: bool = True) -> dict[int, torch.Tensor]:
    """{layer: C (float64)} from golden-fast's statistics (cached; all layers in one pass)."""
    config = StatsConfig(corpus=corpus, n_samples=n_samples, dtype=dtype, cache=cache)
    layers = sorted(set(int(x) for x in layers))
    got = get_second_moment(model, tok, layers, config, progress=False)  # one call: one pass for all layers
    return {l: got[l].mean(torch.float64) for l in layers}


def corpus_texts(model, tok, corpus: str, n_samples: int) -> list[str]:
    """The texts golden-fast's statistics read for (corpus, n_samples): what EasyEdit's layer_stats is fed."""
    config = StatsConfig(corpus=corpus, n_samples=n_samples)
    return resolve_corpus(corpus, config, model, tok, progress=False).texts(n_samples)


def easyedit_request(req) -> dict[str, Any]:
    """An EditRequest as the dict EasyEdit's editors and compute_edit_quality read (the shape its
    examples build from CounterFact: filled prompt, rephrase_prompt, locality{key: {prompt, ground_truth}})."""
    d: dict[str, Any] = {
        "prompt": req.text,
        "subject": req.subject,
        "target_new": req.target_new,
        "ground_truth": req.ground_truth if req.ground_truth is not None else "<|endoftext|>",
        "case_id": req.case_id,
    }
    if req.rephrase_prompts:
        d["rephrase_prompt"] = list(req.rephrase_prompts) if len(req.rephrase_prompts) > 1 else req.rephrase_prompts[0]
    if req.locality:
        d["locality"] = {}
        for i, probe in enumerate(req.locality):
            key = probe.name or f"locality{i}"
            if key in d["locality"]:
                key = f"{key}{i}"
            d["locality"][key] = {"prompt": probe.prompt, "ground_truth": probe.answer}
    d["portability"] = {}
    return d


def weights_digest(model) -> str:
    """sha256 of every parameter's bytes: the model is bitwise unchanged when this is."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().contiguous().view(torch.uint8).numpy().tobytes() if p.numel() else b"")
    return h.hexdigest()


class applied:
    """Context manager: add {layer: ΔW (d, m)} to the down-projection weights, restore them bitwise on exit."""

    def __init__(self, model, adapter, updates: dict[int, torch.Tensor]):
        self.adapter, self.updates = adapter, updates

    def __enter__(self):
        self.saved = {}
        with torch.no_grad():
            for layer, dW in self.updates.items():
                w = self.adapter.down_weight(layer)  # (d, m) view whatever the storage
                self.saved[layer] = w.detach().clone()
                w.add_(dW.to(w.dtype))
        return self

    def __exit__(self, *exc):
        with torch.no_grad():
            for layer, w0 in self.saved.items():
                self.adapter.down_weight(layer).copy_(w0)
        return False
