"""The test processes run torch on one thread (or $GOLDEN_FAST_TEST_THREADS), children included.

tests/conftest.py sets it before torch is imported: OpenMP's default of one thread per core stalls
at its barriers when another job holds a core (the suite went from 3.7 to 36 minutes on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def _expected() -> int:
    return int(os.environ.get("GOLDEN_FAST_TEST_THREADS", "").strip() or "1")


def test_this_process_runs_the_test_thread_count():
    # also catches a test that changed the count and did not restore it
    assert torch.get_num_threads() == _expected()
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == str(_expected())


def test_child_processes_inherit_it():
    # as the Triton interpreter's child pytest and the CLI probes are started: with os.environ
    code = "import torch; print(torch.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == _expected()
