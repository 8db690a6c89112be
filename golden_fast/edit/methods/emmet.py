"""EMMET (Gupta et al. 2024): MEMIT's residual spread with each fact's key equality-constrained.

    ΔW = R D⁻¹ K^T C0⁻¹,   C0 = λ C (+ ridge I),   D = K^T C0⁻¹ K (+ emmet_lambda I when n > 1)

The closed form shares MEMIT's targets z, keys and residual spread (`methods/memit.py`,
`mass_edit`); see FORMULAS.md, section "EMMET".
"""

from __future__ import annotations

from collections.abc import Sequence

from golden_fast.edit.common import ApplyFn
from golden_fast.edit.config import EMMETConfig
from golden_fast.edit.methods.memit import mass_edit
from golden_fast.edit.registry import EditorSpec, register


def _run_emmet(model, tok, requests: Sequence, hparams, stats, apply: ApplyFn, progress: bool = True):
    return mass_edit(model, tok, requests, hparams, stats, apply, method="emmet", progress=progress)


register(EditorSpec(name="emmet", config=EMMETConfig, run=_run_emmet, default_mode="batch", native_batch=True,
                    targets="z", order=21, description="EMMET: a batch with equality constraints per fact"))
