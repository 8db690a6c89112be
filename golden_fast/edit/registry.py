"""The editor registry: every editing method is a plug-in, found here by name.

An editor is one module that calls `register(EditorSpec(...))` when imported: its name, its
hyperparameter dataclass (EasyEdit's field names), how it runs, and the facts the rest of the
engine needs about it (default mode, whether its batch is native, which optimised targets it
needs). The `Editor`, the CLI's `--method` choices, the presets, the experiment and
`golden-fast run` all read this registry, so adding an editor touches no list elsewhere.

Where editors come from:
- every module of the package `golden_fast.edit.methods` (the built-in editors, one file each);
- the entry points of group ``golden_fast.editors`` of installed distributions (third-party
  editors: the entry point names a module that registers on import);
- `register` called directly (a notebook, a test).

The run function has the signature
``run(model, tok, requests, hparams, stats, apply, progress=True) -> list[RequestTrace]``:
it must call ``apply(layer, U (d, n), V (m, n))`` (W_layer += U Vᵀ) for every update and return
one trace per request. A native-batch editor's applies act at once (a later layer's keys see the
earlier layer's update); the others' are deferred to the end of the call by the `Editor`.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

__all__ = [
    "ENTRY_POINT_GROUP",
    "TARGETS",
    "EditorSpec",
    "editor_names",
    "get_editor",
    "normalise_name",
    "register",
    "unregister",
]

ENTRY_POINT_GROUP = "golden_fast.editors"
#: what an editor optimises before its closed form: v* (ROME-style, at the edited layer's output
#: and the template-averaged key), z (MEMIT-style, the residual at the last edited layer) or
#: nothing (optimisation-free editors). Editors needing the same kind can share a target cache.
TARGETS = ("v*", "z", "none")
MODES = ("sequential", "batch")

RunFn = Callable[..., list]


@dataclasses.dataclass(frozen=True)
class EditorSpec:
    """One editing method.

    Args:
        name: the method's name ("r-rome", "emmet", ...), lower case.
        config: its hyperparameter dataclass; instances carry `layers` and a `method` class
            attribute equal to `name`.
        run: the function that computes and applies the updates (see the module docstring).
        default_mode: "sequential" (one request after another) or "batch" (all at once).
        native_batch: True when a batch is solved jointly and applied layer by layer while
            computing (MEMIT-style); False when each request's update is independent and the
            `Editor` may defer and merge the applies.
        targets: the optimised targets it needs: one of TARGETS.
        single: True when every request gets one rank-one update at one layer, computed from the
            weights before it (ROME-style): `Editor.edit_each` can then compute a group's targets
            in one batched pass, and experiments judge it fact by fact.
        stateful: True when it keeps state across calls (a lifelong editor): `run` then takes a
            `state` keyword, a dict of tensors it reads and replaces (never mutates in place); the
            `Editor` keeps it, restores it when an edit fails, and saves it with the journal.
        uses_moments: True when it reads the keys' second moments C (the `Editor` then hands it one
            shared `Moments` built from the config's mom2_* fields); False passes `stats` as given.
        aliases: other spellings accepted for the name.
        description: one line for `--help` and listings.
        order: where it is listed (lower first; ties in registration order).
    """

    name: str
    config: type
    run: RunFn
    default_mode: str = "batch"
    native_batch: bool = False
    targets: str = "none"
    single: bool = False
    uses_moments: bool = True
    stateful: bool = False
    aliases: tuple[str, ...] = ()
    description: str = ""
    order: int = 100

    def __post_init__(self) -> None:
        if self.name != normalise_name(self.name):
            raise ValueError(f"editor name {self.name!r} must be lower case with '-' "
                             f"(try {normalise_name(self.name)!r})")
        if self.default_mode not in MODES:
            raise ValueError(f"editor {self.name!r}: default_mode must be one of {MODES}, got {self.default_mode!r}")
        if self.targets not in TARGETS:
            raise ValueError(f"editor {self.name!r}: targets must be one of {TARGETS}, got {self.targets!r}")
        if not dataclasses.is_dataclass(self.config):
            raise TypeError(f"editor {self.name!r}: config must be a dataclass type, got {self.config!r}")
        if "layers" not in {f.name for f in dataclasses.fields(self.config)}:
            raise TypeError(f"editor {self.name!r}: its config {self.config.__name__} has no `layers` field")
        if not callable(self.run):
            raise TypeError(f"editor {self.name!r}: run must be callable")


_REGISTRY: dict[str, EditorSpec] = {}
_ALIASES: dict[str, str] = {}
_discovered = False


def normalise_name(name: str) -> str:
    """'R_ROME' -> 'r-rome': lower case, '_' as '-'."""
    return name.strip().lower().replace("_", "-")


def register(spec: EditorSpec, *, replace: bool = False) -> EditorSpec:
    """Add an editor. A second editor of the same name is an error unless `replace`."""
    names = (spec.name, *(normalise_name(a) for a in spec.aliases))
    for n in names:
        owner = _REGISTRY.get(n) or _REGISTRY.get(_ALIASES.get(n, ""))
        if owner is not None and owner.name != spec.name:
            raise ValueError(f"editor name {n!r} is taken by {owner.name!r}")
    if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"an editor named {spec.name!r} is registered already (pass replace=True to swap it)")
    _REGISTRY[spec.name] = spec
    for a in spec.aliases:
        _ALIASES[normalise_name(a)] = spec.name
    return spec


def unregister(name: str) -> None:
    """Remove an editor (and its aliases); unknown names are an error."""
    spec = get_editor(name)
    del _REGISTRY[spec.name]
    for a in [a for a, n in _ALIASES.items() if n == spec.name]:
        del _ALIASES[a]


def _discover() -> None:
    """Import the built-in editors and the installed plug-ins, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    pkg = importlib.import_module("golden_fast.edit.methods")
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    for ep in _entry_points():
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not take the built-in editors down
            import warnings

            warnings.warn(f"editor plug-in {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                          stacklevel=2)


def _entry_points() -> Iterable[Any]:
    try:
        return metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken distribution's metadata: no plug-ins rather than no editors
        return ()


def editor_names() -> tuple[str, ...]:
    """Every registered editor's name, built-ins first in a stable order."""
    _discover()
    position = {name: i for i, name in enumerate(_REGISTRY)}
    return tuple(sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].order, position[n])))


def get_editor(name: str) -> EditorSpec:
    """The editor called `name` (or one of its aliases); an error listing the known ones otherwise."""
    _discover()
    if not isinstance(name, str):
        raise TypeError(f"an editor name must be a string, got {type(name).__name__}")
    key = normalise_name(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(editor_names())}")
    return _REGISTRY[key]
