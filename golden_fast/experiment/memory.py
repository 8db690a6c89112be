"""Peak memory of one measured step (CPU: the process's resident set; CUDA: the allocator's peak).

The Linux mechanism (bench/_common.py re-exports these helpers): the kernel's
resident high-water mark VmHWM, reset by writing "5" to /proc/self/clear_refs (Linux >= 4.0).
Where that is impossible the peak covers the whole process life, and the record says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["PeakMemory", "measure_peak", "peak_rss_bytes", "reset_peak_rss", "rss_bytes"]


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """Resident set size now (Linux /proc), in bytes."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset the resident high-water mark (VmHWM) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Resident high-water mark since start or the last reset_peak_rss(), in bytes."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib * 1024


@dataclasses.dataclass
class PeakMemory:
    """MiB: `peak` the high-water mark during the step, `extra` its excess over what the process held
    before it (model, data, statistics), `reset` whether the mark could be reset (False: `peak` is
    the process's peak since it started)."""

    peak_mib: float | None = None
    extra_mib: float | None = None
    reset: bool = False
    device: str = "cpu"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def measure_peak(device: torch.device | str = "cpu") -> Iterator[PeakMemory]:
    """with measure_peak() as mem: ...  then mem.peak_mib / mem.extra_mib."""
    device = torch.device(device)
    mem = PeakMemory(device=str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        mem.reset = True
        try:
            yield mem
        finally:
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            mem.peak_mib, mem.extra_mib = peak / 2**20, (peak - before) / 2**20
        return
    before = rss_bytes()
    mem.reset = reset_peak_rss()
    try:
        yield mem
    finally:
        peak = peak_rss_bytes()
        mem.peak_mib = peak / 2**20
        mem.extra_mib = None if before is None else max(0, peak - before) / 2**20
