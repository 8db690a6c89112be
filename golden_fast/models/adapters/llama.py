"""LLaMA and the families that share its layout (Mistral, Qwen2, Qwen3, SmolLM2)."""

from __future__ import annotations

from .base import ModelAdapter


class LlamaAdapter(ModelAdapter):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    layers_path = "model.layers"
    embed_path = "model.embed_tokens"
    final_norm_path = "model.norm"
