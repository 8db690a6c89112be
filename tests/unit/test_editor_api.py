"""The Editor API: modes, atomicity, revert, hyperparameter resolution, the CLI.

Most tests drive the Editor with fake methods (callables with run_method's signature), so they
test the Editor's contract, not the editing mathematics; the tests at the end run the real
methods on a tiny model."""

from __future__ import annotations

import argparse
import json
import zlib

import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.edit import EditError, EditJournal, Editor, JournalMismatchError, apply_journal
from golden_fast.edit.base import RequestTrace
from golden_fast.models import TINY_NAMES, build_tiny, get_adapter

LAYER = 1


def _requests(n: int) -> list[EditRequest]:
    facts = [
        ("The capital of {} is", "France", "Rome"),
        ("{} plays the", "Toko Yasuda", "piano"),
        ("The mother tongue of {} is", "Danielle Darrieux", "English"),
        ("{} was created by", "Apple A5", "Google"),
        ("The official language of {} is", "Italy", "French"),
    ]
    return [EditRequest(p, s, t, index=i) for i, (p, s, t) in enumerate(facts[:n])]


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model, snap) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in snap.items())


def _update(model, req: EditRequest, scale: float = 0.1):
    """A deterministic rank-one update per request (seeded by its subject)."""
    a = get_adapter(model)
    g = torch.Generator().manual_seed(zlib.crc32(req.subject.encode()))
    return torch.randn(a.d_model, 1, generator=g) * scale, torch.randn(a.d_ff, 1, generator=g) * scale


class Recorder:
    """A fake method: for each request, records the weight it sees, then applies one update.

    Like ROME's run_method it applies request by request; whether a request sees the previous
    one's update is then entirely up to the Editor's mode."""

    def __init__(self, fail_at: int | None = None, exc: BaseException | None = None,
                 nan_at: int | None = None):
        self.seen: list[torch.Tensor] = []
        self.calls: list[int] = []
        self.fail_at, self.exc, self.nan_at = fail_at, exc, nan_at
        self.__name__ = "recorder"

    def __call__(self, model, tok, requests, hparams, stats, apply, progress=True):
        self.calls.append(len(requests))
        a = get_adapter(model)
        traces = []
        for i, req in enumerate(requests):
            layer = hparams.layers[0]
            if len(self.seen) == self.fail_at:
                raise self.exc or RuntimeError("solver blew up")
            self.seen.append(a.down_weight(layer).detach().clone())
            u, v = _update(model, req)
            if len(self.seen) - 1 == self.nan_at:
                u = u.clone()
                u[3, 0] = float("nan")
            apply(layer, u, v)
            norm = float(u.norm() * v.norm())
            traces.append(RequestTrace(index=i, loss_curve=[2.0, 0.5], update_norm=norm))
        return traces


@pytest.fixture()
def llama():
    return build_tiny("tiny-llama")


# ---- modes ----------------------------------------------------------------------------------


def test_sequential_sees_the_previous_edit_batch_does_not(llama):
    model, tok = llama
    w0 = get_adapter(model).down_weight(LAYER).detach().clone()
    seq = Recorder()
    Editor(model, tok, seq, layers=LAYER).edit(_requests(3), mode="sequential")
    assert torch.equal(seq.seen[0], w0)
    assert not torch.equal(seq.seen[1], w0)  # request 1 was computed on the model edited by request 0
    assert not torch.equal(seq.seen[2], seq.seen[1])
    assert seq.calls == [1, 1, 1]

    model2, tok2 = build_tiny("tiny-llama")
    bat = Recorder()
    res = Editor(model2, tok2, bat, layers=LAYER).edit(_requests(3), mode="batch")
    assert all(torch.equal(w, w0) for w in bat.seen)  # every request computed on the unedited weights
    assert bat.calls == [3]
    # applied as one update: one journal entry of rank 3
    assert [(e.layer, e.rank) for e in res.journal.entries] == [(LAYER, 3)]
    assert not torch.equal(get_adapter(model2).down_weight(LAYER), w0)


def test_sequential_chunks_of_batch_size(llama):
    model, tok = llama
    w0 = get_adapter(model).down_weight(LAYER).detach().clone()
    rec = Recorder()
    res = Editor(model, tok, rec, layers=LAYER).edit(_requests(5), mode="sequential", batch_size=2)
    assert rec.calls == [2, 2, 1]
    assert torch.equal(rec.seen[0], w0) and torch.equal(rec.seen[1], w0)  # same chunk, same weights
    assert not torch.equal(rec.seen[2], w0) and torch.equal(rec.seen[2], rec.seen[3])
    assert not torch.equal(rec.seen[4], rec.seen[3])
    # trace indices are positions in the list given to edit(), not in the chunk
    assert [t.index for t in res.traces] == [0, 1, 2, 3, 4]
    assert len(res.journal) == 3


def test_native_batch_methods_apply_at_once(llama):
    """A MEMIT-like method (native_batch) needs each apply to act immediately."""
    model, tok = llama
    rec = Recorder()
    rec.native_batch = True
    w0 = get_adapter(model).down_weight(LAYER).detach().clone()
    Editor(model, tok, rec, layers=LAYER).edit(_requests(2), mode="batch")
    assert rec.calls == [2] and not torch.equal(rec.seen[1], w0)


def test_default_mode_is_the_methods_own(llama, monkeypatch):
    import golden_fast.edit.base as base

    model, tok = llama
    seen_modes = []
    monkeypatch.setattr(base, "run_method", lambda method, *a, **k: seen_modes.append(method) or [])
    assert Editor(model, tok, "r-rome", layers=LAYER).edit(_requests(2), progress=False).mode == "sequential"
    assert Editor(model, tok, "memit", layers=[1, 2]).edit(_requests(2), progress=False).mode == "batch"
    assert seen_modes == ["r-rome", "r-rome", "memit"]


def test_bad_mode_arguments(llama):
    model, tok = llama
    ed = Editor(model, tok, Recorder(), layers=LAYER)
    with pytest.raises(ValueError, match="mode"):
        ed.edit(_requests(1), mode="parallel")
    with pytest.raises(ValueError, match="batch_size"):
        ed.edit(_requests(3), mode="batch", batch_size=2)
    with pytest.raises(ValueError, match="no requests"):
        ed.edit([])


# ---- atomicity ------------------------------------------------------------------------------


def test_failed_edit_reverts_everything_applied_in_the_call(llama):
    model, tok = llama
    ed = Editor(model, tok, Recorder(), layers=LAYER)
    ed.edit(_requests(1))  # an earlier, successful edit stays
    snap = _snapshot(model)
    failing = Editor(model, tok, Recorder(fail_at=2), layers=LAYER)
    with pytest.raises(EditError, match=r"record 2 'Danielle Darrieux' -> 'English'.*solver blew up") as info:
        failing.edit(_requests(4), mode="sequential")
    assert "2 update(s) applied during this edit() call were reverted" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert _same(model, snap)
    assert failing.results == []


def test_method_that_applies_then_raises(llama):
    """One update applied (immediately: native batch), then the method raises."""
    model, tok = llama
    snap = _snapshot(model)
    rec = Recorder(fail_at=1)
    rec.native_batch = True
    with pytest.raises(EditError, match="batch of requests record 0"):
        Editor(model, tok, rec, layers=LAYER).edit(_requests(2), mode="batch")
    assert len(rec.seen) == 1 and _same(model, snap)


def test_nan_update_is_refused_and_reverted(llama):
    model, tok = llama
    snap = _snapshot(model)
    with pytest.raises(EditError, match=r"record 1 .*NaN/Inf into layer 1 \(model\.layers\.1\.mlp\.down"):
        Editor(model, tok, Recorder(nan_at=1), layers=LAYER).edit(_requests(3), mode="sequential")
    assert _same(model, snap)


@pytest.mark.parametrize("name", TINY_NAMES)
def test_nan_in_bf16_batch_is_reverted(name):
    model, tok = build_tiny(name, dtype=torch.bfloat16)
    snap = _snapshot(model)
    with pytest.raises(EditError, match="NaN"):
        Editor(model, tok, Recorder(nan_at=1), layers=LAYER).edit(_requests(3), mode="batch")
    assert _same(model, snap)


def test_method_edit_error_keeps_its_message(llama):
    model, tok = llama
    snap = _snapshot(model)
    rec = Recorder(fail_at=1, exc=EditError("record 1 (case_id 9): subject not found in prompt"))
    with pytest.raises(EditError, match=r"subject not found in prompt \(the 1 update"):
        Editor(model, tok, rec, layers=LAYER).edit(_requests(2), mode="sequential")
    assert _same(model, snap)


def test_keyboard_interrupt_reverts_and_is_not_wrapped(llama):
    model, tok = llama
    snap = _snapshot(model)
    with pytest.raises(KeyboardInterrupt):
        Editor(model, tok, Recorder(fail_at=1, exc=KeyboardInterrupt()), layers=LAYER).edit(
            _requests(2), mode="sequential"
        )
    assert _same(model, snap)


def test_update_outside_the_edited_layers_is_refused(llama):
    model, tok = llama
    snap = _snapshot(model)

    def stray(model, tok, requests, hparams, stats, apply, progress=True):
        apply(LAYER, *_update(model, requests[0]))
        apply(3, *_update(model, requests[0]))
        return []

    stray.native_batch = True
    with pytest.raises(EditError, match="layer 3, which is not among the edited layers"):
        Editor(model, tok, stray, layers=LAYER).edit(_requests(1))
    assert _same(model, snap)


# ---- revert and journal ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", TINY_NAMES)
def test_revert_is_bitwise_and_result_replays(tmp_path, name, dtype):
    model, tok = build_tiny(name, dtype=dtype)
    snap = _snapshot(model)
    ed = Editor(model, tok, Recorder(), layers=[LAYER, 2])
    first = ed.edit(_requests(2), mode="sequential")
    second = ed.edit(_requests(3)[2:], mode="batch")
    assert first.update_norms.keys() == {LAYER} and first.update_norms[LAYER] > 0
    assert [t.index for t in first.traces] == [0, 1] and first.wall_time > 0
    edited = _snapshot(model)

    # each result's journal replays on a fresh model, in order: bitwise the same weights
    first.journal.save(tmp_path / "a")
    second.journal.save(tmp_path / "b")
    fresh, _ = build_tiny(name, dtype=dtype)
    apply_journal(fresh, EditJournal.load(tmp_path / "a"))
    apply_journal(fresh, EditJournal.load(tmp_path / "b"))
    assert _same(fresh, edited)

    # the earlier result cannot be reverted under the later one (same layer)
    with pytest.raises(JournalMismatchError, match="later edit"):
        first.revert()
    ed.revert()
    assert _same(model, snap)
    assert first.reverted and second.reverted
    ed.revert()  # nothing left to do
    assert _same(model, snap)


def test_revert_each_false_keeps_one_copy_per_layer(llama):
    """Lifelong editing, one edit() per request: only the first result holds the layer's copy,
    and Editor.revert still restores the model bitwise."""
    model, tok = llama
    snap = _snapshot(model)
    ed = Editor(model, tok, Recorder(), layers=[LAYER, 2], revert_each=False)
    results = [ed.edit(r) for r in _requests(4)]
    copies = [layer for r in results for layer, rec in r.journal.layers.items() if rec.original is not None]
    assert copies == [LAYER]
    with pytest.raises(RuntimeError, match="no copy of the original"):
        results[-1].revert()
    ed.revert()
    assert _same(model, snap) and all(r.reverted for r in results)


def test_result_summary_names_requests_and_norms(llama):
    model, tok = llama
    res = Editor(model, tok, Recorder(), layers=LAYER).edit(_requests(2), mode="sequential")
    text = res.summary()
    assert "record 1 'Toko Yasuda' -> 'piano'" in text and "loss 2 -> 0.5" in text
    assert f"layer {LAYER}:" in text
    assert res.journal.method == "recorder" and res.journal.meta["mode"] == "sequential"
    assert [r["subject"] for r in res.journal.requests] == ["France", "Toko Yasuda"]


def test_requests_may_be_dicts_or_single(llama):
    model, tok = llama
    ed = Editor(model, tok, Recorder(), layers=LAYER)
    assert len(ed.edit(_requests(1)[0]).traces) == 1
    one = {"prompt": "{} plays the", "subject": "Toko Yasuda", "target_new": "violin"}
    assert len(ed.edit(one).traces) == 1


# ---- hyperparameters ------------------------------------------------------------------------


def test_hparams_from_preset_dict_object_and_file(llama, tmp_path):
    from golden_fast.edit.config import MEMITConfig, RROMEConfig

    model, tok = llama
    ed = Editor(model, tok, "r-rome", layers=2)
    assert isinstance(ed.hparams, RROMEConfig) and ed.layers == [2] and ed.method == "r-rome"

    ed = Editor(model, tok, "r-rome", layers=2, hparams={"v_lr": 0.1})
    assert ed.hparams.v_lr == 0.1 and ed.hparams.layers == (2,)
    with pytest.raises(ValueError, match="unknown hyperparameter.*v_lrr"):
        Editor(model, tok, "r-rome", layers=2, hparams={"v_lrr": 0.1})

    ed = Editor(model, tok, hparams=MEMITConfig(layers=(1, 2)))  # the method comes from the config
    assert ed.method == "memit" and ed.layers == [1, 2] and ed.native_batch
    with pytest.raises(ValueError, match="memit"):
        Editor(model, tok, "rome", hparams=MEMITConfig(layers=(1, 2)))

    f = tmp_path / "h.json"
    f.write_text(json.dumps({"method": "emmet", "layers": [0, 1], "emmet_lambda": 0.5}))
    ed = Editor(model, tok, hparams=f)
    assert ed.method == "emmet" and ed.hparams.emmet_lambda == 0.5 and ed.layers == [0, 1]
    with pytest.raises(ValueError, match="emmet"):
        Editor(model, tok, "r-rome", hparams=f)
    y = tmp_path / "h.yaml"
    y.write_text("layers: [3]\nv_num_grad_steps: 5\n")
    ed = Editor(model, tok, "rome", hparams=y)
    assert ed.method == "rome" and ed.layers == [3] and ed.hparams.v_num_grad_steps == 5


def test_bad_method_and_layers(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="unknown method 'romeo'"):
        Editor(model, tok, "romeo", layers=1)
    with pytest.raises(ValueError, match="layer 9 out of range"):
        Editor(model, tok, "r-rome", layers=9)
    assert Editor(model, tok, "R_ROME", layers=1).method == "r-rome"


# ---- CLI ------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    # Only the edit subcommand: the test must not depend on the other subcommands' modules.
    from golden_fast.cli import edit as edit_cli

    parser = argparse.ArgumentParser()
    edit_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["edit", *argv])
    return args.func(args)


def test_cli_edit_with_a_fake_method(tmp_path, monkeypatch, capsys):
    """The CLI plumbing (load, edit, print, save) with run_method replaced by a fake."""
    import golden_fast.edit.base as base

    rec = Recorder()
    monkeypatch.setattr(base, "run_method", lambda method, *a, **k: rec(*a, **k))
    out_dir = tmp_path / "journal"
    data = tmp_path / "facts.json"  # a file of our own: the test must not depend on the built-in set
    data.write_text(json.dumps([r.to_dict() for r in _requests(4)]))
    code = _cli(["--model", "tiny-llama", "--method", "r-rome", "--layers", "1", "--data", str(data),
                 "--limit", "3", "--save-journal", str(out_dir), "--no-progress", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    assert "r-rome (sequential): 3 request(s)" in out and "update norm" in out
    assert json.loads(out.strip().splitlines()[-1])["n_requests"] == 3
    journal = EditJournal.load(out_dir)
    assert len(journal) == 3 and journal.method == "r-rome" and journal.touched_layers == [1]
    fresh, _ = build_tiny("tiny-llama")
    apply_journal(fresh, journal)  # the saved journal fits a freshly loaded model

    from golden_fast.cli import CLIError

    with pytest.raises(CLIError, match="exists"):
        _cli(["--model", "tiny-llama", "--layers", "1", "--data", str(data), "--save-journal", str(out_dir)])


def test_cli_edit_evaluates_before_and_after(tmp_path, monkeypatch, capsys):
    import golden_fast.edit.base as base

    monkeypatch.setattr(base, "run_method", lambda method, *a, **k: Recorder()(*a, **k))
    data = tmp_path / "facts.json"
    data.write_text(json.dumps([r.to_dict() for r in _requests(2)]))
    assert _cli(["--model", "tiny-gpt2", "--layers", "1", "--data", str(data), "--evaluate",
                 "--save-journal", str(tmp_path / "j"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "rewrite_acc" in out and "pre" in out


def test_cli_registers_edit():
    from golden_fast.cli import _COMMANDS

    assert "edit" in _COMMANDS


def test_cli_layer_syntax():
    from golden_fast.cli.edit import _parse_layers

    assert _parse_layers("6") == [6] and _parse_layers("3,5") == [3, 5]
    assert _parse_layers("3-6") == [3, 4, 5, 6]
    with pytest.raises(argparse.ArgumentTypeError):
        _parse_layers("three")


# ---- the real methods ------------------------------------------------------------------------


# Small settings so a real edit of a tiny model takes a second or two: C = I (no statistics
# pass), few optimisation steps, two short context templates.
FAST = {"mom2_adjustment": False, "v_num_grad_steps": 4, "context_template_length_params": [[3, 2]]}


@pytest.fixture()
def cache_home(tmp_path, monkeypatch):
    # context templates are cached under GOLDEN_FAST_HOME: keep the user's cache out of tests
    monkeypatch.setenv("GOLDEN_FAST_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.parametrize(
    "name, method, layers, mode",
    [
        ("tiny-llama", "r-rome", [1], "sequential"),
        ("tiny-gpt2", "rome", [1], "batch"),
        ("tiny-gemma3", "memit", [1, 2], "batch"),
        ("tiny-gpt2", "emmet", [1, 2], "sequential"),
    ],
)
def test_real_methods_edit_revert_and_replay(cache_home, name, method, layers, mode):
    model, tok = build_tiny(name)
    snap = _snapshot(model)
    ed = Editor(model, tok, method, layers=layers, hparams=FAST, progress=False)
    res = ed.edit(_requests(2), mode=mode)
    assert [t.index for t in res.traces] == [0, 1]
    assert all(len(t.loss_curve) >= 1 for t in res.traces)
    assert set(res.update_norms) == set(layers) and all(v > 0 for v in res.update_norms.values())
    assert not _same(model, snap)
    res.journal.save(cache_home / "j")

    fresh, _ = build_tiny(name)
    apply_journal(fresh, EditJournal.load(cache_home / "j"))
    batch = tok(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, model(**batch).logits)
    ed.revert()
    assert _same(model, snap)


def test_real_method_failure_is_atomic(cache_home, monkeypatch):
    """The method fails on the second request, after the first one was applied: both undone."""
    import golden_fast.edit.methods.rome as rome

    real = rome.keys_at_subject

    def keys_failing_on_the_second(model, tok, requests, *a, **k):
        if requests[0].subject == "Toko Yasuda":
            raise rome.EditError(f"{requests[0].ref}: subject tokens not found")
        return real(model, tok, requests, *a, **k)

    monkeypatch.setattr(rome, "keys_at_subject", keys_failing_on_the_second)
    model, tok = build_tiny("tiny-llama")
    snap = _snapshot(model)
    ed = Editor(model, tok, "r-rome", layers=1, hparams=FAST, progress=False)
    with pytest.raises(EditError, match="record 1: subject tokens not found") as info:
        ed.edit(_requests(2), mode="sequential")
    assert "1 update(s) applied during this edit() call were reverted" in str(info.value)
    assert _same(model, snap) and ed.results == []


def test_real_method_takes_given_statistics(cache_home):
    """stats given as {layer: C} reach the method (a different C, a different update)."""
    model, tok = build_tiny("tiny-llama")
    hp = dict(FAST, mom2_adjustment=True)
    m = get_adapter(model).d_ff
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * m, m, generator=g, dtype=torch.float64)
    C = x.T @ x / x.shape[0]
    with_c = Editor(model, tok, "r-rome", layers=1, hparams=hp, stats={1: C}, progress=False)
    u_c = with_c.edit(_requests(1)).journal.entries[0].v
    with_c.revert()
    with_i = Editor(model, tok, "r-rome", layers=1, hparams=hp, stats={1: torch.eye(m, dtype=torch.float64)},
                    progress=False)
    u_i = with_i.edit(_requests(1)).journal.entries[0].v
    assert not torch.allclose(u_c, u_i)


def test_cli_edit_with_a_real_method(cache_home, capsys):
    data = cache_home / "facts.json"
    data.write_text(json.dumps([r.to_dict() for r in _requests(2)]))
    hp = cache_home / "hp.yaml"
    hp.write_text("method: r-rome\nlayers: [2]\nmom2_adjustment: false\nv_num_grad_steps: 3\n"
                  "context_template_length_params: [[3, 2]]\n")
    assert _cli(["--model", "tiny-gpt2", "--data", str(data), "--hparams", str(hp),
                 "--save-journal", str(cache_home / "j"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "method r-rome, layers [2]" in out and "r-rome (sequential): 2 request(s)" in out
    assert EditJournal.load(cache_home / "j").touched_layers == [2]



@pytest.mark.parametrize("name, method", [("tiny-llama", "r-rome"), ("tiny-gpt2", "rome"), ("tiny-gemma3", "emmet")])
def test_edit_each_equals_edit_alone_then_revert(cache_home, name, method):
    """edit_each is `edit([r]); look; revert()` per request, with ROME's v* batched across the
    group: the weights seen by the callback match the one-at-a-time route, and the model ends
    bitwise as it began."""
    model, tok = build_tiny(name)
    snap = _snapshot(model)
    layer = 1
    W0 = get_adapter(model).down_weight(layer).detach().clone()
    reqs = _requests(3)
    ed = Editor(model, tok, method, layers=[layer], hparams=dict(FAST, v_num_grad_steps=6), progress=False)
    alone = []
    for r in reqs:
        res = ed.edit([r])
        alone.append(get_adapter(model).down_weight(layer).detach().clone())
        res.revert()
    assert _same(model, snap)

    def look(i, req, res):
        assert res.requests == [req] and [t.index for t in res.traces] == [0] and not res.reverted
        return get_adapter(model).down_weight(layer).detach().clone()

    seen = ed.edit_each(reqs, look, group_size=2)
    assert _same(model, snap) and len(seen) == 3
    for i, (a, b) in enumerate(zip(alone, seen)):
        rel = float((b - a).double().norm() / (a - W0).double().norm())
        assert rel < 1e-4, f"request {i}: batched v* moved the update by {rel:.2e} (relative)"


def test_edit_each_failure_names_request_and_leaves_weights(cache_home, monkeypatch):
    import golden_fast.edit.methods.rome as rome

    model, tok = build_tiny("tiny-llama")
    snap = _snapshot(model)
    ed = Editor(model, tok, "r-rome", layers=1, hparams=FAST, progress=False)
    calls = []

    def look(i, req, res):
        calls.append(i)
        if i == 1:  # fail while the second edit is applied: it must be reverted too
            raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        ed.edit_each(_requests(3), look, group_size=3)
    assert calls == [0, 1] and _same(model, snap)

    def broken(*a, **k):
        raise FloatingPointError("singular")

    monkeypatch.setattr(rome, "optimise_targets", broken)
    with pytest.raises(EditError, match="Toko Yasuda|France"):
        ed.edit_each(_requests(2), lambda i, r, res: None)
    assert _same(model, snap)
