"""Shared benchmark helpers: provenance, timing percentiles, peak memory, results CSV.

Benchmarks are scripts, never imported by the library. Each ends with one JSON line and
appends long-format rows (one per measured quantity) to bench/results/<device-slug>.csv,
so benchmarks with different columns can share a file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: the golden-layer studies (`golden-fast experiment` folders) the locating benchmarks read
STUDIES = {
    "smollm2-135m": RESULTS / "experiment" / "smollm2-135m-counterfact",
    "gemma3-270m": RESULTS / "experiment" / "gemma3-270m-zsre",
}
_CSV_FIELDS = ("timestamp", "bench", "name", "value", "unit", "device", "torch", "commit", "details")


# ---- provenance --------------------------------------------------------------------------------


from golden_fast.report.environment import cpu_name  # noqa: E402  (one implementation, in the library)


def device_name(device: str | torch.device = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def device_slug(device: str | torch.device = "cpu") -> str:
    """File-name-safe device id: the GPU name, or the CPU model plus its thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{cpu_name()}-{torch.get_num_threads()}t"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def provenance(device: str | torch.device = "cpu") -> dict[str, Any]:
    import transformers

    return {
        "device": device_name(device),
        "device_slug": device_slug(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


# ---- timing ------------------------------------------------------------------------------------


def percentiles(times: list[float]) -> dict[str, float]:
    """p20 / p50 / p80 of a list of seconds (one sample: all three equal)."""
    if len(times) == 1:
        return {"p20": times[0], "p50": times[0], "p80": times[0]}
    q = statistics.quantiles(times, n=10, method="inclusive")  # deciles
    return {"p20": q[1], "p50": statistics.median(times), "p80": q[7]}


def time_call(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, sync: bool = False) -> list[float]:
    """Wall-clock seconds of `repeats` calls after `warmup` calls (for runs of seconds, where
    perf_counter is precise enough; torch.utils.benchmark suits microsecond kernels)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


# ---- peak memory (CPU) ---------------------------------------------------------------------------


# one implementation, in the library: VmRSS / VmHWM, reset through /proc/self/clear_refs
from golden_fast.experiment.memory import peak_rss_bytes, reset_peak_rss, rss_bytes  # noqa: E402, F401

# ---- results -----------------------------------------------------------------------------------


def append_results(
    bench: str,
    rows: list[tuple[str, float, str]],
    prov: Mapping[str, Any],
    details: Mapping[str, Any] | None = None,
) -> Path:
    """Append (name, value, unit) rows to bench/results/<device-slug>.csv; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{prov['device_slug']}.csv"
    new = not path.exists()
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(_CSV_FIELDS))
        if new:
            w.writeheader()
        for name, value, unit in rows:
            w.writerow(
                {
                    "timestamp": stamp,
                    "bench": bench,
                    "name": name,
                    "value": value,
                    "unit": unit,
                    "device": prov["device"],
                    "torch": prov["torch"],
                    "commit": prov["commit"],
                    "details": json.dumps(details or {}, sort_keys=True),
                }
            )
    return path


# ---- README sections filled from results ---------------------------------------------------------


def replace_section(path: Path, name: str, text: str) -> None:
    """Put `text` between the lines `<!-- name -->` and `<!-- /name -->` of `path` (written atomically)."""
    from golden_fast.fileio import atomic_write

    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text()
    if old.count(start) != 1 or old.count(end) != 1 or old.index(start) > old.index(end):
        raise ValueError(f"{path}: needs exactly one {start} ... {end} section")
    head, rest = old.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write(path, f"{head}{start}\n{text.strip()}\n{end}{tail}")


def run_or_table(out: Path, table_only: bool, run: Callable[[], Any], table: Callable[[Any], str],
                 threads: int) -> int:
    """A study script's main: print the saved result's table (`table_only`), or run on `threads`
    threads, write the result to `out` atomically and print its table."""
    from golden_fast.fileio import read_json, write_json

    if table_only:
        print(table(read_json(out)))
        return 0
    torch.set_num_threads(threads)
    res = run()
    write_json(out, res)
    print(table(res))
    print(f"results: {out}")
    return 0


# ---- facts of the study scripts ------------------------------------------------------------------


def add_fact_args(p: Any) -> None:
    """--model, --data (default: CounterFact in the data folder) and --offset of an argparse parser."""
    from golden_fast.data.location import data_dir

    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--data", default=str((data_dir() or Path("data")) / "counterfact" / "counterfact-edit.json"))
    p.add_argument("--offset", type=int, default=0)


def first_facts(data: str, n: int, offset: int = 0) -> list:
    """The first n valid records of `data` from `offset` (malformed ones skipped and counted); exits when
    fewer are there."""
    from golden_fast.data import validate

    reqs, errors = validate(data, offset=offset)
    if errors:
        print(f"{data}: {len(errors)} malformed record(s) skipped, e.g. {errors[0]}", flush=True)
    if len(reqs) < n:
        raise SystemExit(f"{data} has only {len(reqs)} valid records after offset {offset}; {n} asked")
    return list(reqs[:n])


def study_facts(study: Path) -> tuple[Any, Any]:
    """(ExperimentConfig, Facts) of a `golden-fast experiment` folder, its split checked against the
    folder's split.json (`load_facts`; a mismatch raises)."""
    from golden_fast.experiment import ExperimentConfig
    from golden_fast.experiment.facts import load_facts
    from golden_fast.fileio import read_json

    cfg = ExperimentConfig.from_dict(read_json(study / "config.json"))
    return cfg, load_facts(cfg, out=study)


def mass_results_dir(model: str, data: str) -> Path:
    """bench/results/mass/<model>-<data name>: the folder of the mass-editing studies of one fact file."""
    return RESULTS / "mass" / f"{model}-{Path(data).stem.split('-')[0]}"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display on a benchmark machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write `fig` to `path` through a temporary name (a reader never sees half a file), then close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
    return path
