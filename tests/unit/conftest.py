"""Fixtures for the unit tier: tiny random models of each family, CPU only, seconds."""

from __future__ import annotations

import pytest

from golden_fast.models import TINY_NAMES, load_model


@pytest.fixture(scope="session", params=TINY_NAMES)
def tiny(request):
    """(name, model, tokenizer) for each tiny family; shared read-only across the session."""
    model, tok = load_model(request.param)
    return request.param, model, tok
