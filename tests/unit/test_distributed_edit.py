"""Batch editing and the CLI under torchrun, in 2 gloo processes: the targets are sharded across the
ranks, the update is solved on rank 0 and broadcast, and every rank ends with bitwise the same
weights, equal to one process's edit within float32 rounding; only rank 0 prints and writes."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
import torch
from _spawn_ranks import free_port, run_ranks

from golden_fast import distributed as D
from golden_fast.data import EditRequest
from golden_fast.edit import EditError, Editor
from golden_fast.models import get_adapter, load_model

FACTS = [
    ("The mother tongue of {} is", "Danielle Darrieux", "English"),
    ("{} is located in", "Eiffel Tower", "Rome"),
    ("{} plays the", "Toko Yasuda", "piano"),
    ("{} was born in", "Ada Lovelace", "Tokyo"),
    ("The capital of {} is", "France", "Berlin"),
]
LAYERS = [1, 2]
HP = {"context_template_length_params": [[3, 2]], "v_num_grad_steps": 4}
HPARAMS = {"memit": HP, "emmet": HP, "alphaedit": dict(HP, nullspace_rel_threshold=0.9, L2=1.0),
           "ultraedit": {"group_size": 2, "lr": 1e-4}}
# (targets made, updates solved) of (rank 0, rank 1) for the 5 requests: targets strided over the
# ranks (UltraEdit's by groups of 2: rank 0 groups {0, 1} and {4}, rank 1 {2, 3}), the solve on rank 0
EXPECTED = {"memit": ((3, 2), (2, 0)), "emmet": ((3, 2), (2, 0)), "alphaedit": ((3, 2), (2, 0)),
            "ultraedit": ((3, 1), (2, 0))}


def _requests() -> list[EditRequest]:
    return [EditRequest(p, s, t, index=i) for i, (p, s, t) in enumerate(FACTS)]


def _stats(model) -> dict[int, torch.Tensor]:
    """A fixed, well-conditioned C per layer (no corpus pass)."""
    g = torch.Generator().manual_seed(0)
    m = get_adapter(model).d_ff
    out = {}
    for layer in LAYERS:
        X = torch.randn(4 * m, m, generator=g, dtype=torch.float64)
        out[layer] = X.T @ X / (4 * m)
    return out


def _weights(model) -> dict[int, torch.Tensor]:
    a = get_adapter(model)
    return {layer: a.down_weight(layer).detach().clone() for layer in LAYERS}


def _editor(model, tok, method: str) -> Editor:
    return Editor(model, tok, method, layers=LAYERS, hparams=HPARAMS[method], stats=_stats(model), progress=False)


def _targets(res) -> torch.Tensor:
    """The per-request targets of an edit: z, or UltraEdit's NLL before its edit (from its gradients pass)."""
    return torch.stack([torch.as_tensor(t.extras["z"] if "z" in t.extras else t.extras["nll"]) for t in res.traces])


def _edit_and_revert(name: str, method: str) -> dict:
    """Edit the batch, record what this rank did and the weights, revert; counts how many targets this
    rank optimised and how many layer updates it solved."""
    import golden_fast.edit.methods.alphaedit as alphaedit
    import golden_fast.edit.methods.memit as memit
    import golden_fast.edit.methods.ultraedit as ultraedit
    import golden_fast.edit.values as values

    counts = [0, 0]  # targets made (requests), updates solved
    # (module, name of its targets function, name of its solve function)
    where = {"alphaedit": (values, "_optimise", alphaedit, "_layer_update"),
             "ultraedit": (ultraedit, "capture_rows", ultraedit, "_solve")}.get(
        method, (values, "_optimise", memit, "_layer_update"))
    real_targets, real_solve = getattr(where[0], where[1]), getattr(where[2], where[3])

    def targets(model, tok, requests, *a, **k):
        counts[0] += len(requests)
        return real_targets(model, tok, requests, *a, **k)

    def solve(*a, **k):
        counts[1] += 1
        return real_solve(*a, **k)

    setattr(where[0], where[1], targets)
    setattr(where[2], where[3], solve)
    model, tok = load_model(name)
    before = _weights(model)
    ed = _editor(model, tok, method)
    try:
        res = ed.edit(_requests())
    finally:
        setattr(where[0], where[1], real_targets)
        setattr(where[2], where[3], real_solve)
    after = _weights(model)
    agree = D.digest_agrees(after.values())
    ed.revert()
    return {"shared": ed.shared(), "counts": counts, "after": after, "agree": agree,
            "reverted": all(torch.equal(w, before[k]) for k, w in _weights(model).items()),
            "z": _targets(res), "state": dict(res.journal.editor_state or {})}


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    return tmp_path


# one spawn for every case: starting 2 processes costs more than the edits
CASES = [("tiny-llama", "memit"), ("tiny-gpt2", "emmet"), ("tiny-llama", "alphaedit"), ("tiny-gpt2", "ultraedit")]


def _every_case(cases: list[tuple[str, str]]) -> list[dict]:
    return [_edit_and_revert(name, method) for name, method in cases]


def _one_process(name: str, method: str) -> tuple[dict, dict, torch.Tensor]:
    """(weights before, weights after, targets z) of the same edit in this single process."""
    model, tok = load_model(name)
    original = _weights(model)
    ed = _editor(model, tok, method)
    res = ed.edit(_requests())
    assert not ed.shared()
    return original, _weights(model), _targets(res)


def test_batch_edits_in_two_ranks_equal_one_process(home, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = run_ranks(_every_case, 2, CASES, env={"GOLDEN_FAST_HOME": str(home / "home")})
    for (name, method), r0, r1 in zip(CASES, *ranks):
        original, single, z_single = _one_process(name, method)
        assert r0["shared"] and r1["shared"] and r0["agree"] and r1["agree"], method
        assert (tuple(r0["counts"]), tuple(r1["counts"])) == EXPECTED[method]
        assert torch.equal(r0["z"], r1["z"])
        torch.testing.assert_close(r0["z"], z_single, rtol=1e-5, atol=1e-5)
        for layer in LAYERS:
            assert torch.equal(r0["after"][layer], r1["after"][layer]), (method, layer)
            assert not torch.equal(r0["after"][layer], original[layer]), (method, layer)
            torch.testing.assert_close(r0["after"][layer], single[layer], rtol=1e-4, atol=1e-5)
        assert r0["reverted"] and r1["reverted"], method
        if method in ("alphaedit", "ultraedit"):  # each rank's lifelong state, the same on both
            assert r0["state"] and set(r0["state"]) == set(r1["state"])
            for key, value in r0["state"].items():
                assert torch.equal(value, r1["state"][key]), key


def _failing_targets_on_rank_1(name: str) -> dict:
    import golden_fast.edit.values as values

    real = values._optimise

    def optimise(model, tok, requests, *a, **k):
        if D.rank() == 1:
            raise EditError(f"{requests[0].ref}: no subject tokens here")
        return real(model, tok, requests, *a, **k)

    values._optimise = optimise
    model, tok = load_model(name)
    before = _weights(model)
    try:
        with pytest.raises(EditError) as info:
            _editor(model, tok, "memit").edit(_requests())
    finally:
        values._optimise = real
    return {"message": str(info.value), "unchanged": all(torch.equal(w, before[k]) for k, w in _weights(model).items())}


def _disagreeing_ranks(name: str) -> dict:
    model, tok = load_model(name)
    ed = _editor(model, tok, "memit")
    ed.check_ranks_agree()  # the same model on both ranks: no error
    with torch.no_grad():
        get_adapter(model).down_weight(LAYERS[0])[0, 0] += float(D.rank())
    with pytest.raises(EditError) as info:
        ed.check_ranks_agree()
    return {"message": str(info.value)}


def _rank_local_edits(name: str) -> dict:
    """Each rank edits its own request: no collective, so no rank waits for the other."""
    from golden_fast.edit.common import collective, rank_local

    model, tok = load_model(name)
    local = Editor(model, tok, "memit", layers=LAYERS, hparams=HP, stats=_stats(model), progress=False,
                   rank_local=True)
    res = local.edit([_requests()[D.rank()]])
    with rank_local():
        inside = collective()
    out = {"shared": local.shared(), "collective": collective(), "inside": inside, "z": _targets(res),
           "agree": D.digest_agrees(_weights(model).values())}
    local.revert()
    # ROME computes alone on every rank: a rank's own request, no collective, no agreement check
    rome = Editor(model, tok, "rome", layers=[1], hparams=dict(HP, mom2_adjustment=False), progress=False)
    rome.edit([_requests()[D.rank()]])
    out.update(rome_shared=rome.shared(), rome_agree=D.digest_agrees(_weights(model).values()))
    return out


def _diverged_caches(name: str) -> dict:
    """A rank-local edit fills rank 1's target cache alone; a shared edit then optimises what any rank
    lacks, on every rank, and leaves the caches alike; saving them writes from rank 0 alone (each rank
    names its own file here, to see which one writes)."""
    from golden_fast.edit.target_cache import reuse_targets

    model, tok = load_model(name)
    with reuse_targets() as cache:
        if D.rank() == 1:
            local = Editor(model, tok, "memit", layers=LAYERS, hparams=HP, stats=_stats(model), progress=False,
                           rank_local=True)
            local.edit(_requests()[:2])
            local.revert()
        ed = _editor(model, tok, "memit")
        res = ed.edit(_requests())
    saved = cache.save(Path(os.environ["GOLDEN_FAST_HOME"]) / f"targets-rank{D.rank()}.safetensors")
    return {"agree": D.digest_agrees(_weights(model).values()), "size": len(cache), "hits": cache.hits,
            "z": _targets(res), "written": saved.is_file()}


def _failures(name: str) -> tuple[dict, dict, dict, dict]:
    return _failing_targets_on_rank_1(name), _disagreeing_ranks(name), _rank_local_edits(name), _diverged_caches(name)


def test_failures_rank_local_edits_and_caches(home):
    """A rank failing in its share of the targets fails the edit on both ranks (nothing applied), and
    ranks holding different weights are an error on both; a rank-local edit is each rank's own, and
    the target cache it filled on one rank does not split a later shared edit."""
    env = {"GOLDEN_FAST_HOME": str(home / "home")}
    (f0, d0, l0, c0), (f1, d1, l1, c1) = run_ranks(_failures, 2, "tiny-llama", env=env)
    assert "rank 1 failed on its share of the batch" in f0["message"]
    assert "no subject tokens here" in f0["message"] and "no subject tokens here" in f1["message"]
    assert f0["unchanged"] and f1["unchanged"]
    for d in (d0, d1):
        assert "ranks hold different weights at layers [1, 2]" in d["message"]
    for r in (l0, l1):
        assert r["collective"] and not r["inside"] and not r["shared"] and not r["agree"]
        assert r["rome_shared"] and not r["rome_agree"]
    assert l0["z"].shape[0] == 1 == l1["z"].shape[0]
    assert not torch.equal(l0["z"], l1["z"])
    assert c0["agree"] and c1["agree"] and torch.equal(c0["z"], c1["z"])
    # the 2 requests rank 1 had were optimised again for both: 5 entries each, no rank served any
    assert (c0["size"], c0["hits"]) == (5, 0) and (c1["size"], c1["hits"]) == (5, 0)
    assert c0["written"] and not c1["written"]


def _cli_in_ranks(root: str) -> dict:
    """`golden-fast experiment` in this rank's own working folder, stdout captured: a write or a print
    from rank 1 shows up in its folder or its text."""
    import torch.distributed as dist

    from golden_fast.cli import main

    cwd = Path(root) / f"rank{os.environ['RANK']}"
    cwd.mkdir()
    os.chdir(cwd)
    text, listing = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(listing):  # a command that knows nothing of ranks prints on rank 0 only too
        rc_list = main(["models", "list"])
    kept = dist.is_initialized()  # a process group made by someone else is left alone
    # as under torchrun: the command joins the process group itself, and destroys it at the end.
    # The new group meets on a new port: on the old one, a rank that got there first could find
    # the other rank's old store still open and wait forever on its stale address.
    port = D.broadcast_object(free_port() if D.is_main() else None)
    dist.destroy_process_group()
    os.environ["MASTER_PORT"] = str(port)
    with contextlib.redirect_stdout(text):
        rc = main(["experiment", "--model", "tiny-llama", "--data", "builtin", "--quick", "--parts", "report",
                   "--out", "exp", "--no-progress", "--threads", "1"])
    files = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.is_file())
    return {"rc": (rc, rc_list), "out": text.getvalue(), "listing": listing.getvalue(), "files": files,
            "group_kept": kept, "group_left": not dist.is_initialized()}


def test_cli_in_two_ranks_prints_and_writes_on_rank_0_only(home):
    r0, r1 = run_ranks(_cli_in_ranks, 2, str(home), env={"GOLDEN_FAST_HOME": str(home / "home")})
    assert r0["rc"] == (0, 0) and r1["rc"] == (0, 0)
    assert r0["group_kept"] and r1["group_kept"] and r0["group_left"] and r1["group_left"]
    assert "report: exp/report.html" in r0["out"] and '"parts": {"report"' in r0["out"]
    assert r1["out"] == "" and r1["listing"] == ""
    assert "tiny-llama" in r0["listing"]
    assert {"exp/meta.json", "exp/split.json", "exp/config.json", "exp/timings.json", "exp/report.html",
            "exp/report.md", "exp/results.json"} <= set(r0["files"])
    assert r1["files"] == []


def _study_in_ranks(out: str) -> int:
    from golden_fast.cli import main

    return main(["experiment", "--model", "tiny-llama", "--data", "builtin", "--quick", "--parts",
                 "lga,editors,mass-batch", "--mass-layers", "1,2", "--batch-sizes", "4", "--out", out, "--no-progress",
                 "--threads", "1"])


def test_study_parts_in_two_ranks_write_each_result_once(home):
    """Two ranks share one results folder: every row of the editors part is there once, every file whole."""
    from golden_fast.fileio import read_json, read_jsonl

    out = home / "study"
    assert run_ranks(_study_in_ranks, 2, str(out), env={"GOLDEN_FAST_HOME": str(home / "home")}) == [0, 0]
    rows = [r for p in sorted(out.rglob("*.jsonl")) for r in read_jsonl(p)]
    assert rows, "the editors part wrote no rows"
    for p in sorted(out.rglob("*.jsonl")):
        keys = [r["key"] for r in read_jsonl(p) if "key" in r]
        assert len(keys) == len(set(keys)), f"{p}: a row written twice"
    assert read_json(out / "locate" / "lga-down.json") is not None
    assert sorted(out.glob("mass/*.json")) or sorted(out.glob("mass/**/*.json"))
