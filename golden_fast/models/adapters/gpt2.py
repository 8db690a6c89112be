"""GPT-2: `transformer.h[l].mlp.c_proj` is a Conv1D storing the weight as (in x out)."""

from __future__ import annotations

from .base import ModelAdapter


class GPT2Adapter(ModelAdapter):
    family = "gpt2"
    model_types = ("gpt2",)
    layers_path = "transformer.h"
    attn_attr = "attn"
    down_attr = "c_proj"
    embed_path = "transformer.wte"
    body_path = "transformer"
    final_norm_path = "transformer.ln_f"
    down_transposed = True
    position_embed_path = "transformer.wpe"
