"""Second-moment statistics and LGA in 2 gloo ranks (torchrun's data parallelism) against one process:
the same sums, counts, scores and chosen layer; the cache written once; a killed rank resuming from
its own checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _spawn_ranks import run_ranks

import golden_fast.stats.second_moment as sm
from golden_fast import distributed as D
from golden_fast.data import EditRequest
from golden_fast.locate.lga import LGAConfig, lga
from golden_fast.models import build_tiny, load_model
from golden_fast.stats import StatsConfig, second_moments

TEXTS = [
    "The capital of France is Paris. The Eiffel Tower is located in Paris, France.",
    "Toko Yasuda plays the guitar.",
    "What is the capital of Japan? Tokyo.",
    "The official language of Italy is Italian! Rome is the capital of Italy and Berlin of Germany.",
    "Apple A5 was created by Apple.",
    "Einstein",
    "The mother tongue of Danielle Darrieux is French. She was born in France and died in 2017.",
    "Nintendo, Sony and Toyota are companies of Japan; Nokia is one of Finland.",
    "Michel Rocard was a French politician.",
    "The Colosseum is in Rome.",
    "Mount Fuji is the highest mountain of Japan.",
    "The Danube flows through Vienna, Budapest and Belgrade before it reaches the Black Sea.",
    "Marie Curie won two Nobel prizes.",
    "Oslo",
]
LAYERS = [0, 2, 3]
FACTS = [
    ("The capital of {} is", "France", "Rome", "Paris"),
    ("{} plays the", "Toko Yasuda", "piano", "guitar"),
    ("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
    ("{} is located in the continent of", "Kenya", "Europe", "Africa"),
    ("The official language of {} is", "Italy", "German", "Italian"),
]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))


@pytest.fixture
def corpus(tmp_path) -> str:
    p = tmp_path / "texts.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return str(p)


def _cfg(corpus: str, **kw) -> StatsConfig:
    # a small token budget: several batches per rank, with left padding
    return StatsConfig(corpus=corpus, **{"n_samples": 100, "batch_tokens": 48, "cache": False, **kw})


def _env(tmp_path: Path) -> dict[str, str]:
    return {"GOLDEN_FAST_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}


def _plain(stats: dict) -> dict:
    return {layer: (s.sum.cpu(), s.count, s.n_texts, s.from_cache) for layer, s in stats.items()}


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    scale = b.abs().max().item()
    err = (a.double() - b.double()).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3e} > {rel:.0e} x {scale:.3e}"


def _count_forwards() -> list[int]:
    """Counts the batches (forward passes) of the statistics passes of this spawned rank."""
    calls: list[int] = []
    real = sm._forward

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    sm._forward = counted
    return calls


def _rank_batches(model, tok, batch_tokens: int) -> list[int]:
    """Batches of each of 2 ranks' shares, as the pass plans them."""
    max_len = sm.effective_max_length(model, StatsConfig(corpus="unused"))
    plan = sm._plan(sm._tokenize(tok, TEXTS, max_len, True), batch_tokens)
    return [len(sm._plan([plan.seqs[i] for i in D.shard(plan.n_texts, r, 2)], batch_tokens).bounds)
            for r in range(2)]


# -- second moments ------------------------------------------------------------------------------
def _both_dtypes(corpus: str) -> dict:
    """float32 sums of the float32 model; float64 sums of its float64 copy (keys without float32 rounding)."""
    out = {}
    for dtype in ("float32", "float64"):
        model, tok = build_tiny("tiny-llama", dtype=getattr(torch, dtype))
        out[dtype] = second_moments(model, tok, LAYERS, _cfg(corpus, dtype=dtype), progress=False)
    return out


def _stats_worker(corpus: str) -> dict:
    calls = _count_forwards()
    out = {dtype: _plain(stats) for dtype, stats in _both_dtypes(corpus).items()}
    res = {"stats": out, "forwards": len(calls) // 2}
    if D.rank() == 1:  # a pass of this rank alone: no other rank joins it
        model, tok = load_model("tiny-llama")
        res["alone"] = _plain(second_moments(model, tok, LAYERS, _cfg(corpus), progress=False, data_parallel=False))
    return res


def test_two_ranks_give_one_process_statistics(corpus, tmp_path):
    one = _both_dtypes(corpus)
    r0, r1 = run_ranks(_stats_worker, 2, corpus, env=_env(tmp_path))
    model, tok = load_model("tiny-llama")
    # each rank batches its own half; the halves are alike (strided over the length-sorted texts)
    assert [r0["forwards"], r1["forwards"]] == _rank_batches(model, tok, 48)
    assert abs(r0["forwards"] - r1["forwards"]) <= 1
    for dtype, rel in (("float32", 1e-6), ("float64", 1e-13)):
        for layer in LAYERS:
            s0, c0, n0, _ = r0["stats"][dtype][layer]
            s1, c1, n1, _ = r1["stats"][dtype][layer]
            ref = one[dtype][layer]
            assert c0 == c1 == ref.count > 0, "every token counted once over the ranks"
            assert n0 == n1 == ref.n_texts == len(TEXTS)
            assert s0.dtype == ref.sum.dtype and torch.equal(s0, s1), "every rank holds the same total"
            assert torch.equal(s0, s0.T)
            _close(s0, ref.sum, rel)  # only the order of the additions differs
    for layer in LAYERS:
        s, count, _, _ = r1["alone"][layer]
        assert count == one["float32"][layer].count
        torch.testing.assert_close(s, one["float32"][layer].sum, rtol=1e-6, atol=1e-7)  # the same batches


def _cache_worker(corpus: str, home: str) -> dict:
    model, tok = load_model("tiny-llama")
    calls = _count_forwards()
    cfg = _cfg(corpus, cache=True)
    first = _plain(second_moments(model, tok, [1, 3], cfg, progress=False))
    D.barrier()
    files = sorted(p.name for p in Path(home).rglob("*.safetensors"))
    n_first = len(calls)
    again = _plain(second_moments(model, tok, [0, 1, 2, 3], cfg, progress=False))
    # a corpus that writes its own cache when first read: rank 0 samples it, the other rank reads it
    sampled = cfg.replace(corpus="model-sampled", n_samples=6, sample_length=8, cache=False)
    plan = sm._read_plan(tok, sm._setup(model, tok, [0], sampled, False, None), sampled, True)
    return {"first": first, "again": again, "files": files, "calls": (n_first, len(calls) - n_first),
            "sampled": [s.tolist() for s in plan.seqs]}


def test_cache_is_written_by_rank_0_and_read_by_every_rank(corpus, tmp_path):
    home = tmp_path / "home"
    r0, r1 = run_ranks(_cache_worker, 2, corpus, str(home), env=_env(tmp_path))
    model, tok = load_model("tiny-llama")
    one = second_moments(model, tok, [0, 1, 2, 3], _cfg(corpus), progress=False)
    assert r0["files"] == r1["files"] == ["layer001-n100-float32.safetensors", "layer003-n100-float32.safetensors"]
    for r in (r0, r1):
        assert r["calls"][0] == r["calls"][1] > 0, "the second call makes one pass (layers 0 and 2)"
        for layer in (1, 3):
            s, count, n_texts, from_cache = r["again"][layer]
            assert from_cache and not r["first"][layer][3]
            assert torch.equal(s, r0["first"][layer][0]) and count == r0["first"][layer][1]
            assert n_texts == len(TEXTS)
        for layer in range(4):
            s, count, _, _ = r["again"][layer]
            assert count == one[layer].count
            _close(s, one[layer].sum, 1e-6)
    assert not list(home.rglob("partial-*")), "every rank drops its checkpoint once the cache is written"
    assert r0["sampled"] == r1["sampled"] and len(r0["sampled"]) == 6
    assert len(list((home / "corpora").rglob("*.jsonl"))) == 1


def _killed_then_resumed(corpus: str, home: str, die_at: list[int]) -> dict:
    """Rank r is killed in its die_at[r]-th batch (as torchrun stops every rank when one dies), then
    the job is started again; returns what the restarted pass computed and how many batches it ran."""
    model, tok = load_model("tiny-llama")
    cfg = _cfg(corpus, cache=True, batch_tokens=32, checkpoint_every=1)
    calls = _count_forwards()
    counted = sm._forward

    def dying(*args, **kwargs):
        if len(calls) + 1 == die_at[D.rank()]:
            raise KeyboardInterrupt(f"rank {D.rank()} killed")
        return counted(*args, **kwargs)

    sm._forward = dying
    with pytest.raises(KeyboardInterrupt):
        second_moments(model, tok, LAYERS, cfg, progress=False)
    D.barrier()  # both ranks are down
    ckpts = sorted(p.name.rsplit("-", 1)[-1] for p in Path(home).rglob("partial-*.safetensors"))
    cached = sorted(p.name for p in Path(home).rglob("layer*.safetensors"))
    sm._forward = counted
    calls.clear()
    stats = _plain(second_moments(model, tok, LAYERS, cfg, progress=False))
    return {"stats": stats, "forwards": len(calls), "ckpts": ckpts, "cached": cached}


def test_killed_ranks_resume_from_their_own_checkpoints(corpus, tmp_path):
    home = tmp_path / "home"
    model, tok = load_model("tiny-llama")
    nb = _rank_batches(model, tok, 32)
    assert min(nb) >= 4
    # rank 0 dies in its 2nd batch (1 checkpointed), rank 1 in its 3rd (2 checkpointed)
    r0, r1 = run_ranks(_killed_then_resumed, 2, corpus, str(home), [2, 3], env=_env(tmp_path))
    assert r0["ckpts"] == ["rank0of2.safetensors", "rank1of2.safetensors"], "one checkpoint per rank"
    assert r0["cached"] == [], "no cache from an interrupted pass"
    assert r0["forwards"] == nb[0] - 1, "rank 0 resumes after its 1 checkpointed batch"
    assert r1["forwards"] == nb[1] - 2, "rank 1 resumes after its 2 checkpointed batches"
    one = second_moments(model, tok, LAYERS, _cfg(corpus, batch_tokens=32), progress=False)
    for layer in LAYERS:
        for r in (r0, r1):
            s, count, _, _ = r["stats"][layer]
            assert count == one[layer].count
            _close(s, one[layer].sum, 1e-6)
    assert not list(home.rglob("partial-*")), "checkpoints removed when done"
    assert len(list(home.rglob("layer*.safetensors"))) == len(LAYERS)


# -- LGA -----------------------------------------------------------------------------------------
def _requests() -> list[EditRequest]:
    reqs = [EditRequest(p, s, t, ground_truth=g, index=i) for i, (p, s, t, g) in enumerate(FACTS)]
    reqs[3] = EditRequest(reqs[3].prompt, reqs[3].subject, reqs[3].target_new, index=3)  # a greedy old answer
    return reqs


def _lga_run(data_parallel: bool = True) -> dict:
    model, tok = load_model("tiny-llama")
    cfg = LGAConfig(batch_size=2, old_answer="auto")
    scores = lga(model, tok, _requests(), None, cfg, data_parallel=data_parallel)
    per = scores.extra["per_sample"]
    return {"variants": {k: np.asarray(v) for k, v in scores.variants.items()}, "chosen": scores.chosen,
            "top": scores.top_k, "ab": per["ab"], "aa": per["aa"], "bb": per["bb"],
            "loss": scores.extra["loss"], "source": scores.extra["old_answer_source"]}


def _lga_worker() -> dict:
    res = _lga_run()
    if D.rank() == 1:  # this rank alone, every request: no other rank joins it
        res["alone"] = _lga_run(data_parallel=False)
    return res


def test_two_ranks_give_one_process_lga(tmp_path):
    ref = _lga_run()
    r0, r1 = run_ranks(_lga_worker, 2, env=_env(tmp_path))
    alone = r1["alone"]
    assert alone["chosen"] == ref["chosen"]
    assert np.allclose(alone["ab"], ref["ab"], rtol=1e-6, atol=1e-9)  # the same batches
    rel = 1e-5  # the products are float32 (grad_inner); the ranks' batches pad differently: rounding only
    for r in (r0, r1):
        assert r["source"] == ref["source"] == ["data", "data", "data", "greedy", "data"]
        assert r["chosen"] == ref["chosen"] and r["top"] == ref["top"]
        scale = np.sqrt(ref["aa"] * ref["bb"])
        assert (np.abs(r["ab"] - ref["ab"]) <= rel * scale).all()
        for k in ("aa", "bb"):
            assert np.allclose(r[k], ref[k], rtol=rel, atol=0)
        for k in ("old", "new"):
            assert np.allclose(r["loss"][k], ref["loss"][k], rtol=rel, atol=0)
        for name, v in ref["variants"].items():
            assert np.allclose(r["variants"][name], v, rtol=rel, atol=rel * np.abs(v).max())
    for k in ("ab", "aa", "bb"):
        assert np.array_equal(r0[k], r1[k]), "every rank scores the same products"
