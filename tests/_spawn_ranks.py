"""Run a function in N gloo processes, as torchrun would, and collect what each rank returns.

    from _spawn_ranks import run_ranks
    results = run_ranks(fn, 2, arg1, arg2)   # [rank 0's return, rank 1's return]

`fn(*args)` runs in fresh processes (spawn) that see the environment torchrun sets (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and have joined the process group through
golden_fast.distributed.init(). `fn` must be importable by name (a module-level function of a
test module). A rank that raises makes run_ranks raise with that rank's traceback.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, world: int, port: int, out_dir: str, fn: Callable, args: tuple,
            env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch

    torch.set_num_threads(1)
    from golden_fast import distributed as D

    out = Path(out_dir) / f"rank{local_rank}.pkl"
    try:
        D.init("gloo", timeout_s=300)
        result = ("ok", fn(*args))
    except BaseException:  # noqa: BLE001 - sent back to the parent
        result = ("error", traceback.format_exc())
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    with open(out, "wb") as f:
        pickle.dump(result, f)


def run_ranks(fn: Callable, world: int, *args: Any, env: dict[str, str] | None = None) -> list[Any]:
    """[fn(*args) on rank 0, ..., on rank world-1], each in its own process of a gloo group."""
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_worker, args=(world, _free_port(), d, fn, args, dict(env or {})), nprocs=world,
                           join=True, start_method="spawn")
        results = []
        for r in range(world):
            with open(Path(d) / f"rank{r}.pkl", "rb") as f:
                status, value = pickle.load(f)
            if status != "ok":
                raise RuntimeError(f"rank {r} failed:\n{value}")
            results.append(value)
        return results
