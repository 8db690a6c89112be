"""Fixtures for the unit tier: tiny random models of each family, CPU only, seconds."""

from __future__ import annotations

import shutil

import pytest

from golden_fast.models import TINY_NAMES, load_model


@pytest.fixture(scope="session", params=TINY_NAMES)
def tiny(request):
    """(name, model, tokenizer) for each tiny family; shared read-only across the session."""
    model, tok = load_model(request.param)
    return request.param, model, tok


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless-capable Chromium, else the test skips with how to install it."""
    path = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if path is None:
        pytest.skip("no Chromium here: `make browser` installs Debian's chromium (root)")
    return path


@pytest.fixture()
def study_env(tmp_path, monkeypatch):
    """A private $GOLDEN_FAST_HOME under tmp_path and one torch thread (the tiny models are far faster on
    one thread on a busy machine); yields tmp_path."""
    import torch

    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)
