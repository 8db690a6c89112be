"""Data parallelism under torchrun: one process per rank, gloo on CPUs, NCCL on GPUs.

    torchrun --nproc-per-node 2 -m golden_fast experiment ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `init()` turns them into
a torch.distributed process group. Without torchrun (or with one process) nothing is initialised
and every helper here is the identity: a single process needs nothing new.

The stages that split by example use the same few rules, so that 1 and N processes give the same
answer:

- `shard(n)`: the example indices this rank takes. Strided (i = rank, rank + N, ...), so ranks
  get examples of alike lengths and costs when the input is sorted; deterministic, so a restarted
  rank takes the same examples and resumes its own work.
- sums (statistics, LGA scores) are summed with `all_reduce_sum` once at the end; counts with them.
- per-example results are put back in input order with `gather_in_order`.
- rank 0 alone prints, shows progress and writes reports (`is_main`, `progress_enabled`).
- an update computed on rank 0 reaches every rank through `broadcast_`; `digest_agrees` checks that
  every rank ends with the same weights.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "active",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_",
    "broadcast_object",
    "digest_agrees",
    "gather_in_order",
    "init",
    "is_main",
    "launched",
    "progress_enabled",
    "rank",
    "shard",
    "tensor_digest",
    "world_size",
]

T = TypeVar("T")


def launched() -> bool:
    """True when started by torchrun (or any launcher setting WORLD_SIZE) with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ValueError(f"$WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def init(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group torchrun describes; True when running with more than one process.

    backend: "gloo" (CPU tensors) or "nccl" (CUDA tensors); default NCCL when CUDA is available, else
    gloo. Idempotent: a second call, or a call in a process group made by someone else, changes nothing.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    if not dist.is_available():
        raise RuntimeError("torchrun started several processes but this torch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_world_size() > 1


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that prints, shows progress and writes reports."""
    return rank() == 0


def progress_enabled(progress: bool = True) -> bool:
    """A progress bar is shown only by rank 0."""
    return bool(progress) and is_main()


def shard(n: int, rank_: int | None = None, world: int | None = None) -> list[int]:
    """The indices of `n` examples this rank takes: rank, rank + world, ... (all of them in one process)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if not 0 <= r < w:
        raise ValueError(f"rank {r} outside a world of {w}")
    return list(range(r, n, w))


def barrier() -> None:
    if active():
        dist.barrier()


def _comm_device(t: torch.Tensor) -> torch.device:
    # gloo reduces CPU tensors, NCCL CUDA tensors
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all ranks in place (every rank gets the total) and return it."""
    if not active():
        return t
    dev = _comm_device(t)
    if t.device == dev and t.is_contiguous():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t
    buf = t.detach().to(dev).contiguous()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    t.copy_(buf.to(t.device))
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `t` on every rank with rank `src`'s values (in place) and return it."""
    if not active():
        return t
    dev = _comm_device(t)
    if t.device == dev and t.is_contiguous():
        dist.broadcast(t, src=src)
        return t
    buf = t.detach().to(dev).contiguous()
    dist.broadcast(buf, src=src)
    t.copy_(buf.to(t.device))
    return t


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s picklable object on every rank."""
    if not active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable object, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_in_order(n: int, mine: Sequence[T], indices: Sequence[int] | None = None) -> list[T]:
    """Per-example results of all ranks back in input order, on every rank.

    `mine` holds this rank's results for `indices` (default `shard(n)`), in that order.
    """
    indices = shard(n) if indices is None else list(indices)
    if len(mine) != len(indices):
        raise ValueError(f"rank {rank()}: {len(mine)} results for {len(indices)} indices")
    if not active():
        out = [None] * n
        for i, x in zip(indices, mine):
            out[i] = x
    else:
        out = [None] * n
        for idx, res in all_gather_objects((list(indices), list(mine))):
            for i, x in zip(idx, res):
                out[i] = x
    missing = [i for i, x in enumerate(out) if x is None]
    if missing:
        raise RuntimeError(f"no rank returned a result for examples {missing[:10]}")
    return out  # type: ignore[return-value]


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """sha256 of the tensors' bytes (dtype and shape included), in the order given."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def digest_agrees(tensors: Iterable[torch.Tensor]) -> bool:
    """True when every rank holds bitwise the same tensors (one digest per rank compared)."""
    d = tensor_digest(tensors)
    return len(set(all_gather_objects(d))) == 1
