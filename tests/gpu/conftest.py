"""GPU tier (beside tests/unit and tests/integration): real CUDA devices only; every test here is
marked `gpu` and skipped without one.

The contract tests of tests/ops also run the "triton" and "cuda" backends on a GPU machine (their
backends are parametrised per device); this tier adds what the CPU cannot show: realistic sizes
(SmolLM2 / Gemma-3 widths and vocabularies), the automatic choice of backend on CUDA, and the CUDA
kernels against the CPU ones. Run: `pytest -q -rs tests/gpu tests/ops` on a machine with a GPU,
after `python setup.py build_ext --inplace` against a CUDA torch (which compiles csrc/cuda/).
"""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = str(config.rootpath / "tests" / "gpu")
    skip = pytest.mark.skip(reason="no CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(skip)
