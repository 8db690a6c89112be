"""Keys and values at the subject's last token, for many (request, template) pairs in
batched forward passes that stop after the layer asked.

k* = mean over the context templates of the down-projection input at the subject's last
token; the matching outputs (W k + b) are averaged the same way (FORMULAS.md, section
"Keys k*").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from golden_fast.hooks import capture, run_until
from golden_fast.models import get_adapter
from golden_fast.models.placement import execution_device
from golden_fast.tokens import encode_batch, subject_last_token

from .context import with_prompt


def _prompt_template(request) -> str:
    return request.template


def subject_rows(tok, requests: Sequence, templates: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids and subject-last-token index for every (request, template), request-major."""
    seqs, idxs = [], []
    for req in requests:
        for t in templates:
            ids, idx = subject_last_token(tok, with_prompt(t, _prompt_template(req)), req.subject)
            seqs.append(ids)
            idxs.append(idx)
    return seqs, idxs


@torch.no_grad()
def keys_at_subject(
    model,
    tok,
    requests: Sequence,
    layers: Sequence[int],
    templates: Sequence[str],
    site: str = "mlp.down",
    batch_size: int = 64,
    per_template: bool = False,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (K (n, m), O (n, d))}: template-averaged inputs and outputs of the site at the
    subject's last token, averaged in float64, one row per request. site "mlp.down" gives keys k* and
    W k* + b; site "out" gives the residual stream after the block (in and out equal then).
    per_template=True returns (n, T, width) instead, one row per template (no averaging)."""
    adapter = get_adapter(model)
    layers = sorted(set(layers))
    seqs, idxs = subject_rows(tok, requests, templates)
    n_t = len(templates)
    names = []
    for l in layers:
        names += [f"layers.{l}.{site}.in", f"layers.{l}.{site}.out"] if site != "out" else [f"layers.{l}.out"]
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        batch = encode_batch(tok, chunk).to(execution_device(model))
        rows = torch.arange(len(chunk))
        cols = torch.tensor([batch.offsets[i] + idxs[start + i] for i in range(len(chunk))])
        with capture(adapter, names) as cap:
            run_until(model, adapter, layers[-1], **batch.model_inputs())
        for name in names:
            vals = cap[name][rows, cols].to(torch.float64)  # (chunk, width)
            sums.setdefault(name, []).append(vals)
    def gather(name: str) -> torch.Tensor:
        rows = torch.cat(sums[name]).view(len(requests), n_t, -1)
        return rows if per_template else rows.mean(1)

    out = {}
    for l in layers:
        if site == "out":
            v = gather(f"layers.{l}.out")
            out[l] = (v, v)
        else:
            out[l] = (gather(f"layers.{l}.{site}.in"), gather(f"layers.{l}.{site}.out"))
    return out
