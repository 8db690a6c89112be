"""Editors are plug-ins: one registry that the Editor, the CLI, the experiment and `run` read.

A toy editor registered here (its own config, its own run function) must be usable through
`Editor`, be offered by `golden-fast edit --method` and `golden-fast locate --editor`, and be
accepted by the experiment's editor settings, without any list elsewhere being touched."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from golden_fast.cli import build_parser
from golden_fast.edit import Editor
from golden_fast.edit.common import RequestTrace
from golden_fast.edit.registry import EditorSpec, editor_names, get_editor, register, unregister
from golden_fast.experiment.config import ExperimentConfig, editor_choices
from golden_fast.models import build_tiny, get_adapter


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    layers: tuple[int, ...] = (1,)
    scale: float = 1e-3
    method = "toy-shift"


def _toy_run(model, tok, requests, hparams, stats, apply, progress=True):
    """Adds scale * e_0 e_0ᵀ to the down-projection once per request: a known, checkable update."""
    adapter = get_adapter(model)
    d, m = adapter.down_weight(hparams.layers[0]).shape
    traces = []
    for i, _ in enumerate(requests):
        u = torch.zeros(d, 1)
        v = torch.zeros(m, 1)
        u[0, 0], v[0, 0] = hparams.scale, 1.0
        apply(hparams.layers[0], u, v)
        traces.append(RequestTrace(index=i, update_norm=hparams.scale))
    return traces


@pytest.fixture
def toy_editor():
    spec = register(EditorSpec(name="toy-shift", config=ToyConfig, run=_toy_run, default_mode="sequential",
                               targets="none", single=False, uses_moments=False, description="test editor"))
    try:
        yield spec
    finally:
        unregister("toy-shift")


def _request():
    return dict(prompt="The capital of {} is", subject="France", target_new="Rome", ground_truth="Paris")


def test_builtin_editors_are_registered_in_order():
    names = editor_names()
    assert names[:4] == ("rome", "r-rome", "memit", "emmet")
    assert get_editor("R_ROME").name == "r-rome" and get_editor("rrome").name == "r-rome"
    assert get_editor("rome").single and not get_editor("emmet").single
    assert get_editor("memit").native_batch and get_editor("emmet").targets == "z"
    assert get_editor("r-rome").targets == "v*" and get_editor("r-rome").default_mode == "sequential"
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from rome, r-rome, memit, emmet"):
        get_editor("nope")


def test_toy_editor_edits_through_editor(toy_editor):
    model, tok = build_tiny("tiny-llama")
    W0 = get_adapter(model).down_weight(1).detach().clone()
    ed = Editor(model, tok, method="toy-shift")
    assert ed.method == "toy-shift" and ed.layers == [1] and isinstance(ed.hparams, ToyConfig)
    res = ed.edit([_request(), _request()])
    assert res.mode == "sequential"  # the spec's default mode
    W = get_adapter(model).down_weight(1).detach()
    expected = W0.clone()
    expected[0, 0] += 2e-3
    assert torch.allclose(W, expected, atol=1e-7, rtol=0)
    res.revert()
    assert torch.equal(get_adapter(model).down_weight(1).detach(), W0)
    # overrides reach the plug-in's own config
    ed = Editor(model, tok, method="toy-shift", hparams={"scale": 0.5}, layers=2)
    assert ed.hparams == ToyConfig(layers=(2,), scale=0.5)


def test_toy_editor_is_offered_by_the_cli_and_the_experiment(toy_editor):
    parser = build_parser()
    args = parser.parse_args(["edit", "--model", "tiny-llama", "--method", "toy-shift", "--data", "x.json",
                              "--save-journal", "j"])
    assert args.method == "toy-shift"
    args = parser.parse_args(["locate", "--model", "tiny-llama", "--data", "x.json", "--method", "brute",
                              "--editor", "toy-shift"])
    assert args.editor == "toy-shift"
    assert "toy-shift" in editor_choices()
    assert "toy-shift" not in editor_choices(single=True)
    config = ExperimentConfig(model="tiny-llama", data="builtin", editors=("r-rome", "toy-shift"),
                              batch_methods=("toy-shift",))
    assert "toy-shift" in config.editors
    with pytest.raises(ValueError, match="sequential_methods"):
        ExperimentConfig(model="tiny-llama", data="builtin", sequential_methods=("toy-shift",))


def test_toy_editor_is_gone_after_unregister():
    assert "toy-shift" not in editor_names()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["edit", "--model", "tiny-llama", "--method", "toy-shift", "--data", "x",
                                   "--save-journal", "j"])


def test_registry_refuses_bad_specs():
    with pytest.raises(ValueError, match="lower case"):
        EditorSpec(name="Toy", config=ToyConfig, run=_toy_run)
    with pytest.raises(ValueError, match="targets"):
        EditorSpec(name="toy", config=ToyConfig, run=_toy_run, targets="w")

    @dataclasses.dataclass
    class NoLayers:
        scale: float = 1.0

    with pytest.raises(TypeError, match="no `layers`"):
        EditorSpec(name="toy", config=NoLayers, run=_toy_run)
    with pytest.raises(ValueError, match="registered already"):
        register(EditorSpec(name="rome", config=ToyConfig, run=_toy_run))
    with pytest.raises(ValueError, match="taken by 'r-rome'"):
        register(EditorSpec(name="toy", config=ToyConfig, run=_toy_run, aliases=("rrome",)))
    assert "toy" not in editor_names()


def test_shared_overrides_skip_what_an_editor_lacks():
    """A study's settings reach every editor that has them; a plain dict naming an unknown field is an error."""
    from golden_fast.edit import SharedOverrides

    model, tok = build_tiny("tiny-llama")
    shared = SharedOverrides(mom2_n_samples=7, v_num_grad_steps=3, lr=1e-3)
    ed = Editor(model, tok, "ultraedit", layers=[1], hparams=shared)
    assert ed.hparams.lr == 1e-3 and not hasattr(ed.hparams, "mom2_n_samples")
    ed = Editor(model, tok, "r-rome", layers=[1], hparams=SharedOverrides(mom2_n_samples=7, v_num_grad_steps=3))
    assert ed.hparams.mom2_n_samples == 7 and ed.hparams.v_num_grad_steps == 3
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        Editor(model, tok, "ultraedit", layers=[1], hparams={"mom2_n_samples": 7})
