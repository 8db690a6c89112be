"""The edit journal (FORMULAS.md, section "Applying an update"): every update as the rank-one
factors that made it.

Every ROME, R-ROME, MEMIT and EMMET update of a down-projection is a sum of rank-one terms
U Vᵀ (U (d, n), V (m, n)). The journal keeps, in order, each (layer, U, V) that was applied,
and for every layer it touched: the parameter's name, storage dtype and layout, the sha256 of
the weight's bytes before the first touch (and after the last, once sealed), and a copy of the
original weight. That buys three things:

- revert: the touched weights are copied back from the originals, bit for bit;
- save/load: U, V go to safetensors and the rest to JSON (the originals only on request:
  they are as large as the weights themselves);
- apply_journal: a fresh copy of the model replays the same entries with the same op
  (`golden_fast.ops.rank1_apply`), in the same order, on the same dtypes and backend, so it
  ends up with bitwise the same weights, hence the same logits, as the edited model.

Everything is applied through the `rank1_apply` dispatcher and never with `+=` on a
(possibly transposed) view: the op rounds once per element, which is what makes a replay
exact, and it hides GPT-2's Conv1D storage behind `transposed=True`. A layer offloaded by accelerate
(CPU map or disk) is read and written where it lives, through `golden_fast.models.placement`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from golden_fast.fileio import atomic_dir, atomic_write_json
from golden_fast.models import get_adapter, placement

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "EditJournal",
    "JournalEntry",
    "JournalMismatchError",
    "LayerRecord",
    "apply_journal",
    "revert_journals",
    "weight_sha256",
]

FORMAT = "golden-fast-edit-journal"
FORMAT_VERSION = 1
# File names inside a saved journal directory. journal.json is written last: a directory that
# has it is complete (the directory only appears at all through an atomic rename, see save()).
_JSON = "journal.json"
_UPDATES = "updates.safetensors"
_ORIGINALS = "originals.safetensors"
_STATE = "state.safetensors"


class JournalMismatchError(ValueError):
    """The model does not match the journal (another model, dtype, layout, or weights)."""


def weight_sha256(weight: torch.Tensor) -> str:
    """sha256 of a tensor's bytes in row-major order (its storage layout, not a transposed view).

    Shape and dtype are not hashed: callers compare them separately, with clearer messages.
    """
    t = weight.detach().to("cpu").contiguous().reshape(-1)
    # view as bytes: numpy has no bfloat16, and the bytes are what "bitwise" means anyway
    data = t.view(torch.uint8).numpy() if t.numel() else b""
    return hashlib.sha256(memoryview(data)).hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _dtype_from(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r} in journal")
    return dtype


def _identity_hash(identity: str | None) -> str | None:
    """The hash part of a model identity ("<name>-<16 hex>"). The name part comes from the
    config's name_or_path, which differs between loading by zoo name and by local path for the
    very same weights; the hash covers the config and the weights."""
    return None if identity is None else identity.rsplit("-", 1)[-1]


def _param_name(model: nn.Module, param: torch.Tensor) -> str:
    for name, p in model.named_parameters(remove_duplicate=False):
        if p is param:
            return name
    return "<not a parameter of the model>"


def _rank1_op():
    # Imported on use: golden_fast.ops discovers its op modules lazily.
    from golden_fast.ops import get_op

    return get_op("rank1_apply")


@dataclasses.dataclass(frozen=True, eq=False)
class JournalEntry:
    """One applied update: W_layer += U @ V.T (W seen as (d, m), whatever the storage).

    Args:
        layer: decoder layer whose down-projection was updated.
        u: (d, n) on the CPU, in the dtype it was applied with.
        v: (m, n) on the CPU, likewise.
        dtype: the weight's dtype when it was applied.
        transposed: the weight is stored (m, d) (GPT-2 Conv1D) and got V @ U.T.
        param: qualified name of the parameter in the model.
        backend: the `rank1_apply` backend that applied it (a replay asks for the same one).
    """

    layer: int
    u: torch.Tensor
    v: torch.Tensor
    dtype: torch.dtype
    transposed: bool
    param: str
    backend: str

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])


@dataclasses.dataclass
class LayerRecord:
    """What the journal knows about one touched layer.

    Args:
        layer, param, shape, dtype, transposed: the parameter as stored (shape is the storage
            shape: (m, d) when transposed).
        sha256_before: checksum of the weight before the journal's first update of this layer.
        sha256_after: checksum after the last update, set by `EditJournal.seal`; None while
            updates may still come (a later update of the layer clears it).
        original: a CPU copy of the weight before the first update (storage layout), or None
            when the journal was made with keep_originals=False or loaded without originals.
    """

    layer: int
    param: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    transposed: bool
    sha256_before: str
    sha256_after: str | None = None
    original: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "shape": list(self.shape),
            "dtype": _dtype_name(self.dtype),
            "transposed": self.transposed,
            "sha256_before": self.sha256_before,
            "sha256_after": self.sha256_after,
        }


class EditJournal:
    """The ordered list of updates applied to a model, with what is needed to undo or replay them.

    Build one empty and call `record_and_apply` for every update (the `Editor` does); or get one
    from `EditJournal.load` (a description, not applied to anything) and replay it with
    `apply_journal(model, journal)`, which returns a live journal for that model.

    Args:
        method: name of the editing method (metadata).
        hparams: its hyperparameters as a JSON-ready dict (metadata).
        requests: the edited requests, as JSON-ready dicts or strings (metadata).
        meta: any other JSON-ready metadata (mode, batch size, ...).
        keep_originals: keep a CPU copy of each touched weight so `revert` is possible. False
            saves that memory when a replay never needs undoing.
    """

    def __init__(
        self,
        *,
        method: str | None = None,
        hparams: Mapping[str, Any] | None = None,
        requests: Sequence[Any] | None = None,
        meta: Mapping[str, Any] | None = None,
        keep_originals: bool = True,
    ) -> None:
        self.entries: list[JournalEntry] = []
        self.layers: dict[int, LayerRecord] = {}
        self.method = method
        self.hparams: dict[str, Any] = dict(hparams or {})
        self.requests: list[Any] = list(requests or [])
        self.meta: dict[str, Any] = dict(meta or {})
        self.keep_originals = keep_originals
        #: identity (golden_fast.models.identity) of the model before the first update
        self.model_identity: str | None = None
        self.family: str | None = None
        self.created: str | None = None
        self.versions: dict[str, str] = {}
        #: a stateful editor's state after these updates (AlphaEdit's preserved keys, UltraEdit's
        #: running normalisation), so that an edited model can go on being edited after a reload
        #: (`Editor.resume`, which replays the journals after taking C); tensors by name, None for stateless editors
        self.editor_state: dict[str, torch.Tensor] | None = None
        # The model the updates went into: revert() must restore that model, not another.
        self._model: weakref.ReferenceType[nn.Module] | None = None
        self._loaded = False
        self._reverted = False

    # ---- state --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else ("reverted" if self._reverted else "live")
        return (
            f"EditJournal({len(self.entries)} entries, layers {sorted(self.layers)}, method {self.method!r}, "
            f"{state})"
        )

    @property
    def touched_layers(self) -> list[int]:
        """Layers with at least one entry, in the order they were first touched."""
        return list(self.layers)

    @property
    def reverted(self) -> bool:
        return self._reverted

    @property
    def sealed(self) -> bool:
        """True when every touched layer has its after-checksum (see `seal`)."""
        return bool(self.layers) and all(r.sha256_after is not None for r in self.layers.values())

    def update_norms(self) -> dict[int, float]:
        """Frobenius norm of the total intended update per layer, ||sum_e U_e V_eᵀ||_F.

        Computed from the factors in float64 through ||U Vᵀ||² = sum((UᵀU) ∘ (VᵀV)) (n x n Grams,
        never a d x m matrix). It is the update as computed, before rounding into the weight.
        """
        out: dict[int, float] = {}
        for layer in self.layers:
            us = [e.u for e in self.entries if e.layer == layer]
            vs = [e.v for e in self.entries if e.layer == layer]
            u = torch.cat([x.to(torch.float64) for x in us], dim=1)  # (d, N)
            v = torch.cat([x.to(torch.float64) for x in vs], dim=1)  # (m, N)
            sq = ((u.T @ u) * (v.T @ v)).sum().clamp(min=0.0)
            out[layer] = float(sq.sqrt())
        return out

    # ---- applying -----------------------------------------------------------------------

    def record_and_apply(
        self,
        model: nn.Module,
        layer: int,
        u: torch.Tensor,
        v: torch.Tensor,
        *,
        backend: str | None = None,
    ) -> JournalEntry:
        """Apply W_layer += u @ v.T to the model's down-projection, in place, and record it.

        u: (d, n) or (d,); v: (m, n) or (m,). They are applied as given (dtype included) and
        stored as CPU copies. `backend` asks `rank1_apply` for a backend (None: the usual
        dispatch); the one that ran is recorded so a replay can ask for it.
        """
        if self._loaded:
            raise RuntimeError(
                "this journal was loaded from disk and is not applied to any model; "
                "use apply_journal(model, journal) to apply it"
            )
        if self._reverted:
            raise RuntimeError("this journal was reverted; start a new EditJournal for new updates")
        self._bind(model)
        adapter = get_adapter(model)
        layer = adapter._check(layer if isinstance(layer, bool) else int(layer))  # numpy/torch ints welcome
        u = u.detach().unsqueeze(-1) if u.dim() == 1 else u.detach()
        v = v.detach().unsqueeze(-1) if v.dim() == 1 else v.detach()
        param = adapter.down_proj(layer).weight  # on "meta" when offloaded: name, shape, dtype only
        offloaded = placement.is_offloaded(model, adapter.down_proj(layer))
        stored = adapter.down_param(layer) if offloaded else param
        transposed = bool(adapter.down_transposed)
        if self.model_identity is None:
            # the model as it was before the journal's first update (apply_journal checks it)
            self.model_identity = placement.identity(model)
            self.family = adapter.family
        record = self.layers.get(layer)
        if record is None:
            # First touch: checksum and copy BEFORE writing, so even an op that fails half-way
            # through leaves something to restore from.
            original = self._cpu_copy(stored) if self.keep_originals else None
            record = LayerRecord(
                layer=layer,
                param=_param_name(model, param),
                shape=tuple(param.shape),
                dtype=param.dtype,
                transposed=transposed,
                sha256_before=weight_sha256(original if original is not None else stored),
                original=original,
            )
            self.layers[layer] = record
        elif param.dtype != record.dtype or tuple(param.shape) != record.shape:
            raise JournalMismatchError(
                f"layer {layer} ({record.param}) changed dtype/shape since its first update: "
                f"{param.dtype} {tuple(param.shape)} vs {record.dtype} {record.shape}"
            )
        op = _rank1_op()
        device = adapter.down_device(layer) if offloaded else param.device
        chosen = op.choose(device.type, backend)
        # The recorded copies are what is applied: fresh contiguous tensors, as a replay's are (a BLAS
        # GEMM's float64 result can depend on where its operands sit in memory).
        u, v = u.to("cpu", copy=True).contiguous(), v.to("cpu", copy=True).contiguous()
        if offloaded:
            # updated where the layer computes, then written back to its store (CPU map or disk)
            work = stored.to(device, copy=True)
            op(work, u.to(device), v.to(device), transposed=transposed, backend=chosen)
            adapter.write_down_param(layer, work)
        else:
            op(param, u.to(device), v.to(device), transposed=transposed, backend=chosen)
            placement.refresh_identity(model)  # no-op unless some other tensor is offloaded
        record.sha256_after = None  # stale until the next seal()
        entry = JournalEntry(
            layer=layer,
            u=u,
            v=v,
            dtype=param.dtype,
            transposed=transposed,
            param=record.param,
            backend=chosen,
        )
        self.entries.append(entry)
        return entry

    def seal(self, model: nn.Module) -> None:
        """Record the checksum of every touched weight as it is now (after the last update).

        A sealed journal lets `revert` check that nobody changed the layers since (a later edit
        not reverted first), and lets `apply_journal` prove that a replay is bitwise exact.
        """
        self._check_model(model)
        adapter = get_adapter(model)
        for layer, record in self.layers.items():
            record.sha256_after = weight_sha256(adapter.down_param(layer))

    def revert(self, model: nn.Module, *, verify: bool = True) -> None:
        """Restore every touched weight to its value before the journal's first update, bitwise.

        verify: when the journal is sealed, first check that the touched weights are still as
        the journal left them; raises JournalMismatchError naming the layer otherwise (a later
        edit of the same layer must be reverted first). Nothing is written unless every layer
        passes. A second revert does nothing.
        """
        revert_journals(model, [self], verify=verify)

    def drop_originals(self, layers: Sequence[int] | None = None) -> None:
        """Free the copies of the original weights (of `layers`, default all). The journal can
        then no longer revert those layers by itself; `revert_journals` can still, from an
        earlier journal that touched them."""
        for layer in self.layers if layers is None else layers:
            if layer in self.layers:
                self.layers[layer].original = None

    def _bind(self, model: nn.Module) -> None:
        if self._model is None:
            self._model = weakref.ref(model)
        else:
            self._check_model(model)

    def _check_model(self, model: nn.Module) -> None:
        if self._model is not None and self._model() is not model:
            raise ValueError("this journal belongs to another model object; pass the model it was applied to")

    @staticmethod
    def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
        # On the CPU: a lifelong-editing run touching many layers must not hold extra copies of
        # them in accelerator memory. empty+copy_: one copy, whatever the source device.
        out = torch.empty(t.shape, dtype=t.dtype, device="cpu")
        return out.copy_(t.detach())

    # ---- saving -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The JSON half of a saved journal (tensors are referenced by their safetensors key)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_identity": self.model_identity,
            "family": self.family,
            "method": self.method,
            "hparams": self.hparams,
            "requests": self.requests,
            "meta": self.meta,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": self.versions or _versions(),
            "layers": {str(layer): r.to_json() for layer, r in self.layers.items()},
            "editor_state": sorted(self.editor_state) if self.editor_state is not None else None,
            "entries": [
                {
                    "layer": e.layer,
                    "u": f"entry.{i}.u",
                    "v": f"entry.{i}.v",
                    "rank": e.rank,
                    "u_dtype": _dtype_name(e.u.dtype),
                    "v_dtype": _dtype_name(e.v.dtype),
                    "weight_dtype": _dtype_name(e.dtype),
                    "transposed": e.transposed,
                    "param": e.param,
                    "backend": e.backend,
                }
                for i, e in enumerate(self.entries)
            ],
        }

    def save(
        self, path: str | os.PathLike, *, include_originals: bool = False, overwrite: bool = False
    ) -> Path:
        """Write the journal to directory `path`, atomically; returns the path.

        Files: journal.json (metadata, layers, checksums, entries), updates.safetensors (U and V
        of each entry), and with include_originals=True originals.safetensors (the pre-edit
        weights of the touched layers, as large as those weights). Everything is written into a
        temporary sibling directory that is renamed into place at the end, so a crash leaves
        either no directory or a complete one. An existing `path` is an error unless overwrite.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        if include_originals:
            missing = [k for k, r in self.layers.items() if r.original is None]
            if missing:
                raise ValueError(f"include_originals=True, but there is no original of layer(s) {missing}")
        data = self.to_json()
        data["includes_originals"] = bool(include_originals)
        with atomic_dir(path) as tmp:
            tensors = {}
            for i, e in enumerate(self.entries):
                tensors[f"entry.{i}.u"] = e.u.contiguous()
                tensors[f"entry.{i}.v"] = e.v.contiguous()
            save_file(tensors, str(tmp / _UPDATES))
            if include_originals:
                save_file({f"layer.{k}": r.original.contiguous() for k, r in self.layers.items()},
                          str(tmp / _ORIGINALS))
            if self.editor_state is not None:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.editor_state.items()},
                          str(tmp / _STATE))
            atomic_write_json(tmp / _JSON, data, fsync=True, indent=1, default=str)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> EditJournal:
        """Read a journal saved by `save`. It describes updates; apply it with `apply_journal`.

        If it was saved with its originals it can also `revert` a model it was applied to
        (checked against its after-checksums).
        """
        from safetensors.torch import load_file

        path = Path(path)
        jpath = path / _JSON
        if not jpath.is_file():
            raise FileNotFoundError(f"{path} is not a saved edit journal (no {_JSON})")
        data = json.loads(jpath.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"{jpath}: not a golden-fast edit journal (format {data.get('format')!r})")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"{jpath}: journal format version {data['format_version']} is newer than this golden-fast "
                f"reads ({FORMAT_VERSION}); upgrade golden-fast"
            )
        tensors = load_file(str(path / _UPDATES)) if data["entries"] else {}
        originals = load_file(str(path / _ORIGINALS)) if (path / _ORIGINALS).is_file() else {}
        j = cls(method=data.get("method"), hparams=data.get("hparams"), requests=data.get("requests"),
                meta=data.get("meta"))
        j.model_identity = data.get("model_identity")
        j.family = data.get("family")
        j.created = data.get("created")
        j.versions = dict(data.get("versions") or {})
        if data.get("editor_state") is not None:
            state = load_file(str(path / _STATE)) if (path / _STATE).is_file() else {}
            missing = sorted(set(data["editor_state"]) - set(state))
            if missing:
                raise ValueError(f"{path}: the editor state {missing} listed in {_JSON} is missing from {_STATE}")
            j.editor_state = {k: state[k] for k in data["editor_state"]}
        for key, r in data["layers"].items():
            layer = int(key)
            j.layers[layer] = LayerRecord(
                layer=layer,
                param=r["param"],
                shape=tuple(r["shape"]),
                dtype=_dtype_from(r["dtype"]),
                transposed=bool(r["transposed"]),
                sha256_before=r["sha256_before"],
                sha256_after=r.get("sha256_after"),
                original=originals.get(f"layer.{layer}"),
            )
        for e in data["entries"]:
            j.entries.append(
                JournalEntry(
                    layer=int(e["layer"]),
                    u=tensors[e["u"]].clone(),  # fresh memory, as when they were first applied
                    v=tensors[e["v"]].clone(),
                    dtype=_dtype_from(e["weight_dtype"]),
                    transposed=bool(e["transposed"]),
                    param=e["param"],
                    backend=e["backend"],
                )
            )
        j._loaded = True
        return j


def revert_journals(model: nn.Module, journals: Sequence[EditJournal], *, verify: bool = True) -> None:
    """Undo journals that were applied to `model` in the given order (oldest first), in one step.

    Each touched layer is restored from the *earliest* journal that touched it (the state before
    all of them), so only that journal needs its copy of the layer; with verify, the weight must
    first match the *latest* journal's after-checksum (no foreign edit since). Checks run on every
    layer before anything is written. Journals already reverted are skipped; all others are marked
    reverted.
    """
    live = [j for j in journals if not j._reverted]
    if not live:
        return
    for j in live:
        j._check_model(model)
    first: dict[int, LayerRecord] = {}
    last: dict[int, LayerRecord] = {}
    for j in live:
        for layer, record in j.layers.items():
            first.setdefault(layer, record)
            last[layer] = record
    missing = [k for k, r in first.items() if r.original is None]
    if missing:
        raise RuntimeError(
            f"cannot revert: no copy of the original weight of layer(s) {missing} (journal made with "
            "keep_originals=False, saved without include_originals=True, or its copies were dropped: "
            "revert it together with the earlier edits, e.g. Editor.revert())"
        )
    adapter = get_adapter(model)
    params = {}
    for layer, record in first.items():
        param = adapter.down_proj(layer).weight
        if param.dtype != record.dtype or tuple(param.shape) != record.shape:
            raise JournalMismatchError(
                f"cannot revert layer {layer} ({record.param}): the model has {param.dtype} "
                f"{tuple(param.shape)}, the journal {record.dtype} {record.shape}"
            )
        after = last[layer].sha256_after
        if verify and after is not None and weight_sha256(adapter.down_param(layer)) != after:
            raise JournalMismatchError(
                f"cannot revert layer {layer} ({record.param}): its weight changed after this journal "
                "was sealed (a later edit of this layer?); revert the later edits first, or pass "
                "verify=False to restore the original weight anyway"
            )
        params[layer] = param
    with torch.no_grad():
        for layer, record in first.items():
            if placement.is_offloaded(model, adapter.down_proj(layer)):
                adapter.write_down_param(layer, record.original)
            else:
                params[layer].copy_(record.original.to(params[layer].device))
    placement.refresh_identity(model)
    for j in live:
        j._reverted = True


def _versions() -> dict[str, str]:
    import golden_fast

    out = {"golden_fast": golden_fast.__version__, "torch": torch.__version__}
    for name in ("transformers", "safetensors"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # metadata only: never fail a save over it
            pass
    return out


def apply_journal(
    model: nn.Module,
    journal: EditJournal,
    *,
    backend: str | None = None,
    strict: bool = True,
    verify: bool = True,
    keep_originals: bool = True,
) -> EditJournal:
    """Apply every entry of `journal` to `model`, in order, with the same op; return a live journal
    (for this model) that can `revert`.

    Before writing anything, each touched layer is checked: parameter name, storage shape, dtype,
    layout and the sha256 of its current weight against the journal's pre-edit checksum; a
    mismatch raises JournalMismatchError naming the layer. With strict=True the model's identity
    (config and a sample of every weight, golden_fast.models.identity) must match too, so a model
    that differs only in untouched layers is refused as well.

    backend: the rank1_apply backend; None replays each entry with the backend that applied it
    when that one can run here (bitwise replay), else the usual choice, with a warning.
    verify: when the journal is sealed, check the result against its after-checksums; a mismatch
    raises (after undoing the replay) when the same backend ran, and warns when it could not.
    """
    adapter = get_adapter(model)
    for layer, record in journal.layers.items():
        where = f"layer {layer} ({record.param})"
        try:
            param = adapter.down_proj(layer).weight
        except (IndexError, TypeError) as exc:
            raise JournalMismatchError(f"the journal edits {where}, which this model lacks: {exc}") from None
        name = _param_name(model, param)
        if name != record.param:
            raise JournalMismatchError(f"{where}: this model names the parameter {name!r}")
        if bool(adapter.down_transposed) != record.transposed:
            raise JournalMismatchError(
                f"{where}: storage layout differs (journal transposed={record.transposed}, model "
                f"transposed={adapter.down_transposed})"
            )
        if param.dtype != record.dtype or tuple(param.shape) != record.shape:
            raise JournalMismatchError(
                f"{where}: the model's weight is {_dtype_name(param.dtype)} {tuple(param.shape)}, "
                f"the journal's "
                f"{_dtype_name(record.dtype)} {record.shape} (load the model with the dtype it was edited in)"
            )
        if weight_sha256(adapter.down_param(layer)) != record.sha256_before:
            raise JournalMismatchError(
                f"{where}: the weight differs from the one the journal was recorded on (sha256 mismatch); "
                "this is another model, or it was already edited"
            )
    if strict and journal.model_identity is not None:
        ident = placement.identity(model)
        if _identity_hash(ident) != _identity_hash(journal.model_identity):
            raise JournalMismatchError(
                f"model identity {ident} differs from the journal's {journal.model_identity}: the touched "
                "layers match but other weights or the config differ; pass strict=False to apply anyway"
            )

    live = EditJournal(
        method=journal.method, hparams=journal.hparams, requests=journal.requests,
        meta=dict(journal.meta, replayed_from=journal.model_identity), keep_originals=keep_originals,
    )
    op = _rank1_op()
    fallback: set[str] = set()
    try:
        for e in journal.entries:
            device = adapter.down_device(e.layer).type
            chosen = backend
            if chosen is None and op.status(e.backend, device)[0]:
                chosen = e.backend
            elif chosen is None:
                fallback.add(e.backend)
            live.record_and_apply(model, e.layer, e.u, e.v, backend=chosen)
        live.seal(model)
        if verify:
            _verify_replay(live, journal, exact_backend=not fallback and backend is None)
    except BaseException:
        if keep_originals:  # leave the model as it was given
            live.revert(model, verify=False)
        raise
    if fallback:
        warnings.warn(
            f"apply_journal: rank1_apply backend(s) {sorted(fallback)} used when the journal was recorded "
            f"cannot run here; replayed with {op.choose(device)} (the weights may differ in the last bit)",
            RuntimeWarning,
            stacklevel=2,
        )
    return live


def _verify_replay(live: EditJournal, journal: EditJournal, *, exact_backend: bool) -> None:
    bad = [
        layer
        for layer, r in journal.layers.items()
        if r.sha256_after is not None and live.layers[layer].sha256_after != r.sha256_after
    ]
    if not bad:
        return
    msg = (
        f"apply_journal: after the replay, layer(s) {bad} differ bitwise from the weights the journal "
        "recorded "
        f"(e.g. {journal.layers[bad[0]].param})"
    )
    if exact_backend:
        # the same op on the same inputs must give the same bits: this is a bug, not a rounding
        raise JournalMismatchError(msg + " although the same rank1_apply backend ran")
    warnings.warn(msg + " (another rank1_apply backend ran)", RuntimeWarning, stacklevel=3)
