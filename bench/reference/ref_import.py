"""Import the few EasyEdit modules the comparison needs from a local checkout, contained.

EasyEdit's package `__init__` files import every editor it has (`easyeditor/__init__.py` ->
`models/__init__.py` -> MELO, GRACE, WISE, ... -> peft, torchvision, openai, sklearn, nltk,
...), none of which this comparison uses, several of which are not installed here, and one of
which (openai) is a network client. So nothing of EasyEdit is imported through its package:

1. For the duration of `load_easyedit`, `sys.modules` gets
   * *bare package shells* for `easyeditor`, `easyeditor.models`, `easyeditor.evaluate`: module
     objects whose `__path__` points into the checkout, so `easyeditor.models.rome.rome_main` and
     its relative imports resolve to the checkout's files, while the shells' own `__init__.py`
     (the package-wide imports) never run;
   * *stubs* for what the needed modules import but never call in the code paths used here:
     `easyeditor.trainer` (evaluate_utils does `from ..trainer import *`), `easyeditor.models.melo.melo`
     (evaluate.py only tests `isinstance(model, LORA)`), and the third-party `datasets`, `nltk`,
     `sklearn.metrics`, `openai`, `matplotlib.style` (compute_v imports `context` and never uses it).
     Each stub raises a clear error if the comparison ever does reach it.
2. The needed modules are imported (`importlib.import_module`, i.e. from the checkout's files,
   unmodified).
3. On exit `sys.modules` is put back exactly as it was: every `easyeditor*` entry and every stub
   is removed, and any real module a stub shadowed is restored. The loaded module objects stay
   alive through the returned `EasyEdit` handle (their functions keep their globals), so later
   code of this process, golden-fast included, never sees EasyEdit or a stub by import.

No EasyEdit file is copied or modified. The modules keep some global state (context-template
and covariance caches, AlphaEdit's P and cache_c); `EasyEdit.reset()` clears it between runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.machinery
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

ENV = "EASYEDIT_DIR"

#: what `load_easyedit` imports: handle attribute -> module path inside the checkout
MODULES = {
    "rome_main": "easyeditor.models.rome.rome_main",
    "rome_u": "easyeditor.models.rome.compute_u",
    "rome_hparams": "easyeditor.models.rome.rome_hparams",
    "repr_tools": "easyeditor.models.rome.repr_tools",
    "layer_stats": "easyeditor.models.rome.layer_stats",
    "r_rome_main": "easyeditor.models.r_rome.r_rome_main",
    "r_rome_u": "easyeditor.models.r_rome.compute_u",
    "r_rome_hparams": "easyeditor.models.r_rome.r_rome_hparams",
    "memit_main": "easyeditor.models.memit.memit_main",
    "memit_hparams": "easyeditor.models.memit.memit_hparams",
    "emmet_main": "easyeditor.models.emmet.emmet_main",
    "emmet_hparams": "easyeditor.models.emmet.emmet_hparams",
    "alphaedit_main": "easyeditor.models.alphaedit.AlphaEdit_main",
    "alphaedit_hparams": "easyeditor.models.alphaedit.AlphaEdit_hparams",
    "evaluate": "easyeditor.evaluate.evaluate",
    "evaluate_utils": "easyeditor.evaluate.evaluate_utils",
}

#: which of MODULES each method / part needs
NEEDS = {
    "rome": ("rome_main", "rome_u", "rome_hparams", "repr_tools"),
    "r-rome": ("r_rome_main", "r_rome_u", "r_rome_hparams", "repr_tools"),
    "memit": ("memit_main", "memit_hparams"),
    "emmet": ("emmet_main", "emmet_hparams"),
    "alphaedit": ("alphaedit_main", "alphaedit_hparams"),
    "stats": ("layer_stats",),
    "eval": ("evaluate", "evaluate_utils", "rome_hparams"),
}


def modules_for(names) -> dict[str, str]:
    """The MODULES entries that the methods / parts in `names` need."""
    keys = []
    for n in names:
        keys += [k for k in NEEDS[n] if k not in keys]
    return {k: MODULES[k] for k in keys}


#: packages whose __init__ must not run: (module name, folder inside the checkout)
SHELLS = (
    ("easyeditor", "easyeditor"),
    ("easyeditor.models", "easyeditor/models"),
    ("easyeditor.evaluate", "easyeditor/evaluate"),
    ("easyeditor.models.melo", "easyeditor/models/melo"),
)

#: third-party modules the needed files import at module level but the comparison never calls
THIRD_PARTY_STUBS = ("datasets", "nltk", "sklearn", "sklearn.metrics", "openai", "matplotlib", "matplotlib.style")


#: (module, attribute) of installed dependencies to import before the stub window
PRELOAD = (
    ("transformers", "T5ForConditionalGeneration"),
    ("transformers", "AutoModelForCausalLM"),
    ("scipy", "__name__"),
)


class EasyEditUnavailable(RuntimeError):
    """No usable EasyEdit checkout: the message says what is missing and how to get one."""


def _unreachable(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(
            f"{what} was stubbed by bench/reference/ref_import.py (not needed by the comparison, "
            "and kept off the import path); this code path was not expected to run"
        )

    return fail


def _stub_modules() -> dict[str, types.ModuleType]:
    stubs: dict[str, types.ModuleType] = {}

    def mod(name: str, **attrs) -> types.ModuleType:
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__dict__.update(attrs)
        m.__reference_stub__ = True
        stubs[name] = m
        return m

    # `datasets.load_dataset` is what EasyEdit's layer_stats reads its corpus with; the harness
    # replaces layer_stats' global of that name with a feeder of local texts (ref_easyedit.feed_texts)
    mod("datasets", load_dataset=_unreachable("datasets.load_dataset (EasyEdit's Hugging Face corpus)"))
    mod("nltk")
    sk = mod("sklearn")
    sk.metrics = mod("sklearn.metrics", f1_score=_unreachable("sklearn.metrics.f1_score"))
    mod("openai", OpenAI=_unreachable("openai.OpenAI"))
    mpl = mod("matplotlib")
    mpl.style = mod("matplotlib.style", context=_unreachable("matplotlib.style.context"))
    # EasyEdit-internal modules the needed files import but do not use here
    mod("easyeditor.trainer", __all__=[])
    mod("easyeditor.models.melo.melo", LORA=type("LORA", (), {}))  # evaluate.py: isinstance checks only
    return stubs


@dataclasses.dataclass
class EasyEdit:
    """Handle on the loaded EasyEdit modules (attributes named as in MODULES) and where they came from."""

    root: Path
    commit: str
    modules: dict[str, types.ModuleType]

    def __getattr__(self, name: str):
        mods = self.__dict__.get("modules") or {}
        if name in mods:
            return mods[name]
        raise AttributeError(name)

    def reset(self) -> None:
        """Clear EasyEdit's module-level caches (templates, covariances, inverse covariances,
        AlphaEdit's projection and lifelong cache), so one run cannot leak into the next."""
        m = self.modules
        for key in ("rome_main", "r_rome_main", "memit_main", "emmet_main", "alphaedit_main"):
            if key in m:
                m[key].CONTEXT_TEMPLATES_CACHE = None
        for key in ("memit_main", "emmet_main", "alphaedit_main"):
            if key in m:
                m[key].COV_CACHE.clear()
        for key in ("rome_u", "r_rome_u"):
            if key in m:
                m[key].inv_mom2_cache.clear()
        if "alphaedit_main" in m:
            a = m["alphaedit_main"]
            a.P_loaded = False
            a.cache_c_new = False
            for name in ("P", "cache_c"):
                a.__dict__.pop(name, None)


def checkout_dir(path: str | os.PathLike | None = None) -> Path:
    """The EasyEdit checkout: `path`, else $EASYEDIT_DIR; EasyEditUnavailable when neither names one."""
    raw = path if path is not None else os.environ.get(ENV)
    if not raw:
        raise EasyEditUnavailable(
            f"no EasyEdit checkout given: pass --easyedit DIR or set {ENV} "
            "(see bench/reference/README.md for the clone and the commit used)"
        )
    root = Path(raw).expanduser().resolve()
    if not (root / "easyeditor" / "models" / "rome" / "rome_main.py").is_file():
        raise EasyEditUnavailable(f"{root} is not an EasyEdit checkout (no easyeditor/models/rome/rome_main.py)")
    return root


def checkout_commit(root: Path) -> str:
    """The checkout's commit (read-only `git rev-parse`), "unknown" when it is not a git work tree."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def contained_import_path(root: Path) -> Iterator[None]:
    """sys.modules with EasyEdit's package shells and the stubs, put back exactly on exit."""
    before = dict(sys.modules)
    path_before = list(sys.path)
    try:
        for name, folder in SHELLS:
            shell = types.ModuleType(name)
            shell.__path__ = [str(root / folder)]
            shell.__package__ = name
            shell.__reference_shell__ = True
            sys.modules[name] = shell
        for name, stub in _stub_modules().items():
            sys.modules[name] = stub
        yield
    finally:
        for name in list(sys.modules):
            if name not in before:
                del sys.modules[name]
        for name, module in before.items():
            if sys.modules.get(name) is not module:
                sys.modules[name] = module
        sys.path[:] = path_before


def preload() -> None:
    """Import the installed third-party dependencies of the needed files normally, before the stub
    window: their own import-time scans (torch._dynamo probes installed packages) must never meet a
    stub. These are real modules and stay imported, as any import would."""
    for name, attr in PRELOAD:
        getattr(importlib.import_module(name), attr)


def load_easyedit(path: str | os.PathLike | None = None, modules: dict[str, str] | None = None) -> EasyEdit:
    """Import the comparison's EasyEdit modules from the checkout at `path` (or $EASYEDIT_DIR)
    without running EasyEdit's package imports; see the module docstring."""
    root = checkout_dir(path)
    leaked = sorted(n for n in sys.modules if n == "easyeditor" or n.startswith("easyeditor."))
    if leaked:
        raise RuntimeError(f"easyeditor is already imported in this process ({leaked[:3]}...); refusing to mix")
    preload()
    loaded: dict[str, types.ModuleType] = {}
    with contained_import_path(root):
        for key, name in (modules or MODULES).items():
            try:
                loaded[key] = importlib.import_module(name)
            except ImportError as exc:
                raise EasyEditUnavailable(f"{root}: cannot import {name}: {exc}") from exc
    return EasyEdit(root=root, commit=checkout_commit(root), modules=loaded)
