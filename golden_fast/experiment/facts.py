"""The experiment's facts: loading (optionally keeping only the valid records), the proxy / test split
and the evaluation pool, recorded in split.json so that a resumed run uses the same facts.

- proxy / test: `golden_fast.data.split` of the first proxy_n + test_n (valid) records, seeded;
  layers are chosen on proxy facts and judged on test facts.
- pool: the test facts, then the records that follow, up to `pool_n`: the mass-editing curve
  edits its first n (nested points: the 10 facts of one point are among the 100 of the next).

`skip_invalid` reads the records with `golden_fast.data.validate` (every malformed record collected,
not raised) and keeps the first valid ones; the count skipped is returned and reported.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from golden_fast.data import EditRequestError, load, split, validate
from golden_fast.experiment.config import ExperimentConfig
from golden_fast.fileio import read_json, write_json
from golden_fast.locate.brute_force import request_key

__all__ = ["Facts", "load_facts"]

_SHOWN_ERRORS = 10


@dataclasses.dataclass
class Facts:
    """proxy, test and pool (EditRequests) and what loading skipped.

    n_invalid: malformed records skipped from `offset` to the end of the file (skip_invalid only);
    n_invalid_used: those among the records up to the last one used; errors: the first messages.
    """

    proxy: list
    test: list
    pool: list
    n_read: int
    n_invalid: int = 0
    n_invalid_used: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "proxy_n": len(self.proxy),
            "test_n": len(self.test),
            "pool_n": len(self.pool),
            "records_read": self.n_read,
            "invalid_skipped": self.n_invalid,
            "invalid_skipped_before_last_used": self.n_invalid_used,
            "invalid_examples": self.errors,
        }


def _read(config: ExperimentConfig, need: int) -> Facts:
    if not config.skip_invalid:
        try:
            reqs = load(config.data, format=config.format, limit=need, offset=config.offset)
        except EditRequestError as exc:
            raise ValueError(
                f"{config.data}: {exc} (skip_invalid / --skip-invalid keeps the valid records and counts the others)"
            ) from None
        return Facts([], [], reqs, n_read=len(reqs))
    ok, errors = validate(config.data, format=config.format, offset=config.offset)
    used = ok[:need]
    last = used[-1].index if used and used[-1].index is not None else None
    n_used = sum(1 for e in errors if last is None or e.index is None or e.index <= last)
    return Facts([], [], used, n_read=len(ok) + len(errors), n_invalid=len(errors), n_invalid_used=n_used,
                 errors=[str(e) for e in errors[:_SHOWN_ERRORS]])


def load_facts(config: ExperimentConfig, out: str | Path | None = None, fresh: bool = False) -> Facts:
    """Load, split and (with `out`) record or check the split in out/split.json (`fresh`: the folder
    holds no result yet, so a different recorded split is simply replaced).

    Raises ValueError when the file has too few (valid) records for the sizes asked, when a record
    is malformed (without skip_invalid), or when `out` holds results made on other facts.
    """
    split_n = config.proxy_n + config.test_n
    need = config.proxy_n + config.pool_n
    facts = _read(config, need)
    reqs = facts.pool
    kind = "valid records" if config.skip_invalid else "records"
    if len(reqs) < split_n:
        raise ValueError(
            f"{config.data}: {len(reqs)} {kind} after offset {config.offset}; proxy_n + test_n = {split_n} are needed"
        )
    if len(reqs) < need:
        raise ValueError(
            f"{config.data}: {len(reqs)} {kind} after offset {config.offset}; the mass-editing sizes need "
            f"{config.pool_n} facts beside the {config.proxy_n} proxy facts ({need} in all): lower --batch-sizes / "
            "--sequential-n or use a larger file"
        )
    proxy, test = split(reqs[:split_n], config.proxy_n / split_n, seed=config.seed)
    facts.proxy, facts.test, facts.pool = proxy, test, test + list(reqs[split_n:need])
    if out is not None:
        _check_split(Path(out), facts, fresh)
    return facts


def _check_split(out: Path, facts: Facts, fresh: bool) -> None:
    keys = {"proxy": [request_key(r) for r in facts.proxy], "test": [request_key(r) for r in facts.test]}
    pool = [request_key(r) for r in facts.pool]
    dup = {k for k, c in Counter(keys["proxy"] + pool).items() if c > 1}
    if dup:
        first = next(r for r in facts.proxy + facts.pool if request_key(r) in dup)
        raise ValueError(f"{first.ref}: the same fact appears twice among the facts used ({request_key(first)})")
    path = out / "split.json"
    old = None if fresh else read_json(path)
    if old is not None:
        if old.get("proxy") != keys["proxy"] or old.get("test") != keys["test"]:
            raise ValueError(
                f"{path}: a different proxy / test split was used there (other data, offset, sizes or seed); "
                "use another output folder"
            )
        stored = old.get("pool", [])
        common = min(len(stored), len(pool))
        if stored[:common] != pool[:common]:
            raise ValueError(f"{path}: the evaluation pool differs from the one used there; use another output folder")
        if len(pool) <= len(stored):
            return
    write_json(path, keys | {"pool": pool})
