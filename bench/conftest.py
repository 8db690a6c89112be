"""pytest-benchmark plumbing of the bench/test_bench_*.py suites (`make bench`).

Only `pytest bench` loads this file (pyproject's testpaths is tests/). Each hot path is one
benchmark group: its baseline and its candidates, timed in the same run, one test each. A suite
checks that its candidates compute the same result in a module-scoped fixture before any of them is
timed (never time a wrong kernel); speed itself is never asserted.

`measure(benchmark, fn, role=...)` times `fn` and records in `extra_info` the role ("baseline" or
"candidate"), the load average at the end and, for a candidate, its speedup over the group's
baseline when that ran earlier in this session (the baseline comes first in every file).
bench/report_bench.py recomputes speedups from the JSON (`--benchmark-json`), so a run with `-k`
that skips a baseline still gets its ratios where both were timed.

On a machine whose cores other jobs share, OpenMP's barriers stall badly (measured here: a
SmolLM2 forward pass of 4 x 32 tokens 2.3-10.4 s with 2 threads, 0.55-0.78 s with 1, under load 4-5
on 2 cores), so `OMP_NUM_THREADS=1 make bench` gives steadier ratios there; the thread count is in
the JSON.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):  # the source checkout and bench/_common.py, also without an install
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import _common  # noqa: E402

# group -> median seconds of its baseline, for speedups computed during the run
_BASELINES: dict[str, float] = {}
_LOAD_START: list[float] = []  # set when the session starts: machine_info is only built at its end


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def pytest_sessionstart(session: pytest.Session) -> None:
    _LOAD_START[:] = [_load()]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    # pytest-benchmark's own machine_info lacks torch's thread count and the machine's load, which
    # decide how far CPU timings can be trusted here
    prov = _common.provenance("cpu")
    machine_info["golden_fast"] = {
        "cpu": _common.cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "load_average_start": _LOAD_START[0] if _LOAD_START else None,
        "torch": prov["torch"],
        "transformers": prov["transformers"],
        "commit": prov["commit"],
        "device_slug": prov["device_slug"],
    }


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    output_json["machine_info"].setdefault("golden_fast", {})["load_average_end"] = _load()


def measure(
    benchmark: Any,
    fn: Callable[[], Any],
    *,
    role: str,
    rounds: int | None = None,
    warmup: int = 1,
    setup: Callable[[], Any] | None = None,
    **info: Any,
) -> None:
    """Time fn() under `benchmark` and record role, load and speedup in `benchmark.extra_info`.

    rounds=None: pytest-benchmark's calibrated loop (right for calls of microseconds to tens of ms);
    rounds=k: exactly k timed calls after `warmup` untimed ones (calls of 0.1 s and more, where the
    calibrated loop would spend minutes). `setup` runs untimed before each round (rounds=k only).
    """
    if role not in ("baseline", "candidate"):
        raise ValueError(f"role must be 'baseline' or 'candidate', not {role!r}")
    if rounds is None:
        benchmark(fn)
    else:
        # setup returns None: fn is then called without arguments (pytest-benchmark's contract)
        benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    benchmark.extra_info.update(info)
    benchmark.extra_info["role"] = role
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["load_average"] = _load()
    if benchmark.stats is None:  # --benchmark-disable: fn ran once, untimed
        return
    median = benchmark.stats.stats.median
    group = benchmark.group
    if role == "baseline":
        _BASELINES[group] = median
    elif group in _BASELINES:
        benchmark.extra_info["speedup_vs_baseline"] = round(_BASELINES[group] / median, 3)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|, in float64 (0 when both are zero)."""
    a, b = a.double(), b.double()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale or 1.0)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (model, tokenizer), float32 on the CPU, loaded once per session
    (from the local cache; fetched on first use). Skips the suites that need it when unavailable."""
    from golden_fast.models import load_model

    try:
        model, tok = load_model("smollm2-135m")
    except Exception as exc:  # offline without a cache: the suites on random tensors still run
        pytest.skip(f"smollm2-135m unavailable: {type(exc).__name__}: {exc}")
    model.eval()
    return model, tok
