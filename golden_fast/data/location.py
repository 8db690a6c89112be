"""Where the benchmark files are: one place that every reader asks.

The files (CounterFact, zsRE, known_1000, WikiText-2) are never part of golden-fast; a user
points `$GOLDEN_FAST_DATA` at a folder holding them. Without it, a `shared/data` folder beside
the checkout is used when there is one (a development layout; an installed package has none)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "data_dir", "data_file"]

DATA_ENV = "GOLDEN_FAST_DATA"


def data_dir() -> Path | None:
    """The data folder: $GOLDEN_FAST_DATA, else shared/data beside the checkout, else None."""
    if os.environ.get(DATA_ENV, "").strip():
        return Path(os.environ[DATA_ENV]).expanduser()
    beside = Path(__file__).resolve().parents[3] / "shared" / "data"
    return beside if beside.is_dir() else None


def data_file(relative: str) -> Path:
    """A file of the data folder; FileNotFoundError naming where it was looked for and how to set it."""
    root = data_dir()
    if root is None:
        raise FileNotFoundError(f"no data folder: set ${DATA_ENV} to the folder that holds {relative}")
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (set ${DATA_ENV} to the folder that holds {relative})")
    return path
