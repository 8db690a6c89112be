"""GPT-J: `transformer.h[l].mlp.fc_out` is an ordinary Linear (attention and MLP in parallel)."""

from __future__ import annotations

from .base import ModelAdapter


class GPTJAdapter(ModelAdapter):
    family = "gptj"
    model_types = ("gptj",)
    layers_path = "transformer.h"
    attn_attr = "attn"
    down_attr = "fc_out"
    embed_path = "transformer.wte"
    body_path = "transformer"
    final_norm_path = "transformer.ln_f"
