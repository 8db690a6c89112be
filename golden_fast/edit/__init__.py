"""Knowledge editing: every registered editor (ROME, R-ROME, MEMIT, EMMET and plug-ins) behind one
`Editor`, every update recorded in an `EditJournal` that can be saved, replayed on a fresh model
(`apply_journal`) and reverted bitwise. Editors are plug-ins: one module each in
`golden_fast/edit/methods/`, registered in `golden_fast.edit.registry` (`editor_names()`,
`get_editor(name)`, `register(EditorSpec(...))`).

    from golden_fast.edit import Editor
    ed = Editor(model, tok, "r-rome", layers=5)
    result = ed.edit(requests, mode="sequential")   # or mode="batch": see Editor.edit
    result.journal.save("edits/run1")
    ed.revert()

The journal and the Editor are imported eagerly (they are light); the editors' modules only when
one of their names is asked for, so `import golden_fast.edit` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from golden_fast.edit.editor import EditError, Editor, EditResult, MethodFn, SharedOverrides
from golden_fast.edit.journal import (
    EditJournal,
    JournalEntry,
    JournalMismatchError,
    LayerRecord,
    apply_journal,
    revert_journals,
    weight_sha256,
)

# name -> module of the editing mathematics, resolved on first access (see __getattr__)
_LAZY = {
    "ApplyFn": "golden_fast.edit.common",
    "RequestTrace": "golden_fast.edit.common",
    "run_method": "golden_fast.edit.base",
    "default_hparams": "golden_fast.edit.base",
    "ROMEConfig": "golden_fast.edit.config",
    "RROMEConfig": "golden_fast.edit.config",
    "MEMITConfig": "golden_fast.edit.config",
    "EMMETConfig": "golden_fast.edit.config",
    "EditorSpec": "golden_fast.edit.registry",
    "editor_names": "golden_fast.edit.registry",
    "get_editor": "golden_fast.edit.registry",
    "register": "golden_fast.edit.registry",
    "load_hparams": "golden_fast.edit.config",
    "make_config": "golden_fast.edit.config",
}

__all__ = [
    "EMMETConfig",
    "MEMITConfig",
    "ROMEConfig",
    "RROMEConfig",
    "ApplyFn",
    "EditError",
    "EditJournal",
    "EditResult",
    "Editor",
    "EditorSpec",
    "JournalEntry",
    "JournalMismatchError",
    "LayerRecord",
    "MethodFn",
    "RequestTrace",
    "SharedOverrides",
    "apply_journal",
    "default_hparams",
    "editor_names",
    "get_editor",
    "load_hparams",
    "make_config",
    "register",
    "revert_journals",
    "run_method",
    "weight_sha256",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'golden_fast.edit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
