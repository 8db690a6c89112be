"""Second moments C_l as the editors need them: float64, factorised once per layer,
with the conditioning measured and reported (never a silent NaN).

C_l = S_l / N_l (the cached sum of k kᵀ over the corpus tokens and its count), symmetrised as
(C + Cᵀ) / 2; `solve` returns (scale C + ridge I + extra)⁻¹ B through a cached Cholesky factor,
the pseudo-inverse when Cholesky fails, and C = I when mom2_adjustment is off. See FORMULAS.md,
section "Second-moment statistics C_l"."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# condition number past which a solve is reported as ill-conditioned
ILL_CONDITIONED = 1e10


class Moments:
    """C_l per layer, from: None (identity, i.e. mom2_adjustment=False), a dict {layer: C},
    a callable layer -> C, or golden-fast's statistics cache (`from_stats`).

    `solve(layer, B, scale, ridge)` returns (scale C + ridge I)^-1 B in float64 through a
    Cholesky factor cached per (layer, scale, ridge); `condition(layer)` its condition number.
    """

    def __init__(self, source: None | dict | Callable[[int], torch.Tensor] = None, dim: int | None = None):
        self.source = source
        self.dim = dim
        self._C: dict[int, torch.Tensor] = {}
        self._factor: dict[tuple, tuple[str, torch.Tensor]] = {}
        self._cond: dict[tuple, float] = {}

    @classmethod
    def resolve(cls, stats, model, tok, hparams) -> Moments:
        """The Moments an editor uses: `stats` as given (a Moments, a dict, a callable), the
        statistics cache when None, and the identity whenever hparams.mom2_adjustment is off."""
        if not hparams.mom2_adjustment:
            return stats if isinstance(stats, Moments) and stats.source is None else cls(None)
        if isinstance(stats, Moments):
            return stats
        return cls.from_stats(model, tok, hparams) if stats is None else cls(stats)

    @classmethod
    def from_stats(cls, model, tok, hparams) -> Moments:
        """C from the statistics cache (computed on first use, all layers of hparams in one pass)."""
        if not hparams.mom2_adjustment:
            return cls(None)
        from golden_fast.edit.common import collective
        from golden_fast.models.identity import model_identity
        from golden_fast.stats import StatsConfig, get_second_moment

        config = StatsConfig(corpus=hparams.mom2_dataset, n_samples=hparams.mom2_n_samples, dtype=hparams.mom2_dtype)
        layers = list(hparams.layers)
        # C belongs to the unedited model: key the cache by its identity, taken now
        mid = model_identity(model)

        def source(layer: int) -> torch.Tensor:
            # once the weights have changed, a pass would measure the edited model under the unedited
            # one's name: only the cache may answer then
            unchanged = model_identity(model) == mid
            try:
                # a pass is a collective under torchrun: only a shared edit has every rank here together
                return get_second_moment(model, tok, layer, config, layers=layers, model_id=mid,
                                         data_parallel=collective(), compute=unchanged).mean()
            except LookupError as e:
                raise LookupError(
                    f"layer {layer}: C of the unedited model ({mid}) is not cached and the weights have been "
                    "edited since the editor took its statistics; load them before the first edit "
                    "(Editor.resume does, for a replayed run)") from e

        return cls(source)

    def C(self, layer: int, dim: int) -> torch.Tensor:
        if layer not in self._C:
            if self.source is None:
                C = torch.eye(dim, dtype=torch.float64)
            elif isinstance(self.source, dict):
                if layer not in self.source:
                    raise KeyError(f"no second moment for layer {layer}; have {sorted(self.source)}")
                C = self.source[layer]
            else:
                C = self.source(layer)
            C = torch.as_tensor(C).to(torch.float64)
            if C.shape != (dim, dim):
                raise ValueError(f"second moment of layer {layer} has shape {tuple(C.shape)}, expected ({dim}, {dim})")
            if not torch.isfinite(C).all():
                raise ValueError(f"second moment of layer {layer} has non-finite entries")
            self._C[layer] = 0.5 * (C + C.T)  # symmetric up to accumulation rounding
        return self._C[layer]

    def _factorise(self, layer: int, dim: int, scale: float, ridge: float, extra: torch.Tensor | None):
        A = scale * self.C(layer, dim)
        if ridge:
            A = A + ridge * torch.eye(dim, dtype=torch.float64)
        if extra is not None:
            A = A + extra
        ev = torch.linalg.eigvalsh(A)
        cond = float(ev[-1] / ev[0]) if ev[0] > 0 else math.inf
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0 and math.isfinite(cond):
            return ("chol", L), cond
        return ("pinv", torch.linalg.pinv(A, hermitian=True)), cond

    def solve(
        self, layer: int, B: torch.Tensor, scale: float = 1.0, ridge: float = 0.0,
        extra: torch.Tensor | None = None, warnings: list[str] | None = None,
    ) -> torch.Tensor:
        """(scale C + ridge I + extra)^-1 B, float64. `extra` (e.g. K K^T) is not cached."""
        dim = B.shape[0]
        if self.source is None and extra is None:  # C = I: nothing to factorise
            self.last_condition = 1.0
            return B.to(torch.float64) / (scale + ridge)
        key = (layer, scale, ridge)
        if extra is None and key in self._factor:
            (kind, F), cond = self._factor[key], self._cond[key]
        else:
            (kind, F), cond = self._factorise(layer, dim, scale, ridge, extra)
            if extra is None:
                self._factor[key], self._cond[key] = (kind, F), cond
        self.last_condition = cond
        if warnings is not None and (kind == "pinv" or cond > ILL_CONDITIONED):
            warnings.append(
                f"layer {layer}: system ill-conditioned (condition number {cond:.3g})"
                + ("; solved with the pseudo-inverse" if kind == "pinv" else "")
            )
        B = B.to(torch.float64)
        X = torch.cholesky_solve(B, F) if kind == "chol" else F @ B
        if not torch.isfinite(X).all():
            raise FloatingPointError(f"layer {layer}: the solve produced non-finite values (condition {cond:.3g})")
        return X
