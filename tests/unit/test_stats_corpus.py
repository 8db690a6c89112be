"""Corpora for the statistics: local files, Hugging Face names (errors only: no hub here), the
model-sampled fallback, identities, and StatsConfig validation."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types

import pytest
import torch

from golden_fast.models import load_model
from golden_fast.stats import CorpusUnavailableError, StatsConfig, corpus_key, resolve_corpus
from golden_fast.stats.corpus import _GEN_BATCH, sampled_corpus_path


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))


CFG = StatsConfig(corpus="unused")


def test_config_validates():
    assert StatsConfig().dtype == "float32" and StatsConfig().max_length == 1024
    assert StatsConfig(dtype=torch.float64).dtype == "float64"
    for bad in ({"dtype": "bfloat16"}, {"n_samples": 0}, {"max_length": -1}, {"batch_tokens": 1.5},
                {"checkpoint_every": -1}, {"corpus": ""}):
        with pytest.raises(ValueError):
            StatsConfig(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        StatsConfig().n_samples = 3


def test_txt_paragraphs_and_lines(tmp_path):
    para = tmp_path / "para.txt"
    para.write_text("First paragraph,\nstill first.\n\n  \nSecond one.\n\n\nThird.\n")
    texts = resolve_corpus(str(para), CFG).texts(10)
    assert texts == ["First paragraph,\nstill first.", "Second one.", "Third."]
    lines = tmp_path / "lines.txt"
    lines.write_text("one sentence\nanother sentence\nthird\n")  # no blank line: one text per line
    assert resolve_corpus(str(lines), CFG).texts(2) == ["one sentence", "another sentence"]


def test_jsonl_field_and_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"text": " a "}) + "\n\n" + json.dumps("bare string") + "\n"
                 + json.dumps({"text": ""}) + "\n" + json.dumps({"text": "b"}) + "\n")
    assert resolve_corpus(str(p), CFG).texts(10) == ["a", "bare string", "b"]
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="q.jsonl:1: record has no 'text' field"):
        resolve_corpus(str(q), CFG).texts(1)
    assert resolve_corpus(str(q), StatsConfig(corpus="x", text_field="body")).texts(1) == ["x"]
    r = tmp_path / "r.jsonl"
    r.write_text("{not json\n")
    with pytest.raises(ValueError, match="r.jsonl:1: not JSON"):
        resolve_corpus(str(r), CFG).texts(1)


def test_directory_in_sorted_order(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("from b")
    (d / "a.jsonl").write_text(json.dumps({"text": "from a"}) + "\n")
    (d / "sub" / "c.txt").write_text("from c1\n\nfrom c2")
    (d / ".hidden.txt").write_text("hidden")
    (d / "skip.csv").write_text("not read")
    c = resolve_corpus(str(d), CFG)
    assert c.kind == "dir"
    assert c.texts(100) == ["from a", "from b", "from c1", "from c2"]
    assert c.texts(2) == ["from a", "from b"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt or .jsonl"):
        resolve_corpus(str(tmp_path / "empty"), CFG)


def test_identity_follows_the_source(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("hello\n\nworld")
    a = resolve_corpus(str(p), CFG)
    assert a.fingerprint == resolve_corpus(str(p), CFG).fingerprint
    p.write_text("hello\n\nworld, changed")
    os.utime(p, ns=(1, 1))
    b = resolve_corpus(str(p), CFG)
    assert b.fingerprint != a.fingerprint
    k = corpus_key(b, 1024, True)
    assert k.startswith("c-") and k != corpus_key(b, 512, True) and k != corpus_key(b, 1024, False)


def test_unknown_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model-sampled"):
        resolve_corpus(str(tmp_path / "nope.txt"), CFG)
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(ValueError, match=r"\.txt or \.jsonl"):
        resolve_corpus(str(tmp_path / "x.csv"), CFG)


@pytest.mark.parametrize("name", ["wikitext-103", "wikipedia"])
def test_hf_corpus_without_datasets(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    c = resolve_corpus(name, CFG)  # resolving reads nothing
    with pytest.raises(CorpusUnavailableError, match="`datasets` package.*model-sampled"):
        c.texts(5)


def test_hf_corpus_hub_unreachable(monkeypatch):
    fake = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(CorpusUnavailableError, match="ConnectionError: no route.*offline"):
        resolve_corpus("wikitext-103", CFG).texts(5)


def test_hf_corpus_streams_nonempty_texts(monkeypatch):
    """With a (fake) reachable hub: streamed, shuffled with the seed, blank rows skipped."""
    seen = {}

    class FakeStream:
        def __init__(self, rows):
            self.rows = rows

        def shuffle(self, seed, buffer_size):
            seen["seed"] = seed
            return self

        def __iter__(self):
            return iter(self.rows)

    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda path, config, split, streaming: (
        seen.update(path=path, config=config, split=split, streaming=streaming)
        or FakeStream([{"text": ""}, {"text": " = Heading = "}, {"text": "\n"}, {"text": "Body."}])
    )
    monkeypatch.setitem(sys.modules, "datasets", fake)
    texts = resolve_corpus("wikitext-103", StatsConfig(corpus="x", seed=7)).texts(10)
    assert texts == ["= Heading =", "Body."]
    assert seen == {"path": "wikitext", "config": "wikitext-103-raw-v1", "split": "train", "streaming": True,
                    "seed": 7}


@pytest.fixture(scope="module")
def llama():
    return load_model("tiny-llama")


def test_model_sampled_is_seeded_cached_and_extended(llama):
    model, tok = llama
    cfg = StatsConfig(corpus="model-sampled", sample_length=6, seed=3)
    rng_before = torch.get_rng_state()
    c = resolve_corpus("model-sampled", cfg, model, tok, progress=False)
    first = c.texts(5)
    assert torch.equal(torch.get_rng_state(), rng_before), "sampling must not disturb the global RNG"
    assert len(first) == 5 and all(isinstance(t, str) and t for t in first)
    path = sampled_corpus_path(model, cfg)
    assert path.is_file() and len(path.read_text().splitlines()) == _GEN_BATCH  # whole batches only
    more = resolve_corpus("builtin-sampled", cfg, model, tok, progress=False).texts(_GEN_BATCH + 3)
    assert more[:5] == first, "a longer request extends the cached corpus, never resamples it"
    assert len(path.read_text().splitlines()) == 2 * _GEN_BATCH
    other = StatsConfig(corpus="model-sampled", sample_length=6, seed=4)
    assert resolve_corpus("model-sampled", other, model, tok, progress=False).texts(5) != first


def test_model_sampled_resumes_after_a_torn_write(llama):
    model, tok = llama
    cfg = StatsConfig(corpus="model-sampled", sample_length=5)
    full = resolve_corpus("model-sampled", cfg, model, tok, progress=False).texts(2 * _GEN_BATCH)
    path = sampled_corpus_path(model, cfg)
    lines = path.read_text().splitlines()
    # an interruption in the middle of batch 1: a few records and half a line
    path.write_text("\n".join(lines[: _GEN_BATCH + 3]) + "\n" + lines[_GEN_BATCH + 3][:7])
    again = resolve_corpus("model-sampled", cfg, model, tok, progress=False).texts(2 * _GEN_BATCH)
    assert again == full


def test_model_sampled_needs_the_model():
    with pytest.raises(ValueError, match="needs the model"):
        resolve_corpus("model-sampled", CFG)


def test_wikitext_2_corpus_reads_the_data_folder(tmp_path, monkeypatch):
    """"wikitext-2" names the test split of the data folder, detokenised, identified by its content."""
    folder = tmp_path / "data" / "wikitext-2"
    folder.mkdir(parents=True)
    (folder / "test.txt").write_text(" \n = Title = \n \n First text , here . \n \n Second @-@ text . \n")
    monkeypatch.setenv("GOLDEN_FAST_DATA", str(tmp_path / "data"))
    c = resolve_corpus("wikitext-2", StatsConfig(corpus="wikitext-2"))
    assert c.kind == "wikitext" and c.texts(5) == ["First text, here.", "Second-text."]
    moved = tmp_path / "elsewhere" / "wikitext-2"
    moved.mkdir(parents=True)
    (moved / "test.txt").write_bytes((folder / "test.txt").read_bytes())
    monkeypatch.setenv("GOLDEN_FAST_DATA", str(tmp_path / "elsewhere"))
    assert resolve_corpus("wikitext-2", StatsConfig(corpus="wikitext-2")).fingerprint == c.fingerprint
    monkeypatch.setenv("GOLDEN_FAST_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="GOLDEN_FAST_DATA"):
        resolve_corpus("wikitext-2", StatsConfig(corpus="wikitext-2"))
