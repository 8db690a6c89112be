"""Device budgets (`--devices`) and where a stage's weights would go under one (accelerate's
`infer_auto_device_map` with `max_memory`).

A budget is one or more devices joined by "+" (or ","): "1x80GB", "2x24GB", "cpu:24GB",
"1x24GB+cpu:64GB". Sizes follow accelerate's convention: KB / MB / GB / TB are powers of 1000,
KiB / MiB / GiB / TiB powers of 1024 (a bare number is bytes). "NxSIZE" (or just "SIZE") is N
accelerators of SIZE each, numbered 0..N-1; "cpu:SIZE" is CPU RAM.

A stage is placed by reserving its working memory first: on every accelerator, its device terms
(conservative when a model spans several: activations of the layers on one GPU actually stay on
that GPU); in CPU RAM, its host terms (and its device terms too when there is no accelerator). The
weights then go where accelerate puts them in what is left, accelerators first, then CPU RAM, then
disk; accelerate also keeps room on the first device for the largest layer it may need to bring in.

Verdicts: "fits" (every weight on the compute devices: the accelerators, or the CPU for a CPU-only
budget), "offload" (some weights on CPU RAM or disk, moved in as the layers run: it runs, slower),
"no" (the working memory alone exceeds a device, so nothing can run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "Budget", "DeviceBudget", "Placement", "format_bytes", "parse_budget", "parse_devices", "parse_size", "place",
]

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in "24GB", "1.5TiB", "512MiB", "1000" (accelerate's units: GB = 10^9, GiB = 2^30)."""
    m = _SIZE.match(str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"bad size {text!r}: give a number and a unit (KB, MB, GB, TB = powers of 1000; "
            "KiB, MiB, GiB, TiB = powers of 1024), e.g. 24GB"
        )
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"bad size {text!r}: must be > 0")
    return int(value)


def format_bytes(n: float | None) -> str:
    """Decimal units, as the sizes in --devices: 1.23 GB, 456 MB."""
    if n is None:
        return "-"
    n = float(n)
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}" if abs(n) / scale < 100 else f"{n / scale:.0f} {unit}"
    return f"{int(n)} B"


@dataclasses.dataclass(frozen=True)
class DeviceBudget:
    """`count` devices of `bytes` each: accelerators ("gpu") or CPU RAM ("cpu", count 1)."""

    kind: str
    count: int
    bytes: int
    text: str


@dataclasses.dataclass(frozen=True)
class Budget:
    """One budget: its devices, as the user wrote them (`spec`)."""

    spec: str
    devices: tuple[DeviceBudget, ...]

    @property
    def gpus(self) -> list[int]:
        """Bytes of each accelerator, in index order."""
        return [d.bytes for d in self.devices if d.kind == "gpu" for _ in range(d.count)]

    @property
    def cpu(self) -> int | None:
        cpus = [d.bytes for d in self.devices if d.kind == "cpu"]
        return sum(cpus) if cpus else None

    def max_memory(self) -> dict[Any, int]:
        """accelerate's max_memory: {0: bytes, 1: bytes, ..., "cpu": bytes}."""
        out: dict[Any, int] = dict(enumerate(self.gpus))
        if self.cpu is not None:
            out["cpu"] = self.cpu
        return out


_DEVICE = re.compile(r"^\s*(?:(?P<kind>cpu|gpu|cuda)\s*:\s*)?(?:(?P<count>[0-9]+)\s*[xX*]\s*)?(?P<size>.+?)\s*$")


def _parse_device(text: str) -> DeviceBudget:
    m = _DEVICE.match(text)
    if not m or not m.group("size"):
        raise ValueError(f"bad device {text!r}: expected NxSIZE (accelerators) or cpu:SIZE, e.g. 2x24GB, cpu:64GB")
    kind = "cpu" if (m.group("kind") or "").lower() == "cpu" else "gpu"
    count = int(m.group("count") or 1)
    if count < 1:
        raise ValueError(f"bad device {text!r}: the count must be >= 1")
    if kind == "cpu" and count != 1:
        raise ValueError(f"bad device {text!r}: give CPU RAM as one size, cpu:SIZE")
    return DeviceBudget(kind, count, parse_size(m.group("size")), text.strip())


def parse_budget(spec: str) -> Budget:
    """One budget: devices joined by "+" or ",", e.g. "1x24GB+cpu:64GB"."""
    parts = [p for p in re.split(r"[+,]", str(spec)) if p.strip()]
    if not parts:
        raise ValueError(f"bad --devices {spec!r}: empty")
    devices = tuple(_parse_device(p) for p in parts)
    if sum(d.kind == "cpu" for d in devices) > 1:
        raise ValueError(f"bad --devices {spec!r}: name CPU RAM once")
    return Budget(str(spec).strip(), devices)


def parse_devices(specs: str | Iterable[str]) -> list[Budget]:
    """Budgets from --devices values: each value one budget (several compared side by side)."""
    if isinstance(specs, str):
        specs = [specs]
    out = [parse_budget(s) for s in specs]
    if not out:
        raise ValueError("--devices: give at least one budget, e.g. 1x80GB")
    return out


@dataclasses.dataclass
class Placement:
    """Where one stage's weights go under one budget, and the verdict."""

    budget: str
    verdict: str  # "fits" | "offload" | "no"
    reason: str
    per_device: dict[str, int]  # weights per device ("0", "1", "cpu", "disk")
    device_map: dict[str, Any] | None
    max_memory: dict[str, int]  # what was left for the weights

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def _quiet_accelerate():
    # accelerate warns that the planned GPUs are "not available" here: a plan needs none
    # (and that an offloaded layer's buffers need room on the GPU: a few KB of RoPE tables)
    log = logging.getLogger("accelerate.utils.modeling")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*bytes of buffer for offloaded layers.*")
            yield
    finally:
        log.setLevel(level)


def place(
    model: nn.Module,
    budget: Budget,
    dtype: torch.dtype,
    work_device: int,
    work_host: int,
    no_split: Sequence[str] = (),
    module_sizes: dict[str, int] | None = None,
) -> Placement:
    """Reserve the stage's working memory, then let accelerate place the weights (meta `model`)."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    sizes = module_sizes if module_sizes is not None else compute_module_sizes(model, dtype=dtype)
    gpus, cpu = budget.gpus, budget.cpu
    left: dict[Any, int] = {}
    if gpus:
        for i, b in enumerate(gpus):
            left[i] = b - work_device
        if cpu is not None:
            left["cpu"] = cpu - work_host
    else:
        left["cpu"] = (cpu or 0) - work_device - work_host
    short = {k: -v for k, v in left.items() if v <= 0}
    if short:
        k, v = next(iter(short.items()))
        where = "cpu" if k == "cpu" else f"accelerator {k}"
        return Placement(budget.spec, "no", f"working memory exceeds {where} by {format_bytes(v)}", {},
                         None, {str(k): int(v) for k, v in left.items()})
    with _quiet_accelerate():
        dm = infer_auto_device_map(model, max_memory=dict(left), no_split_module_classes=list(no_split), dtype=dtype)
    per: dict[str, int] = {}
    for name, dev in dm.items():
        per[str(dev)] = per.get(str(dev), 0) + int(sizes.get(name, 0))
    compute = {str(i) for i in range(len(gpus))} if gpus else {"cpu"}
    off = {k: v for k, v in per.items() if k not in compute and v > 0}
    if not off:
        verdict, reason = "fits", "every weight on " + ("the accelerators" if gpus else "the CPU")
    else:
        verdict = "offload"
        reason = "weights offloaded to " + ", ".join(f"{k} ({format_bytes(v)})" for k, v in off.items())
    return Placement(budget.spec, verdict, reason, per, {k: v for k, v in dm.items()},
                     {str(k): int(v) for k, v in left.items()})
