"""The architecture adapter contract: where a family keeps its layers, its MLP
down-projection, norms and head, with GPT-2's transposed Conv1D hidden behind it.

Every algorithm talks to a model only through an adapter, so adding a family is one
small file in this folder and one `register` line (see `golden_fast.models.adapters`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from golden_fast.models import placement


def _get(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted attribute path ("model.layers") on a module."""
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class ModelAdapter:
    """Base adapter. Subclasses set the class attributes; the methods rarely need overriding.

    Shape letters follow golden_fast/FORMULAS.md: d = hidden width, m = MLP inner width (d_ff).
    Hook sites (canonical names, TransformerLens equivalents in brackets):
      layers.{l}.mlp.down.in   the key k, input of the down-projection   [blocks.{l}.mlp.hook_post]
      layers.{l}.mlp.down.out  the value v = W k                          [blocks.{l}.hook_mlp_out*]
      layers.{l}.out           the residual stream after block l          [blocks.{l}.hook_resid_post]
      layers.{l}.in            the residual stream entering block l       [blocks.{l}.hook_resid_pre]
    (*before any post-MLP norm: Gemma's post_feedforward_layernorm comes after.)
    """

    family: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    layers_path: ClassVar[str] = ""
    mlp_attr: ClassVar[str] = "mlp"
    attn_attr: ClassVar[str] = "self_attn"
    down_attr: ClassVar[str] = "down_proj"
    # a norm applied to the MLP's output before the residual add (Gemma's post_feedforward_layernorm)
    post_mlp_norm_attr: ClassVar[str | None] = None
    embed_path: ClassVar[str] = ""
    final_norm_path: ClassVar[str] = ""
    lm_head_path: ClassVar[str] = "lm_head"
    # the decoder stack without the head: its output is the final-normed hidden state
    body_path: ClassVar[str] = "model"
    # learned absolute position embeddings added to inputs_embeds by the body (GPT-2), if any
    position_embed_path: ClassVar[str | None] = None
    # True when the down-projection weight is stored (in x out), as GPT-2's Conv1D does.
    down_transposed: ClassVar[bool] = False

    def __init__(self, model: nn.Module):
        self.model = model
        self._layers = _get(model, self.layers_path)

    # --- structure -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self._layers)

    def block(self, layer: int) -> nn.Module:
        return self._layers[self._check(layer)]

    def mlp(self, layer: int) -> nn.Module:
        return getattr(self.block(layer), self.mlp_attr)

    def attn(self, layer: int) -> nn.Module:
        return getattr(self.block(layer), self.attn_attr)

    def down_proj(self, layer: int) -> nn.Module:
        return getattr(self.mlp(layer), self.down_attr)

    def post_mlp_norm(self, layer: int) -> nn.Module | None:
        """The norm between the down-projection's output and the residual add, or None."""
        return getattr(self.block(layer), self.post_mlp_norm_attr) if self.post_mlp_norm_attr else None

    def down_weight(self, layer: int) -> torch.Tensor:
        """The down-projection weight as (out x in) = (d, m), whatever the storage.

        For a transposed storage this is a transposed *view*: writing into it writes the
        model's parameter, so editors never need to know about Conv1D. For a layer offloaded by
        accelerate (CPU map or disk) it is the stored values (for disk, a copy): change those
        with `write_down_param`.
        """
        w = placement.read_tensor(self.model, self.down_proj(layer), "weight")
        return w.T if self.down_transposed else w

    def down_param(self, layer: int) -> torch.Tensor:
        """The down-projection weight in its storage layout, wherever it lives (see down_weight)."""
        return placement.read_tensor(self.model, self.down_proj(layer), "weight")

    def write_down_param(self, layer: int, value: torch.Tensor) -> None:
        """Set the down-projection weight (storage layout) wherever it lives, bitwise."""
        placement.write_tensor(self.model, self.down_proj(layer), "weight", value)
        placement.refresh_identity(self.model)  # no-op unless some tensor is offloaded

    def write_down_weight(self, layer: int, value: torch.Tensor) -> None:
        """Set the down-projection weight from a (d, m) = (out x in) tensor, whatever the storage."""
        self.write_down_param(layer, value.T if self.down_transposed else value)

    def down_device(self, layer: int) -> torch.device:
        """The device the down-projection of `layer` computes on (its execution device)."""
        return placement.execution_device(self.down_proj(layer))

    def layer_devices(self) -> dict[int, str]:
        """{layer: where its down-projection lives}: "disk", "cpu", "cuda:0", ... (placed models)."""
        return {layer: placement.where(self.model, self.down_proj(layer)) for layer in range(self.n_layers)}

    def _down_shape(self) -> tuple[int, int]:
        # the module's tensor keeps its shape on "meta": no read of an offloaded weight
        shape = tuple(self.down_proj(0).weight.shape)
        return shape[::-1] if self.down_transposed else shape

    def down_bias(self, layer: int) -> torch.Tensor | None:
        """The down-projection bias, wherever it lives, or None (see down_weight)."""
        module = self.down_proj(layer)
        if getattr(module, "bias", None) is None:
            return None
        return placement.read_tensor(self.model, module, "bias")

    @property
    def d_model(self) -> int:
        return self._down_shape()[0]

    @property
    def d_ff(self) -> int:
        return self._down_shape()[1]

    def embeddings(self) -> nn.Module:
        return _get(self.model, self.embed_path)

    def final_norm(self) -> nn.Module:
        return _get(self.model, self.final_norm_path)

    def lm_head(self) -> nn.Module:
        return _get(self.model, self.lm_head_path)

    def body(self) -> nn.Module:
        """The model without its head: body(**inputs).last_hidden_state is what lm_head reads.
        Scoring runs the body and reads only the target columns of the head (never full logits)."""
        return _get(self.model, self.body_path)

    @property
    def logit_softcap(self) -> float | None:
        """Gemma-2 caps logits as cap * tanh(z / cap); None for families that don't."""
        model_config = getattr(self.model, "config", None)
        return getattr(model_config, "final_logit_softcapping", None)

    def residual_output(self, layer: int) -> nn.Module:
        """The module whose output (first element if a tuple) is the residual after `layer`."""
        return self.block(layer)

    def site(self, name: str) -> tuple[nn.Module, str]:
        """Map a canonical hook-site name to (module, "in" | "out")."""
        parts = name.split(".")
        if len(parts) < 3 or parts[0] != "layers" or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"unknown hook site {name!r}; expected e.g. 'layers.3.mlp.down.in'")
        layer, rest = int(parts[1]), ".".join(parts[2:])
        table = {
            "mlp.down.in": (self.down_proj, "in"),
            "mlp.down.out": (self.down_proj, "out"),
            "mlp.out": (self.mlp, "out"),
            "attn.out": (self.attn, "out"),
            "out": (self.residual_output, "out"),
            "in": (self.block, "in"),
        }
        if rest not in table:
            raise ValueError(f"unknown hook site {name!r}; known suffixes: {sorted(table)}")
        getter, where = table[rest]
        return getter(layer), where

    def layer_list_owner(self) -> tuple[nn.Module, str]:
        """(module, attribute) holding the ModuleList of blocks, for `hooks.layers_from`."""
        parent_path, attr = self.layers_path.rsplit(".", 1)
        return _get(self.model, parent_path), attr

    def position_embeddings(self) -> nn.Module | None:
        """Learned absolute position embeddings the body adds to inputs_embeds (GPT-2), if any."""
        return None if self.position_embed_path is None else _get(self.model, self.position_embed_path)

    def describe(self) -> dict:
        """A summary for `golden-fast models info` and reports."""
        w = self.down_proj(0).weight  # shape and dtype only: valid on "meta" too
        return {
            "family": self.family,
            "class": type(self.model).__name__,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_ff": self.d_ff,
            "down_proj": f"{self.layers_path}.{{l}}.{self.mlp_attr}.{self.down_attr}",
            "down_weight_shape_out_x_in": self._down_shape(),
            "down_storage": "transposed (Conv1D, in x out)" if self.down_transposed else "Linear (out x in)",
            "dtype": str(w.dtype).replace("torch.", ""),
            "n_params": sum(p.numel() for p in self.model.parameters()),
        }

    def _check(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TypeError(f"layer must be an int, got {type(layer).__name__}")
        if not 0 <= layer < len(self._layers):
            raise IndexError(f"layer {layer} out of range: {self.family} model has {len(self._layers)} layers")
        return layer
