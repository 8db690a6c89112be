"""The `Editor`: one object to edit a model with ROME, R-ROME, MEMIT or EMMET, atomically and
revertibly, in batch or sequential mode.

The mathematics lives in golden_fast/edit/{rome,memit,...} behind `run_method`; this module
decides *what the weights look like when each request is computed*, routes every update through
an `EditJournal`, and guarantees that a failed `edit()` leaves the model bitwise as it found it.

Modes (what the anchors leave implicit, and what users of them keep getting wrong):

- ``mode="sequential"``: the requests are edited one after another (chunks of `batch_size`,
  default 1), each chunk computed on the model *as left by the previous chunks*. This is the
  realistic lifelong-editing setting, and how ROME / R-ROME are meant to be used.
- ``mode="batch"``: all requests are computed together against the same starting weights and
  applied as one update. MEMIT and EMMET do this natively (their update is solved jointly and
  spread over the layers, each layer's keys recomputed after the previous layer's update). For
  ROME / R-ROME each rank-one update is computed on the unedited weights and their sum applied
  at once: ROME was not designed for this (its updates ignore each other and interfere when they
  share a layer); it exists for comparison with the batch methods.

The default mode is the method's own: sequential for ROME / R-ROME, batch for MEMIT / EMMET.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from golden_fast import distributed
from golden_fast.edit.common import EditError, collective, rank_local, shared_steps
from golden_fast.edit.journal import EditJournal, apply_journal, revert_journals
from golden_fast.edit.registry import EditorSpec, get_editor, normalise_name
from golden_fast.models import get_adapter

__all__ = ["EditError", "EditResult", "Editor", "MethodFn", "SharedOverrides"]


class SharedOverrides(dict):
    """Settings a study applies to every editor that has them (the statistics sample count, the
    optimisation steps, ...): fields an editor's config lacks are skipped, where a plain dict of
    overrides naming an unknown field is an error."""


#: A custom method: the signature of `run_method` without its first argument. It must call
#: apply(layer, U (d, n), V (m, n)) for every update and return one RequestTrace per request.
#: Set `fn.native_batch = True` when it applies layer by layer as MEMIT does (the Editor then
#: lets each apply act at once); otherwise the Editor defers applies to the end of each call.
MethodFn = Callable[..., list]


@dataclasses.dataclass(frozen=True)
class _PlainHParams:
    """Hyperparameters of a custom method that brought none: just the layers it may edit."""

    layers: tuple[int, ...] = ()
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), **dict(self.extra)}


@dataclasses.dataclass
class EditResult:
    """What one `Editor.edit` call did.

    Attributes:
        journal: the applied updates (save it with `journal.save(dir)`).
        traces: one RequestTrace per request, `index` = position in the list given to edit().
        update_norms: {layer: Frobenius norm of the call's total update of that layer}.
        wall_time: seconds spent in edit(), computation and application.
        method, mode, batch_size: how the edit was made.
        requests: the requests, as given.
    """

    journal: EditJournal
    traces: list
    update_norms: dict[int, float]
    wall_time: float
    method: str
    mode: str
    batch_size: int | None
    requests: list
    _model: nn.Module = dataclasses.field(repr=False, default=None)
    # a stateful editor's hook that puts its state back as it was before this edit
    _on_revert: Callable[[], None] | None = dataclasses.field(repr=False, default=None)

    @property
    def reverted(self) -> bool:
        return self.journal.reverted

    def revert(self) -> None:
        """Restore the weights this edit touched to their values before it, bitwise.

        Raises JournalMismatchError if a later edit changed the same layers and is still applied
        (revert that one first, or use `Editor.revert`, which goes newest first). A stateful
        editor's state (`Editor.state`) goes back to what it was before this edit too.
        """
        self.journal.revert(self._model)
        if self._on_revert is not None:
            self._on_revert()

    def save_journal(self, path: str | os.PathLike, **kwargs: Any):
        """`self.journal.save(path, **kwargs)`."""
        return self.journal.save(path, **kwargs)

    def summary(self) -> str:
        """Per-request losses and norms, then the per-layer update norms, as text."""
        lines = [f"{self.method} ({self.mode}): {len(self.requests)} request(s) in {self.wall_time:.2f} s"]
        for t in self.traces:
            req = self.requests[t.index] if 0 <= t.index < len(self.requests) else None
            curve = list(getattr(t, "loss_curve", []) or [])
            loss = f"loss {curve[0]:.4g} -> {curve[-1]:.4g} ({len(curve)} steps)" if curve else "loss -"
            cond = getattr(t, "condition", None)
            line = f"  [{t.index}] {_describe(t.index, req)}: {loss}, update norm {t.update_norm:.4g}"
            if cond is not None:
                line += f", condition {cond:.3g}"
            lines.append(line)
            lines += [f"      warning: {w}" for w in getattr(t, "warnings", []) or []]
        norms = ", ".join(f"layer {k}: {v:.4g}" for k, v in self.update_norms.items())
        lines.append(f"  total update norm per layer: {norms or '-'}")
        return "\n".join(lines)


class Editor:
    """Edit facts in a model; every edit atomic, revertible and recorded in a journal.

    Args:
        model, tok: the model to edit (in place) and its tokenizer.
        method: the name of a registered editor ("rome", "r-rome", "memit", "emmet", ...:
            `golden_fast.edit.editor_names()`); or a callable with the signature of `run_method`
            minus its first argument (see `MethodFn`). None: the method named by `hparams` (a
            config dataclass has one), else "r-rome".
        layers: the layer(s) to edit; None keeps those of `hparams` (the preset by default).
        hparams: None for the preset of (method, model) (`default_hparams`); a config dataclass;
            a dict of overrides applied on top of the preset; or a path to a YAML/JSON file read
            by `golden_fast.edit.config.load_hparams` (a complete set: fields it omits take the
            method's defaults, not the preset's).
        stats: the second-moment statistics object, passed through to the method (None lets the
            method get its own).
        progress: show the methods' progress bars by default.
        state: a stateful editor's state to start from (`journal.editor_state` of the last edit
            of a saved lifelong run); None starts fresh.
        revert_each: keep, for every edit() result, a CPU copy of each weight it touched, so any
            result can be reverted on its own (newest first). False keeps only the first copy of
            each layer: `Editor.revert` still restores everything, bitwise, but a later result
            touching the same layer can no longer be reverted alone. Lifelong editing of a large
            model with one edit() call per request wants False (each copy is a whole layer);
            a single edit(requests, mode="sequential") call keeps one copy per layer anyway.
        rank_local: under torchrun, edit on this rank alone. By default an edit there is shared
            (`golden_fast.edit.common.collective`): every rank calls edit() with the same requests,
            the batch editors (MEMIT, EMMET, AlphaEdit, UltraEdit) shard their targets across the
            ranks and solve on rank 0, and such an edit ends by checking that every rank holds the
            same weights. Give True where each rank edits its own requests (sharded evaluation,
            brute force). ROME and R-ROME compute alone on every rank either way.

    Typical use::

        ed = Editor(model, tok, "r-rome", layers=5)
        res = ed.edit(requests, mode="sequential")
        res.journal.save("edits/run1")
        ed.revert()                      # the model is bitwise as before
    """

    def __init__(
        self,
        model: nn.Module,
        tok: Any,
        method: str | MethodFn | None = None,
        layers: int | Sequence[int] | None = None,
        hparams: Any = None,
        stats: Any = None,
        progress: bool = True,
        revert_each: bool = True,
        state: Mapping[str, torch.Tensor] | None = None,
        rank_local: bool = False,
    ) -> None:
        self.model = model
        self.rank_local = bool(rank_local)
        self.revert_each = revert_each
        self.tok = tok
        self.adapter = get_adapter(model)
        self.stats = stats
        self.progress = progress
        if isinstance(hparams, (str, os.PathLike)) and not callable(method):
            hparams = _load_hparams_file(hparams, method)
        self.method, self._fn = _resolve_method(method, hparams)
        self.hparams = _resolve_hparams(self.method, self._fn, hparams, layers, _model_name(model))
        self.layers = [int(x) for x in self.hparams.layers]
        if not self.layers:
            raise ValueError("no layer to edit: give layers= or hparams with layers")
        for layer in self.layers:
            if not 0 <= layer < self.adapter.n_layers:
                raise ValueError(f"layer {layer} out of range: the model has {self.adapter.n_layers} layers")
        #: every edit() result, oldest first (Editor.revert undoes them newest first)
        self.results: list[EditResult] = []
        self._moments: Any = None  # built on first use, see _stats()
        #: a stateful editor's state (`EditorSpec.stateful`): tensors by name, carried from one
        #: edit() to the next and saved with each journal; start it from a saved journal's
        #: `editor_state` to go on editing a reloaded model
        self.state: dict[str, torch.Tensor] = dict(state or {})
        self._initial_state = dict(self.state)

    def __repr__(self) -> str:
        live = sum(not r.reverted for r in self.results)
        return f"Editor({self.method}, layers {self.layers}, {live} edit(s) applied)"

    @property
    def spec(self) -> EditorSpec | None:
        """The registered editor (None for a custom callable)."""
        return None if self._fn is not None else get_editor(self.method)

    @property
    def native_batch(self) -> bool:
        """True when the method solves a batch jointly and applies it layer by layer (MEMIT, EMMET)."""
        if self._fn is not None:
            return bool(getattr(self._fn, "native_batch", False))
        return get_editor(self.method).native_batch

    # ---- editing ------------------------------------------------------------------------

    def edit(
        self,
        requests: Any,
        mode: str | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> EditResult:
        """Edit `requests` (an EditRequest, a dict, or a list of them) into the model.

        mode="sequential": requests are edited one after another, in chunks of `batch_size`
        (default 1), each chunk computed on the model as left by the previous ones (lifelong
        editing). Within a chunk of several requests the batch semantics below apply.
        mode="batch": all requests are computed against the same starting weights and applied as
        one update: natively for MEMIT / EMMET; for ROME / R-ROME each rank-one update is computed
        on the unedited weights and their sum applied at once (not what ROME was designed for:
        the updates ignore each other). `batch_size` must then be None.
        mode=None: the editor's own (`EditorSpec.default_mode`: sequential for ROME / R-ROME,
        batch for MEMIT / EMMET); batch for custom methods.

        Atomic: if anything fails (the method raises, an update puts NaN/Inf into a weight, the
        journal refuses), every update applied during this call is reverted, bitwise, and an
        EditError naming the request(s) is raised (from the original exception). A
        KeyboardInterrupt is re-raised as is, after the same revert.
        """
        reqs = _as_requests(requests)
        if not reqs:
            raise ValueError("no requests to edit")
        mode = mode or (self.spec.default_mode if self._fn is None else "batch")
        if mode not in ("batch", "sequential"):
            raise ValueError(f"mode must be 'batch' or 'sequential', got {mode!r}")
        if mode == "batch" and batch_size is not None and batch_size != len(reqs):
            raise ValueError(
                "batch_size chunks a sequential edit; mode='batch' computes all requests at once "
                "(use mode='sequential', batch_size=k for chunks of k)"
            )
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        size = len(reqs) if mode == "batch" else int(batch_size or 1)
        progress = self.progress if progress is None else progress

        journal = EditJournal(
            method=self.method,
            hparams=_hparams_dict(self.hparams),
            requests=[_request_json(i, r) for i, r in enumerate(reqs)],
            meta={"mode": mode, "batch_size": batch_size, "layers": self.layers},
        )
        traces: list = []
        t0 = time.perf_counter()
        start = 0
        state_before = dict(self.state)
        steps = shared_steps()
        try:
            for start in range(0, len(reqs), size):
                chunk = reqs[start : start + size]
                traces += [_reindex(t, start) for t in self._edit_chunk(journal, chunk, start, progress)]
            if shared_steps() != steps:  # made together with the other ranks: they must agree
                self.check_ranks_agree()
        except BaseException as exc:
            self._set_state(state_before)
            self._rollback(journal, exc, reqs[start : start + size], start)
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: restored, not wrapped
                raise
            raise _wrap(exc, reqs[start : start + size], start, len(journal)) from exc
        journal.seal(self.model)
        stateful = self._fn is None and self.spec.stateful
        if stateful:
            journal.editor_state = dict(self.state)
        if not self.revert_each:
            # an earlier, still applied result already holds the pre-edit copy of these layers
            held = {layer for r in self.results if not r.reverted for layer in r.journal.layers}
            journal.drop_originals([layer for layer in journal.layers if layer in held])
        result = EditResult(
            journal=journal,
            traces=traces,
            update_norms=journal.update_norms(),
            wall_time=time.perf_counter() - t0,
            method=self.method,
            mode=mode,
            batch_size=batch_size,
            requests=list(reqs),
            _model=self.model,
            _on_revert=(lambda: self._set_state(state_before)) if stateful else None,
        )
        self.results.append(result)
        return result

    def edit_each(
        self,
        requests: Any,
        on_edit: Callable[[int, Any, EditResult], Any],
        group_size: int = 16,
        progress: bool | None = None,
    ) -> list[Any]:
        """Edit each request alone, call `on_edit(position, request, result)` while its edit is
        applied, then revert it (bitwise). Returns the callbacks' return values, in order.

        Meaning: exactly `res = edit([r]); on_edit(i, r, res); res.revert()` for every request,
        each edit made on the weights as they are now. It is the protocol of single-edit
        evaluation and of brute-force layer search. For single editors (ROME / R-ROME:
        `EditorSpec.single`) the keys and v* of a group of requests are computed in one batched
        pass first: each depends only on the weights before its own edit, which every request of
        the group shares, so batching changes values only by float rounding (batched products),
        and the time a lot. Other methods run one request at a time.

        A request that fails raises EditError naming it; the model is then as before the call.
        """
        reqs = _as_requests(requests)
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        progress = self.progress if progress is None else progress
        out: list[Any] = []
        if self._fn is not None or not self.spec.single:
            for i, req in enumerate(reqs):
                res = self.edit([req], progress=False)
                self.results.remove(res)  # reverted below: nothing for Editor.revert to do
                try:
                    out.append(on_edit(i, req, res))
                finally:
                    res.revert()
            return out
        from tqdm.auto import tqdm

        bar = tqdm(total=len(reqs), desc=f"{self.method} each", disable=not progress or len(reqs) < 2)
        try:
            for start in range(0, len(reqs), group_size):
                group = reqs[start : start + group_size]
                t0 = time.perf_counter()
                pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
                try:
                    traces = self._run(group, lambda layer, u, v, into=pending: into.append(
                        (int(layer), u.detach(), v.detach())), progress=False)
                except Exception as exc:
                    raise _wrap(exc, group, start, 0) from exc
                if len(pending) != len(group) or len(traces) != len(group):
                    raise EditError(f"{self.method}: expected one update per request, got {len(pending)}")
                share = (time.perf_counter() - t0) / len(group)
                for j, (req, (layer, u, v), trace) in enumerate(zip(group, pending, traces)):
                    i = start + j
                    t1 = time.perf_counter()
                    journal = EditJournal(method=self.method, hparams=_hparams_dict(self.hparams),
                                          requests=[_request_json(i, req)],
                                          meta={"mode": "each", "batch_size": None, "layers": self.layers})
                    try:
                        self._apply(journal, layer, u, v, _refs([req], i))
                    except BaseException as exc:
                        self._rollback(journal, exc, [req], i)
                        if not isinstance(exc, Exception):
                            raise
                        raise _wrap(exc, [req], i, 0) from exc
                    journal.seal(self.model)
                    res = EditResult(journal=journal, traces=[_reindex(trace, -j)], update_norms=journal.update_norms(),
                                     wall_time=share + time.perf_counter() - t1, method=self.method, mode="each",
                                     batch_size=None, requests=[req], _model=self.model)
                    try:
                        out.append(on_edit(i, req, res))
                    finally:
                        res.revert()
                    bar.update(1)
        finally:
            bar.close()
        return out

    def shared(self) -> bool:
        """True when this Editor's edits are shared by the ranks of a torchrun group (see `rank_local`)."""
        return not self.rank_local and collective()

    def check_ranks_agree(self) -> None:
        """Under torchrun, raise EditError unless every rank holds bitwise the same weights of the edited
        layers. A collective: every rank must call it (edit() does, after a shared edit)."""
        if not distributed.active():
            return
        weights = [self.adapter.down_weight(layer) for layer in sorted(self.layers)]
        if not distributed.digest_agrees(weights):
            raise EditError(f"{self.method}: after the edit the ranks hold different weights at layers "
                            f"{sorted(self.layers)} (rank {distributed.rank()} of {distributed.world_size()}); "
                            "every rank must edit the same requests on the same model, or use rank_local=True")

    def resume(self, journals: Iterable[EditJournal]) -> list[EditJournal]:
        """Go on with an earlier run on this model, reloaded unedited: fix the statistics this editor
        uses on the weights as they are now, apply `journals` in order (bitwise, `apply_journal`), and
        take the editor's state from the last journal that saved one. Returns the applied journals,
        live (each can `revert(model)`); this Editor's `revert` does not undo them.

        The order matters: C is a statistic of the unedited model, and one looked up or computed after
        the replay would belong to the edited weights instead, so a resumed run would solve with
        another C than the run it continues."""
        moments = self._stats() if self._fn is None else None
        if getattr(moments, "source", None) is not None:
            for layer in self.layers:
                moments.C(layer, self.adapter.down_weight(layer).shape[1])
        applied: list[EditJournal] = []
        state = None
        try:
            for journal in journals:  # one at a time: a stateful editor's journals each hold its state
                applied.append(apply_journal(self.model, journal))
                state = journal.editor_state if journal.editor_state is not None else state
        except BaseException:
            for live in reversed(applied):
                live.revert(self.model)
            raise
        if state is not None:
            self._set_state(state)
            self._initial_state = dict(self.state)
        return applied

    def revert(self) -> None:
        """Undo every edit this Editor made that is still applied: the model ends bitwise as it was
        before the first edit(). Each layer is restored from the earliest result that touched it,
        after checking that it is still as the latest one left it."""
        revert_journals(self.model, [r.journal for r in self.results])
        self._set_state(self._initial_state)

    def _set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state.clear()
        self.state.update(state)

    # ---- internals ----------------------------------------------------------------------

    def _edit_chunk(self, journal: EditJournal, chunk: list, start: int, progress: bool) -> list:
        """Run the method on one chunk; every update goes through the journal."""
        who = _refs(chunk, start)

        def apply_now(layer: int, u: torch.Tensor, v: torch.Tensor) -> None:
            self._apply(journal, layer, u, v, who)

        if self.native_batch:
            return self._run(chunk, apply_now, progress)
        # Deferred: nothing changes while the chunk is computed, so every request of the chunk
        # sees the same weights (batch semantics, whatever order the method applies in); then
        # each layer gets the sum of its updates as one rank-n update (one rounding).
        pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []

        def defer(layer: int, u: torch.Tensor, v: torch.Tensor) -> None:
            pending.append((int(layer), u.detach(), v.detach()))

        out = self._run(chunk, defer, progress)
        for layer, u, v in _merge(pending):
            apply_now(layer, u, v)
        return out

    def _run(self, chunk: list, apply: Callable, progress: bool) -> list:
        if self.rank_local:
            with rank_local():
                return self._run_method(chunk, apply, progress)
        return self._run_method(chunk, apply, progress)

    def _run_method(self, chunk: list, apply: Callable, progress: bool) -> list:
        if self._fn is not None:
            args = (self.model, self.tok, chunk, self.hparams, self.stats, apply)
            return list(self._fn(*args, progress=progress) or [])
        from golden_fast.edit.base import run_method  # the one dispatch point: the registry's editor

        args = (self.model, self.tok, chunk, self.hparams, self._stats(), apply)
        if self.spec.stateful:
            return list(run_method(self.method, *args, progress=progress, state=self.state) or [])
        return list(run_method(self.method, *args, progress=progress) or [])

    def _stats(self) -> Any:
        """One `Moments` for every run_method call of this Editor: a sequential edit calls the
        method once per request, and each call would otherwise load C again and refactorise it
        (the Cholesky factors are cached inside a Moments object). C is a statistic of the
        corpus on the unedited model, so it stays valid as the edits accumulate."""
        if not self.spec.uses_moments:
            return self.stats
        if self._moments is None:
            from golden_fast.edit.moments import Moments

            self._moments = Moments.resolve(self.stats, self.model, self.tok, self.hparams)
        return self._moments

    def _apply(self, journal: EditJournal, layer: int, u: torch.Tensor, v: torch.Tensor, who: str) -> None:
        if int(layer) not in self.layers:
            raise EditError(f"{who}: the method updated layer {layer}, which is not among the edited layers "
                            f"{self.layers}")
        entry = journal.record_and_apply(self.model, int(layer), u, v)
        # One pass over the weight: a NaN/Inf in U or V, or an overflow of a 16-bit weight, would
        # otherwise surface much later as NaN logits far from its cause.
        if not bool(torch.isfinite(self.adapter.down_weight(entry.layer)).all()):
            raise EditError(f"{who}: the update put NaN/Inf into layer {entry.layer} ({entry.param})")

    def _rollback(self, journal: EditJournal, exc: BaseException, chunk: list, start: int) -> None:
        try:
            journal.revert(self.model, verify=False)
        except BaseException as again:  # the model may be damaged: say so, loudly
            raise EditError(
                f"{_refs(chunk, start)}: edit failed ({type(exc).__name__}: {exc}) and restoring the weights "
                f"failed too ({type(again).__name__}: {again}); the model is in an undefined state, reload it"
            ) from exc


# ---- helpers ----------------------------------------------------------------------------


def _resolve_method(method: Any, hparams: Any) -> tuple[str, MethodFn | None]:
    if callable(method):
        return getattr(method, "__name__", "custom"), method
    if method is None:
        # a config dataclass knows its method; a dict or a file may say so too, else R-ROME
        if isinstance(hparams, Mapping):
            method = hparams.get("method")
        elif not isinstance(hparams, (str, os.PathLike)):
            method = getattr(hparams, "method", None)
        method = method if isinstance(method, str) else "r-rome"
    if not isinstance(method, str):
        raise TypeError(f"method must be a name or a callable, got {type(method).__name__}")
    try:
        return get_editor(method).name, None
    except ValueError as exc:
        raise ValueError(f"{exc}, or pass a callable") from None


def _normalise(method: str) -> str:
    try:
        return get_editor(method).name
    except ValueError:
        return normalise_name(method)


def _load_hparams_file(path: str | os.PathLike, method: str | None) -> Any:
    """Read a YAML/JSON hyperparameter file with the lead's `load_hparams`. The method is the
    editor's when given (a file naming another one is an error, not silently re-read), else the
    file's "method" key, else R-ROME."""
    import json
    from pathlib import Path

    from golden_fast.edit.config import load_hparams

    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    said = data.get("method") if isinstance(data, Mapping) else None
    said = _normalise(said) if isinstance(said, str) else None
    if method is not None and said is not None and _normalise(method) != said:
        raise ValueError(f"{path} holds hyperparameters for {said!r}, the editor's method is {method!r}")
    return load_hparams(path, _normalise(method) if method is not None else (said or "r-rome"))


def _resolve_hparams(method: str, fn: MethodFn | None, hparams: Any, layers: Any, model_name: str | None):
    if isinstance(hparams, (str, os.PathLike)):
        raise TypeError("a custom method takes hparams as an object or a dict, not a file")
    if hparams is None or isinstance(hparams, Mapping):
        overrides = dict(hparams or {})
        file_method = overrides.pop("method", None)
        if file_method is not None and fn is None and _normalise(str(file_method)) != method:
            raise ValueError(f"hparams are for method {file_method!r}, the editor's method is {method!r}")
        if fn is not None:
            found = overrides.pop("layers", ())
            base = _PlainHParams(tuple(_as_layers(found)), overrides)
        else:
            from golden_fast.edit.base import default_hparams

            base = default_hparams(method, model_name)
            if isinstance(hparams, SharedOverrides) and dataclasses.is_dataclass(base):
                fields = {f.name for f in dataclasses.fields(base) if f.init}
                overrides = {k: v for k, v in overrides.items() if k in fields}
            base = _replace(base, overrides)
        hparams = base
    elif fn is None:
        own = getattr(hparams, "method", None)
        if isinstance(own, str) and own != method:
            raise ValueError(
                f"hparams are a {type(hparams).__name__} for {own!r}, the editor's method is {method!r}"
            )
    if layers is not None:
        hparams = _replace(hparams, {"layers": _as_layers(layers)})
    if not hasattr(hparams, "layers"):
        raise TypeError(f"hparams ({type(hparams).__name__}) have no `layers`")
    return hparams


def _replace(h: Any, values: Mapping[str, Any]) -> Any:
    """dataclasses.replace with an error naming the unknown fields (and the known ones)."""
    if not values:
        return h
    if not dataclasses.is_dataclass(h):
        raise TypeError(f"cannot override fields of {type(h).__name__}; pass a dataclass or a dict")
    fields = {f.name for f in dataclasses.fields(h) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for {type(h).__name__}; known: {sorted(fields)}"
        )
    values = dict(values)
    if "layers" in values and isinstance(h.layers, (list, tuple)):
        values["layers"] = type(h.layers)(values["layers"])  # keep the config's container type
    return dataclasses.replace(h, **values)


def _as_layers(layers: Any) -> list[int]:
    if isinstance(layers, bool):
        raise TypeError("layers must be ints")
    if isinstance(layers, int):
        return [layers]
    return [int(x) for x in layers]


def _hparams_dict(h: Any) -> dict[str, Any]:
    if hasattr(h, "to_dict"):
        return dict(h.to_dict())
    if dataclasses.is_dataclass(h):
        return dataclasses.asdict(h)
    return dict(vars(h)) if hasattr(h, "__dict__") else {"repr": repr(h)}


def _model_name(model: nn.Module) -> str | None:
    model_config = getattr(model, "config", None)
    name = getattr(model_config, "name_or_path", None) or getattr(model_config, "_name_or_path", None)
    return str(name) if name else None


def _as_requests(requests: Any) -> list:
    from golden_fast.data import EditRequest

    if isinstance(requests, (EditRequest, Mapping)):
        requests = [requests]
    out = []
    for i, r in enumerate(requests):
        out.append(EditRequest.from_dict(r, index=i) if isinstance(r, Mapping) else r)
    return out


def _describe(i: int, req: Any) -> str:
    """"record 12 (case_id 4031) 'Danielle Darrieux' -> 'English'" (the index when no ref)."""
    if req is None:
        return f"request #{i}"
    index = getattr(req, "index", None)
    ref = req.ref if index is not None or getattr(req, "case_id", None) is not None else f"request #{i}"
    subject, target = getattr(req, "subject", None), getattr(req, "target_new", None)
    return f"{ref} {subject!r} -> {target!r}" if subject is not None else ref


def _refs(chunk: list, start: int) -> str:
    """Name the requests of a chunk for error messages (three at most, then a count)."""
    names = [_describe(start + i, r) for i, r in enumerate(chunk[:3])]
    more = f" and {len(chunk) - 3} more" if len(chunk) > 3 else ""
    return ("request " if len(chunk) == 1 else "batch of requests ") + "; ".join(names) + more


def _request_json(i: int, req: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"position": i, "ref": _describe(i, req)}
    if hasattr(req, "to_dict"):
        out.update(req.to_dict())
    return out


def _reindex(trace: Any, start: int) -> Any:
    """Trace indices are positions in the chunk handed to the method; make them positions in the
    list given to edit()."""
    if not start:
        return trace
    if dataclasses.is_dataclass(trace):
        return dataclasses.replace(trace, index=trace.index + start)
    trace.index += start
    return trace


_Update = tuple[int, torch.Tensor, torch.Tensor]  # (layer, U (d, n), V (m, n))


def _merge(pending: list[_Update]) -> list[_Update]:
    """Group deferred updates by layer (first-seen order) and concatenate their factors: the sum
    of rank-one terms U_i V_iᵀ is [U_1 .. U_k] [V_1 .. V_k]ᵀ, applied in one op call."""
    by_layer: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for layer, u, v in pending:
        u = u.unsqueeze(-1) if u.dim() == 1 else u
        v = v.unsqueeze(-1) if v.dim() == 1 else v
        by_layer.setdefault(layer, []).append((u, v))
    out = []
    for layer, parts in by_layer.items():
        if len(parts) == 1:
            out.append((layer, *parts[0]))
            continue
        dtype = parts[0][0].dtype
        for u, v in parts:
            dtype = torch.promote_types(dtype, torch.promote_types(u.dtype, v.dtype))
        device = parts[0][0].device
        u = torch.cat([p[0].to(device, dtype) for p in parts], dim=1)  # (d, N)
        v = torch.cat([p[1].to(device, dtype) for p in parts], dim=1)  # (m, N)
        out.append((layer, u, v))
    return out


def _wrap(exc: Exception, chunk: list, start: int, n_applied: int) -> EditError:
    undone = (
        f"the {n_applied} update(s) applied during this edit() call were reverted; the model is unchanged"
        if n_applied
        else "nothing had been applied; the model is unchanged"
    )
    if isinstance(exc, EditError):
        # the method's own EditError already names the request and the reason
        return EditError(f"{exc} ({undone})")
    return EditError(f"{_refs(chunk, start)}: {type(exc).__name__}: {exc} ({undone})")
