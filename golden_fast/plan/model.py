"""The planner's view of a model: its config (from a name or a file, never its weights), the model
built on the meta device, and the architecture numbers the memory formulas read (`Arch`).

Names resolve in this order:

1. an existing path: a config.json file, or a folder holding one;
2. a tiny test model ("tiny-gpt2", "tiny-llama", "tiny-gemma3"): its config (the model is built in
   memory in milliseconds, so the real one is built and only its config kept);
3. a zoo model ("smollm2-135m", "gemma3-270m"): the config.json of its converted copy in the cache
   (`golden_fast.models.cache_dir`), else the shipped preset config of that name if there is one;
4. a shipped preset config: golden_fast/presets/configs/<name>.json ("gemma-3-12b", "llama-2-7b",
   "gpt2-xl");
5. anything else: `AutoConfig.from_pretrained(name)` (a Hugging Face id already in the local cache).

A multimodal config (one with a text_config, e.g. Gemma-3-12B-it's) is planned as its text model:
the editors only touch the language model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "Arch",
    "ResolvedConfig",
    "architecture",
    "build_meta_model",
    "preset_config_names",
    "resolve_config",
]

PRESET_CONFIG_DIR = Path(__file__).resolve().parent.parent / "presets" / "configs"

# activations written as several Python ops keep several tensors for backward (x, tanh(.), 0.5 x,
# 1 + tanh(.)); one-op activations (SiLU, GELU, GELU-tanh, ReLU) keep their input only
_ACT_SAVED = {"gelu_new": 4, "gelu_fast": 4}


def preset_config_names() -> list[str]:
    """Names of the configs shipped under golden_fast/presets/configs."""
    return sorted(p.stem for p in PRESET_CONFIG_DIR.glob("*.json"))


@dataclasses.dataclass(frozen=True)
class ResolvedConfig:
    """A model config and where it came from (`source`: a path, "tiny:<name>", "hub:<id>")."""

    name: str
    config: Any
    source: str


def _config_from_dict(data: dict, source: str):
    from transformers import AutoConfig

    data = {k: v for k, v in data.items() if not k.startswith("_comment")}
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ValueError(f"{source}: no 'model_type' in the config")
    return AutoConfig.for_model(model_type, **data)


def _from_file(path: Path, name: str) -> ResolvedConfig:
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json there")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return ResolvedConfig(name, _config_from_dict(data, str(path)), str(path))


def resolve_config(name_or_path: str) -> ResolvedConfig:
    """The config of `name_or_path` (see the module docstring for the order); no weights are read."""
    from golden_fast.models import TINY_NAMES, ZOO, build_tiny, cache_dir

    ref = str(name_or_path)
    path = Path(ref).expanduser()
    if path.exists():
        label = path.parent.name if path.is_file() and path.name == "config.json" else path.stem
        return _from_file(path, label or ref)
    if ref in TINY_NAMES:
        model, _ = build_tiny(ref)
        return ResolvedConfig(ref, model.config, f"tiny:{ref}")
    shipped = PRESET_CONFIG_DIR / f"{ref}.json"
    if ref in ZOO:
        cached = cache_dir(ref) / "config.json"
        if cached.is_file():
            return _from_file(cached, ref)
        if not shipped.is_file():
            raise FileNotFoundError(
                f"zoo model {ref!r} is not fetched, so its config.json is not in the cache "
                f"({cached}); run `golden-fast models fetch {ref}` or give a config.json path"
            )
    if shipped.is_file():
        return _from_file(shipped, ref)
    try:
        from transformers import AutoConfig

        return ResolvedConfig(ref, AutoConfig.from_pretrained(ref), f"hub:{ref}")
    except Exception as exc:  # offline, unknown id, ...
        raise FileNotFoundError(
            f"no config for {ref!r}: not a path, a tiny or zoo model, a shipped preset "
            f"({', '.join(preset_config_names())}) or a Hugging Face id in the local cache ({exc})"
        ) from None


def text_config(config: Any) -> Any:
    """The language model's config (a multimodal config's text_config; the config itself otherwise)."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def build_meta_model(config: Any, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The causal LM of `config` on the meta device, parameters in `dtype`: shapes only, no memory."""
    from transformers import AutoModelForCausalLM

    cfg = text_config(config)
    logging.getLogger("transformers").setLevel(logging.ERROR)  # generation-config chatter
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def _norm_kind(module: nn.Module) -> str | None:
    name = type(module).__name__
    if isinstance(module, nn.LayerNorm) or name.endswith("LayerNorm") and not name.endswith("RMSNorm"):
        return "layer"
    if "RMSNorm" in name or name.endswith("Norm"):
        return "rms"
    return None


@dataclasses.dataclass(frozen=True)
class Arch:
    """The numbers the memory formulas read (golden_fast/plan/memory.py), all from the config and
    the meta model. q = n_heads * head_dim, kv = n_kv_heads * head_dim."""

    name: str
    model_class: str
    model_type: str
    family: str  # the golden-fast adapter family
    n_layers: int  # L
    d: int  # hidden size (down-projection output)
    m: int  # down-projection input (the key width)
    vocab: int  # V
    n_heads: int  # h
    n_kv_heads: int  # h_kv
    head_dim: int  # d_h
    norm: str  # "rms" | "layer"
    norms_per_layer: int  # block norms (Llama 2, Gemma-3 4, GPT-2 2)
    qk_norm: bool  # per-head q / k norms (Gemma-3)
    gated: bool  # gate * up MLP
    activation: str
    act_saved: int  # tensors of width m the activation keeps for backward
    max_positions: int | None
    n_params: int  # parameters (tied ones once)
    buffer_bytes: int  # buffers, as built in float32 (RoPE tables, Gemma's embedding scale)
    tied_embeddings: bool
    no_split: tuple[str, ...]  # decoder block classes (never split across devices)

    @property
    def q(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv(self) -> int:
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["no_split"] = list(self.no_split)
        return d


def architecture(name: str, config: Any, model: nn.Module | None = None) -> Arch:
    """`Arch` of `config`, from the meta model (built here when not given)."""
    from golden_fast.models import get_adapter

    cfg = text_config(config)
    model = build_meta_model(cfg) if model is None else model
    adapter = get_adapter(model)
    L, d, m = adapter.n_layers, adapter.d_model, adapter.d_ff
    h = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    if not h:
        raise ValueError(f"{name}: the config names no attention head count")
    h_kv = getattr(cfg, "num_key_value_heads", None) or h
    d_h = getattr(cfg, "head_dim", None) or d // h
    block = adapter.block(0)
    norms, kind, qk = 0, None, False
    for path, mod in block.named_modules():
        k = _norm_kind(mod) if path else None
        if k is None:
            continue
        if path.rsplit(".", 1)[-1] in ("q_norm", "k_norm"):
            qk = True
            continue
        norms += 1
        kind = kind or k
    mlp = adapter.mlp(0)
    gated = any(hasattr(mlp, a) for a in ("gate_proj", "w1", "gate_up_proj"))
    act = str(
        getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None)
        or getattr(cfg, "activation_function", None) or "unknown"
    )
    ctx = None
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            ctx = v
            break
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    vocab = int(getattr(cfg, "vocab_size", 0) or adapter.lm_head().weight.shape[0])
    return Arch(
        name=name,
        model_class=type(model).__name__,
        model_type=str(getattr(cfg, "model_type", "")),
        family=adapter.family,
        n_layers=L,
        d=d,
        m=m,
        vocab=vocab,
        n_heads=int(h),
        n_kv_heads=int(h_kv),
        head_dim=int(d_h),
        norm=kind or "rms",
        norms_per_layer=norms,
        qk_norm=qk,
        gated=gated,
        activation=act,
        act_saved=_ACT_SAVED.get(act, 1),
        max_positions=ctx,
        n_params=int(params),
        buffer_bytes=int(buffers),
        tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        no_split=tuple(sorted(getattr(model, "_no_split_modules", None) or ())),
    )
