"""bench/scale_out.py's comparison and table (the timed runs themselves are the benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import scale_out  # noqa: E402


def test_results_compare_vectors_against_their_largest_entry():
    assert scale_out._close({"chosen": 8, "scores": [100.0, 1.0]}, {"chosen": 8, "scores": [100.05, 1.04]}, 1e-3)
    assert not scale_out._close({"chosen": 8, "scores": [100.0, 1.0]}, {"chosen": 9, "scores": [100.0, 1.0]}, 1e-3)
    assert not scale_out._close({"scores": [100.0, 1.0]}, {"scores": [100.0, 1.2]}, 1e-3)
    assert not scale_out._close({"scores": [1.0, 2.0]}, {"scores": [1.0]}, 1e-3)
    assert scale_out._close({"M": [[[0.5, None]]]}, {"M": [[[0.5, None]]]}, 1e-3)
    assert not scale_out._close({"M": [[[0.5, None]]]}, {"M": [[[0.5, 0.1]]]}, 1e-3)


def test_table_of_the_last_run(tmp_path):
    import json

    base = {"device": "cpu", "commit": "abc", "load_average": 1.5, "same_result_as_1": True}
    rows = [dict(base, run="r1", stage="lga", processes=1, seconds=9.0, speedup_vs_1=1.0, work={"facts": 8}),
            dict(base, run="r2", stage="lga", processes=1, seconds=10.0, speedup_vs_1=1.0, work={"facts": 8}),
            dict(base, run="r2", stage="lga", processes=2, seconds=5.5, speedup_vs_1=1.818, work={"facts": 8},
                 same_result_as_1=False)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = scale_out.last_run(path)
    assert [r["seconds"] for r in run] == [10.0, 5.5]
    text = scale_out.markdown(run)
    assert "| lga | 8 facts | 10.0 | 5.5 | 1.82x | NO |" in text
