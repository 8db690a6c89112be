"""ROME's context templates: the prompt alone plus short prefixes sampled from the model,
each used as `prefix + ". " + prompt`. Sampled once per (model, settings) and cached."""

from __future__ import annotations

import json

import torch

from golden_fast.fileio import atomic_write_json
from golden_fast.models.identity import model_identity
from golden_fast.models.zoo import home

# ROME's seed words for the sampled prefixes
_STARTS = ("The", "Therefore", "Because", "I", "You")


def _sample(model, tok, length: int, count: int, seed: int) -> list[str]:
    from golden_fast.tokens import encode_texts

    starts = [_STARTS[i % len(_STARTS)] for i in range(count)]
    batch = encode_texts(tok, starts)
    gen = torch.Generator().manual_seed(seed)
    ids = batch.input_ids
    mask = batch.attention_mask
    # Plain top-k 5 sampling loop (not model.generate): seeded through our own generator,
    # so the templates do not depend on the global RNG or generation-config defaults.
    with torch.no_grad():
        for _ in range(length):
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
            top = logits.topk(5, dim=-1)
            probs = torch.softmax(top.values, dim=-1)
            pick = torch.multinomial(probs, 1, generator=gen)
            nxt = top.indices.gather(-1, pick)
            ids = torch.cat([ids, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    out = []
    for row in range(ids.shape[0]):
        text = tok.decode(ids[row][mask[row].bool()], skip_special_tokens=True)
        # braces would break str.format-style templates (as in ROME)
        out.append(text.replace("{", " ").replace("}", " ") + ". {}")
    return out


def context_templates(
    model, tok, length_params: tuple[tuple[int, int], ...] = ((5, 10), (10, 10)), seed: int = 0,
    cache: bool = True,
) -> list[str]:
    """["{}", "<prefix>. {}", ...] for the model; cached on disk per model identity."""
    length_params = tuple((int(a), int(b)) for a, b in length_params)
    if not length_params:
        return ["{}"]
    key = "_".join(f"{a}x{b}" for a, b in length_params) + f"_seed{seed}"
    path = home() / "context_templates" / model_identity(model) / f"{key}.json"
    if cache and path.is_file():
        return json.loads(path.read_text())
    templates = ["{}"]
    for i, (length, count) in enumerate(length_params):
        templates += _sample(model, tok, length, count, seed + i)
    if cache:
        atomic_write_json(path, templates)
    return templates


def with_prompt(template: str, prompt_template: str) -> str:
    """Put a request's "{}" prompt template into a context template: one "{}" remains."""
    return template[:-2] + prompt_template if template.endswith("{}") else template.replace("{}", prompt_template)
