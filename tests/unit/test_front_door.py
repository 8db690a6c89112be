"""The top-level API: `from golden_fast import load_model, locate, Editor, evaluate, EditRequest` gives the
documented functions and classes, also after the same-named subpackages were imported."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import golden_fast


def _check_front_door(ns: dict) -> None:
    from golden_fast.data.request import EditRequest
    from golden_fast.edit.editor import Editor
    from golden_fast.evaluate.api import evaluate
    from golden_fast.locate.api import locate
    from golden_fast.models.zoo import load_model

    assert ns["load_model"] is load_model and inspect.isfunction(ns["load_model"])
    assert ns["locate"] is locate and inspect.isfunction(ns["locate"])
    assert ns["evaluate"] is evaluate and inspect.isfunction(ns["evaluate"])
    assert ns["Editor"] is Editor and inspect.isclass(ns["Editor"])
    assert ns["EditRequest"] is EditRequest and inspect.isclass(ns["EditRequest"])


def test_front_door_names_are_the_documented_objects() -> None:
    from golden_fast import Editor, EditRequest, evaluate, load_model, locate

    _check_front_door(dict(load_model=load_model, locate=locate, Editor=Editor, evaluate=evaluate,
                           EditRequest=EditRequest))


def test_front_door_survives_importing_the_subpackages() -> None:
    importlib.import_module("golden_fast.evaluate")
    importlib.import_module("golden_fast.locate")
    import golden_fast.evaluate.report  # noqa: F401  (a submodule of the subpackage, too)
    import golden_fast.locate.lga  # noqa: F401
    from golden_fast import Editor, EditRequest, evaluate, load_model, locate

    _check_front_door(dict(load_model=load_model, locate=locate, Editor=Editor, evaluate=evaluate,
                           EditRequest=EditRequest))
    assert golden_fast.evaluate is evaluate and golden_fast.locate is locate
    # the subpackages stay importable by name
    assert sys.modules["golden_fast.evaluate"].evaluate is evaluate
    from golden_fast.evaluate import EvalReport  # noqa: F401


def test_front_door_in_a_fresh_interpreter_subpackage_first() -> None:
    """The order that used to lose: the subpackage imported before the name is asked for."""
    code = (
        "import inspect, golden_fast.evaluate, golden_fast.locate\n"
        "from golden_fast import load_model, locate, Editor, evaluate, EditRequest\n"
        "assert inspect.isfunction(evaluate) and evaluate.__module__ == 'golden_fast.evaluate.api', evaluate\n"
        "assert inspect.isfunction(locate) and locate.__module__ == 'golden_fast.locate.api', locate\n"
        "assert inspect.isclass(Editor) and inspect.isclass(EditRequest) and inspect.isfunction(load_model)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_all_lists_only_what_exists() -> None:
    for name in golden_fast.__all__:
        assert getattr(golden_fast, name) is not None, name
    assert set(dir(golden_fast)) >= {"load_model", "locate", "Editor", "evaluate", "EditRequest"}
