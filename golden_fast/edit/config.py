"""Hyperparameters of the editors, as frozen dataclasses.

Field names match EasyEdit's where they mean the same thing, so a user can carry a
setting across (layers, v_num_grad_steps, v_lr, v_loss_layer, v_weight_decay,
clamp_norm_factor, kl_factor, mom2_adjustment, mom2_n_samples, mom2_update_weight,
emmet_lambda, update_norm_lambda, context_template_length_params). Presets per model live
in golden_fast/presets/<model>.yaml; `load_hparams` reads YAML or JSON.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class ROMEConfig:
    """Args:
    layers: the layer edited (ROME edits one; a list of one int).
    v_num_grad_steps, v_lr: Adam steps and learning rate of the v* optimisation.
    v_loss_layer: layer whose output the loss reads; None = the last (the model's logits).
    v_weight_decay: weight of ||delta||^2 / ||v_init||^2 in the loss.
    clamp_norm_factor: delta is projected into ||delta|| <= factor * ||v_init|| after each step.
    kl_factor: weight of KL(p_orig || p_edit) on "{subject} is a" (essence drift).
    nll_stop: early stop once the target NLL falls below this (ROME: 0.05).
    mom2_adjustment: use C^-1 (True) or the identity (False) in the update.
    mom2_dataset, mom2_n_samples, mom2_dtype: corpus, token count and precision of C.
    context_template_length_params: [[length, count], ...] of the sampled context prefixes.
    """

    layers: tuple[int, ...] = (5,)
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_loss_layer: int | None = None
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 4.0
    kl_factor: float = 0.0625
    nll_stop: float = 0.05
    mom2_adjustment: bool = True
    mom2_dataset: str = "model-sampled"
    # Ours: texts of the corpus. ROME read 100,000 Wikipedia texts; the offline default corpus
    # is sampled from the model, where 2,000 texts of 128 tokens is what a laptop does in minutes.
    mom2_n_samples: int = 2_000
    mom2_dtype: str = "float32"
    context_template_length_params: tuple[tuple[int, int], ...] = ((5, 10), (10, 10))
    # Ours: reuse the key/value cache of the tokens before the subject and run only layers
    # >= l per step (golden_fast/edit/values.py). False recomputes every token of every layer
    # (the anchors' way); both compute the same thing.
    prefix_reuse: bool = True

    method = "rome"

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(x) for x in _as_list(self.layers)))
        object.__setattr__(
            self, "context_template_length_params",
            tuple((int(a), int(b)) for a, b in self.context_template_length_params),
        )
        if not self.layers:
            raise ValueError("layers: at least one layer is needed")
        if self.v_num_grad_steps < 1:
            raise ValueError(f"v_num_grad_steps must be >= 1, got {self.v_num_grad_steps}")
        for name in ("v_lr", "clamp_norm_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("v_weight_decay", "kl_factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.mom2_dtype not in ("float32", "float64"):
            raise ValueError(f"mom2_dtype must be float32 or float64, got {self.mom2_dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method"] = self.method
        return d


@dataclasses.dataclass(frozen=True)
class RROMEConfig(ROMEConfig):
    """R-ROME (Gupta et al. 2024): ROME with the template-averaged key k* in both places."""

    method = "r-rome"


@dataclasses.dataclass(frozen=True)
class MEMITConfig(ROMEConfig):
    """Args (beyond ROMEConfig's):
    layers: the edited layers l_1 < ... < l_L; targets z are optimised at the last one.
    mom2_update_weight: lambda in Delta = R K^T (lambda C + update_norm_lambda I + K K^T)^-1.
    update_norm_lambda: norm control, a Frobenius-norm penalty on each update (ENCORE's norm
        constraint, Gupta et al. 2025): the ridge it adds keeps the accumulated update of a long
        sequential run from growing until the model collapses. 0 is MEMIT's own update.
    """

    layers: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    v_weight_decay: float = 1e-3
    clamp_norm_factor: float = 0.75
    mom2_update_weight: float = 15000.0
    update_norm_lambda: float = 0.0
    # MEMIT's own context templates: the bare prompt and 5 prefixes of 10 tokens (ROME samples 20);
    # a quarter of the rows per z step, which matters at thousands of facts
    context_template_length_params: tuple[tuple[int, int], ...] = ((10, 5),)

    method = "memit"


@dataclasses.dataclass(frozen=True)
class EMMETConfig(MEMITConfig):
    """Args (beyond MEMITConfig's):
    emmet_lambda: ridge added to D = K^T C0^-1 K when a batch has more than one edit.
    update_norm_lambda: ridge added to C0 = lambda C (norm control, as MEMIT's).
    """

    emmet_lambda: float = 0.1

    method = "emmet"


PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def make_config(method: str, values: dict[str, Any] | None = None) -> Any:
    """Build the config of `method` (a registered editor) from a dict; unknown keys are an error
    naming them."""
    from golden_fast.edit.registry import get_editor

    spec = get_editor(method)
    method, cls = spec.name, spec.config
    values = dict(values or {})
    values.pop("method", None)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{method} hyperparameters: unknown field(s) {unknown}; known: {sorted(fields)}")
    return cls(**values)


def load_hparams(path: str | Path, method: str | None = None) -> Any:
    """Read a YAML/JSON file: either one method's fields (with a "method" key or `method=`),
    or a preset file with one section per method."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hyperparameters")
    if method is not None and method in data and isinstance(data[method], dict):
        return make_config(method, data[method])
    method = method or data.get("method")
    if method is None:
        raise ValueError(f"{path}: say which method these are for (a 'method' key or the method argument)")
    return make_config(method, data)


def preset(method: str, model_name: str | None) -> Any:
    """The preset for (method, model) from golden_fast/presets, else the method's defaults."""
    from golden_fast.edit.registry import get_editor

    method = get_editor(method).name
    if model_name:
        f = PRESET_DIR / f"{model_name}.yaml"
        if f.is_file():
            import yaml

            data = yaml.safe_load(f.read_text()) or {}
            if method in data:
                return make_config(method, data[method])
    return make_config(method, {})


def hparams_record(hp: Any, with_layers: bool = False) -> dict[str, Any]:
    """An editor's resolved hyperparameters as plain JSON values, for a results folder's meta.json
    (layers left out unless `with_layers`: a part that sets the layer itself records it apart)."""
    d = hp.to_dict() if hasattr(hp, "to_dict") else dataclasses.asdict(hp)
    if not with_layers:
        d.pop("layers", None)
    return json.loads(json.dumps(d, default=str))
