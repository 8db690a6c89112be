"""Run a function in N gloo processes, as torchrun would, and collect what each rank returns.

    from _spawn_ranks import run_ranks
    results = run_ranks(fn, 2, arg1, arg2)   # [rank 0's return, rank 1's return]

`fn(*args)` runs in fresh processes (spawn) that see the environment torchrun sets (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and have joined the process group through
golden_fast.distributed.init(). `fn` must be importable by name (a module-level function of a
test module). A rank that raises makes run_ranks raise with that rank's traceback.

A rank leaves with os._exit once its result is written and the group destroyed: gloo's threads can
abort the interpreter's teardown (SIGABRT, "terminate called without an active exception") after the
work is done and reported, and a test must fail on what the ranks computed, not on that.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local_rank: int, world: int, port: int, out_dir: str, fn: Callable, args: tuple,
            env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    code = 1
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        from golden_fast import distributed as D

        try:
            D.init("gloo", timeout_s=300)
            result = ("ok", fn(*args))
        except BaseException:  # noqa: BLE001 - sent back to the parent
            result = ("error", traceback.format_exc())
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        tmp = Path(out_dir) / f"rank{local_rank}.pkl.part"
        with open(tmp, "wb") as f:
            pickle.dump(result, f)
        tmp.replace(Path(out_dir) / f"rank{local_rank}.pkl")
        code = 0
    except BaseException:  # noqa: BLE001 - the result could not be made or written: the parent sees no file
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_ranks(fn: Callable, world: int, *args: Any, env: dict[str, str] | None = None) -> list[Any]:
    """[fn(*args) on rank 0, ..., on rank world-1], each in its own process of a gloo group."""
    with tempfile.TemporaryDirectory() as d:
        mp.start_processes(_worker, args=(world, free_port(), d, fn, args, dict(env or {})), nprocs=world,
                           join=True, start_method="spawn")
        results = []
        for r in range(world):
            with open(Path(d) / f"rank{r}.pkl", "rb") as f:
                status, value = pickle.load(f)
            if status != "ok":
                raise RuntimeError(f"rank {r} failed:\n{value}")
            results.append(value)
        return results
