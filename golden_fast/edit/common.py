"""What the Editor and every editing method share: the apply callback a method writes its
updates through, the per-request trace it returns, and the error it raises.

Also the rules of an edit shared by the ranks of a torchrun group (`collective`, `on_main`,
`rank_local`): every rank ends with bitwise the same weights.

Kept apart from `golden_fast.edit.base` (which dispatches a method name to rome.py / memit.py) so
that the methods can import these without importing the dispatcher that imports them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from golden_fast import distributed

__all__ = ["ApplyFn", "EditError", "RequestTrace", "collective", "on_main", "rank_local", "shared_object",
           "shared_steps", "shared_work"]

T = TypeVar("T")

# apply(layer, U (d, n), V (m, n)): W_layer += U @ V.T, taking effect immediately
ApplyFn = Callable[[int, torch.Tensor, torch.Tensor], None]


class EditError(RuntimeError):
    """An edit could not be made; the message names the request."""


@dataclasses.dataclass
class RequestTrace:
    index: int
    loss_curve: list[float] = dataclasses.field(default_factory=list)
    update_norm: float = 0.0
    condition: float | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    # vectors of the closed form (k*, v*, z, ...), kept for inspection and for the tests
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---- a batch edit shared by the ranks of a torchrun group ---------------------------------------

_RANK_LOCAL: contextvars.ContextVar[bool] = contextvars.ContextVar("golden_fast_rank_local", default=False)


@contextlib.contextmanager
def rank_local() -> Iterator[None]:
    """Within the block every rank edits on its own, with no collective: for callers that hand each
    rank different requests (sharded evaluation, brute force), where a shared edit would wait forever."""
    token = _RANK_LOCAL.set(True)
    try:
        yield
    finally:
        _RANK_LOCAL.reset(token)


def collective() -> bool:
    """True when an edit is shared by the ranks of a torchrun group: every rank calls it with the same
    requests, the batch editors shard their targets and solve on rank 0 (`on_main`)."""
    return distributed.active() and not _RANK_LOCAL.get()


_shared_steps = 0


def shared_steps() -> int:
    """How many steps of collective edits (`shared_work`, `on_main`) this process has run: an edit that
    ran some was made together with the other ranks, whose weights must then agree."""
    return _shared_steps


def _count_shared_step() -> None:
    global _shared_steps
    _shared_steps += 1


def shared_work(n: int, work: Callable[[list[int]], list[T]]) -> list[T]:
    """`work(indices)` (one result per index) on each rank's strided share of n independent items,
    every result on every rank in item order; picklable results, on the CPU (a pickled CUDA tensor
    comes back on the sender's device). A failure on any rank is raised on every rank, instead of
    the others waiting for its results forever."""
    _count_shared_step()
    mine = distributed.shard(n)
    out: list[T] = []
    failure: Exception | None = None
    try:
        out = work(mine) if mine else []
    except Exception as exc:
        failure = exc
    errors = distributed.all_gather_objects(None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    bad = next(((r, e) for r, e in enumerate(errors) if e is not None), None)
    if bad is not None:
        raise EditError(f"rank {bad[0]} failed on its share of the batch: {bad[1]}")
    return distributed.gather_in_order(n, out, mine)


def shared_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank of a collective edit (the context templates, sampled on each rank,
    must be the same everywhere); `obj` itself otherwise."""
    return distributed.broadcast_object(obj) if collective() else obj


def _recv_device(kind: str) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device(kind)


def on_main(compute: Callable[[], tuple[Sequence[torch.Tensor], Any]]) -> tuple[list[torch.Tensor], Any]:
    """(tensors, info) of `compute()`, run on rank 0 alone in a collective edit and broadcast to every
    rank (tensors bitwise, `info` pickled), so every rank applies the same update. Outside one, just
    `compute()`. A failure on rank 0 is raised there and as an EditError on the other ranks."""
    if not collective():
        tensors, info = compute()
        return list(tensors), info
    _count_shared_step()
    header: Any = None
    tensors: list[torch.Tensor] = []
    if distributed.is_main():
        try:
            out, info = compute()
            tensors = [t.detach().contiguous() for t in out]
            header = ("ok", [(tuple(t.shape), t.dtype, t.device.type) for t in tensors], info)
        except Exception as exc:
            # the other ranks wait for this header: tell them before raising here
            distributed.broadcast_object(("error", f"{type(exc).__name__}: {exc}", None))
            raise
    header = distributed.broadcast_object(header)
    status, layout, info = header
    if status != "ok":
        raise EditError(f"rank 0 failed to compute the update: {layout}")
    if not distributed.is_main():
        tensors = [torch.empty(shape, dtype=dtype, device=_recv_device(kind)) for shape, dtype, kind in layout]
    for t in tensors:
        distributed.broadcast_(t, src=0)
    return tensors, info
