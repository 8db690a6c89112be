"""GPT-NeoX / Pythia: `gpt_neox.layers[l].mlp.dense_4h_to_h`, head at `embed_out`."""

from __future__ import annotations

from .base import ModelAdapter


class GPTNeoXAdapter(ModelAdapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    layers_path = "gpt_neox.layers"
    attn_attr = "attention"
    down_attr = "dense_4h_to_h"
    embed_path = "gpt_neox.embed_in"
    body_path = "gpt_neox"
    final_norm_path = "gpt_neox.final_layer_norm"
    lm_head_path = "embed_out"
