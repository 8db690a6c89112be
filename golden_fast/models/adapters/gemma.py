"""Gemma-2 / Gemma-3 text models. The layout is LLaMA's, with extra norms around the MLP
(post_feedforward_layernorm after the down-projection) and a scaled embedding."""

from __future__ import annotations

from .base import ModelAdapter


class GemmaAdapter(ModelAdapter):
    family = "gemma"
    model_types = ("gemma", "gemma2", "gemma3_text")
    layers_path = "model.layers"
    embed_path = "model.embed_tokens"
    final_norm_path = "model.norm"
    post_mlp_norm_attr = "post_feedforward_layernorm"
