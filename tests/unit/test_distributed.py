"""golden_fast.distributed: sharding, reductions and ordered gathering, in one process and in 2 gloo ranks."""

from __future__ import annotations

import pytest
import torch
from _spawn_ranks import run_ranks

from golden_fast import distributed as D


def test_single_process_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not D.launched() and not D.init() and not D.active()
    assert (D.rank(), D.world_size(), D.is_main()) == (0, 1, True)
    assert D.shard(5) == [0, 1, 2, 3, 4]
    t = torch.arange(3.0)
    assert D.all_reduce_sum(t) is t and torch.equal(t, torch.arange(3.0))
    assert D.gather_in_order(3, ["a", "b", "c"]) == ["a", "b", "c"]
    assert D.digest_agrees([t])


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (7, 2), (10, 3), (5, 8)])
def test_shards_cover_every_example_once(n, world):
    got = sorted(i for r in range(world) for i in D.shard(n, r, world))
    assert got == list(range(n))


def test_shard_rejects_a_bad_rank():
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        D.shard(4, 2, 2)


def test_world_size_must_be_an_integer(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        D.launched()


def test_digest_sees_dtype_shape_and_bytes():
    a = torch.zeros(2, 3)
    assert D.tensor_digest([a]) == D.tensor_digest([a.clone()])
    assert D.tensor_digest([a]) != D.tensor_digest([a.double()])
    assert D.tensor_digest([a]) != D.tensor_digest([a.reshape(3, 2)])
    b = a.clone()
    b[1, 2] = 1e-30
    assert D.tensor_digest([a]) != D.tensor_digest([b])


def _collectives(n: int):
    mine = D.shard(n)
    t = torch.zeros(n, dtype=torch.float64)
    t[mine] = torch.tensor([float(i * i) for i in mine], dtype=torch.float64)
    D.all_reduce_sum(t)
    ordered = D.gather_in_order(n, [f"x{i}" for i in mine])
    w = torch.full((2, 2), float(D.rank()))
    D.broadcast_(w, src=0)
    obj = D.broadcast_object({"rank": D.rank()})
    return {"rank": D.rank(), "world": D.world_size(), "mine": mine, "sum": t.tolist(), "ordered": ordered,
            "w": w.tolist(), "obj": obj, "agrees": D.digest_agrees([w]),
            "differs": D.digest_agrees([torch.tensor([float(D.rank())])]), "main": D.is_main(),
            "progress": D.progress_enabled(True)}


def test_two_gloo_ranks():
    n = 7
    r0, r1 = run_ranks(_collectives, 2, n)
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["mine"] == [0, 2, 4, 6] and r1["mine"] == [1, 3, 5]
    for r in (r0, r1):
        assert r["sum"] == [float(i * i) for i in range(n)]
        assert r["ordered"] == [f"x{i}" for i in range(n)]
        assert r["w"] == [[0.0, 0.0], [0.0, 0.0]] and r["obj"] == {"rank": 0}
        assert r["agrees"] and not r["differs"]
    assert r0["main"] and r0["progress"] and not r1["main"] and not r1["progress"]
