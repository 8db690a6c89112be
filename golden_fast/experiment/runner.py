"""`run_experiment(config)`: the parts in order, each skipping what a previous run finished.

Layout of the output folder:
  meta.json, config.json   the settings that must not change on resumption, and the last run's config
  split.json               proxy / test / pool facts (keys), checked on every run
  pre.json                 the unedited model's evaluation of the pool (locality reference)
  locate/                  LGA, the hybrid locator, CMA, brute force (golden_fast.experiment.locating)
  editors/                 each editor at each chosen layer (golden_fast.experiment.editors)
  mass/                    the mass-editing curves (golden_fast.experiment.mass)
  timings.json             session seconds of each part, summed over runs
  report.html, report.md, results.json, figures/   the report (golden_fast.experiment.assemble)

Under torchrun every rank runs every part (the parts share their work across the ranks); rank 0
alone prints, checks and writes this folder's settings, split, timings and report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from golden_fast import distributed
from golden_fast.edit.target_cache import TargetCache, reuse_targets
from golden_fast.experiment.config import PARTS, ExperimentConfig
from golden_fast.experiment.facts import Facts, load_facts
from golden_fast.fileio import check_meta, has_results, read_json, write_json

__all__ = ["Context", "run_experiment"]

# files of the output folder that record settings, not measurements (see fileio.check_meta)
_NOT_RESULTS = ("meta.json", "config.json", "data.json", "split.json", "timings.json")

T = TypeVar("T")


def _say(text: str) -> None:
    """Print on rank 0 only."""
    if distributed.is_main():
        print(text, flush=True)


def _on_main(fn: Callable[[], T]) -> T | None:
    """fn() on rank 0 alone (its checks and writes; None elsewhere); a failure there is raised on every
    rank, so that no rank goes on to wait for the others in a part."""
    result, error = None, None
    if distributed.is_main():
        try:
            result = fn()
        except Exception as exc:
            error = exc
    message = distributed.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed: {message}")
    return result


@dataclasses.dataclass
class Context:
    """What every part needs: the settings, the model, the facts, the candidate layers, the folder."""

    config: ExperimentConfig
    model: Any
    tok: Any
    facts: Facts
    layers: list[int]
    out: Path
    _moments: Any = None
    _pre: Any = None

    @property
    def locate_dir(self) -> Path:
        return self.out / "locate"

    def editor_spec(self) -> dict[str, Any]:
        """The brute-force editor: method and hyperparameter overrides (statistics: the cache)."""
        return {"method": self.config.brute_editor, "hparams": self.config.hparam_overrides() or None}

    def model_meta(self) -> dict[str, Any]:
        from golden_fast.models.identity import model_identity

        return {"model": model_identity(self.model)}

    def editors_meta(self, methods: Sequence[str], with_layers: bool = False) -> dict[str, Any]:
        """`model_meta` and each method's resolved hyperparameters (its preset and the study's
        overrides), so that a folder made under another preset is refused, not mixed. Layers only
        `with_layers` (the parts that edit at a chosen layer record it themselves). A method with no
        usable preset for this model is left out: its part says which setting to give."""
        from golden_fast.edit import Editor
        from golden_fast.edit.config import hparams_record

        record = {}
        for m in methods:
            try:
                ed = Editor(self.model, self.tok, m, hparams=self.config.hparam_overrides() or None, progress=False)
            except ValueError:
                continue
            record[ed.method] = hparams_record(ed.hparams, with_layers)
        return self.model_meta() | {"editor_hparams": record}

    def moments(self, layers: list[int]) -> Any:
        """One `Moments` for every editor of the editors and mass parts, with the R-ROME preset's corpus
        settings (and mom2_n_samples when given); None with stats="identity" (the editors then use C = I).
        All candidate layers and `layers` come from one corpus pass, cached on disk."""
        if self.config.stats == "identity":
            return None
        if self._moments is None:
            from golden_fast.edit import Editor
            from golden_fast.edit.moments import Moments

            hparams = Editor(self.model, self.tok, "r-rome", layers=[self.layers[0]],
                        hparams=self.config.hparam_overrides() or None, progress=False).hparams
            every = tuple(sorted(set(self.layers) | set(layers)))
            self._moments = Moments.resolve(None, self.model, self.tok, dataclasses.replace(hparams, layers=every))
        return self._moments

    def pre(self) -> Any:
        """The unedited model's report on the pool (computed once, kept in pre.json)."""
        if self._pre is None:
            from golden_fast.evaluate import EvalReport, evaluate
            from golden_fast.locate.brute_force import request_key

            keys = [request_key(r) for r in self.facts.pool]
            path = self.out / "pre.json"
            # rank 0 decides, so that every rank evaluates (together) or none does
            stored = distributed.broadcast_object(read_json(path) if distributed.is_main() else None)
            if stored is not None and stored.get("keys") == keys and stored.get("suites") == list(self.config.suites):
                self._pre = EvalReport.from_dict(stored["report"])
            else:
                _say(f"evaluating the unedited model on {len(keys)} fact(s) (locality reference)")
                self._pre = evaluate(self.model, self.tok, self.facts.pool, suites=self.config.suites)
                report = {"keys": keys, "suites": list(self.config.suites), "report": self._pre.to_dict()}
                _on_main(lambda: write_json(path, report))
        return self._pre


# ---- parts -------------------------------------------------------------------------------------


def _part_lga(ctx: Context) -> str:
    from golden_fast.experiment.locating import run_lga

    found = run_lga(ctx.model, ctx.tok, ctx.facts.proxy, ctx.layers, ctx.locate_dir, ctx.config.thetas,
                    ctx.config.lga_batch_size, ctx.config.lga_old_answer, progress=ctx.config.progress)
    return ", ".join(f"{t}: layer {s.chosen}" for t, s in found.items())


def _part_hybrid(ctx: Context) -> str:
    from golden_fast.data import validate
    from golden_fast.experiment.locating import run_hybrid, run_lga
    from golden_fast.locate.hybrid import TRIAL_SCORES, HybridConfig

    c = ctx.config
    suites, metric = TRIAL_SCORES[c.hybrid_trial_score]
    config = HybridConfig(shortlist=c.hybrid_shortlist, eta=c.hybrid_eta, n_boot=c.n_boot, metric=metric,
                          paraphrases=c.hybrid_paraphrases)
    # the templates of the relations come from every valid record of the file, not only the proxy facts
    templates_from = validate(c.data, format=c.format)[0] if c.hybrid_paraphrases else None
    # trial edits evaluated by other suites cannot share a results folder with the accuracies'
    pairs = "hybrid-pairs" if c.hybrid_trial_score == "accuracies" else f"hybrid-pairs-{c.hybrid_trial_score}"
    # the shortlist comes from LGA's down-projection run: the lga part's result, reused when it was
    # made with these options; shortlist "all" needs no LGA
    lga_down = None if config.shortlist == "all" else run_lga(
        ctx.model, ctx.tok, ctx.facts.proxy, ctx.layers, ctx.locate_dir, ("down",), c.lga_batch_size,
        c.lga_old_answer, progress=c.progress)["down"]
    s = run_hybrid(ctx.model, ctx.tok, ctx.facts.proxy, lga_down, ctx.editor_spec(), ctx.locate_dir / pairs,
                   ctx.locate_dir / "hybrid.json", config, progress=c.progress, layers=ctx.layers, suites=suites,
                   paraphrase_source=templates_from)
    cost = s.extra["cost"]
    source = "every candidate layer" if lga_down is None else f"LGA's shortlist {s.extra['shortlist']}"
    return (f"layer {s.chosen} from {source}; {cost['edits']} trial edit(s) in "
            f"{len(s.extra['rounds'])} round(s) (brute force: {len(ctx.facts.proxy)} x {len(ctx.layers)}), "
            f"{s.wall_time:.1f} s")


def _part_cma(ctx: Context) -> str:
    from golden_fast.experiment.locating import run_cma
    from golden_fast.locate.causal_trace import CMAConfig

    c = ctx.config
    s = run_cma(ctx.model, ctx.tok, ctx.facts.proxy, ctx.layers, ctx.locate_dir,
                CMAConfig(samples=c.cma_samples, answer=c.cma_answer, window=c.cma_window), progress=c.progress)
    if s is None:
        return "no layer: every proxy fact skipped (try --cma-answer greedy)"
    return f"layer {s.chosen}; {s.n_used} fact(s) used, {s.extra['n_skipped']} skipped"


def _part_brute(ctx: Context, which: str) -> str:
    from golden_fast.experiment.locating import run_brute

    c = ctx.config
    reqs = ctx.facts.proxy[: c.brute_proxy_n] if which == "proxy" else ctx.facts.test[: c.test_brute_n]
    pairs = ctx.locate_dir / ("brute-proxy" if which == "proxy" else "test-pairs")
    _, s = run_brute(ctx.model, ctx.tok, reqs, ctx.layers, ctx.editor_spec(), pairs,
                     ctx.locate_dir / f"brute-{which}.json", n_boot=c.n_boot, progress=c.progress)
    gap = s.extra["golden"]["gap"]["overall"]
    label = "brute-force choice" if which == "proxy" else "test golden layer"
    return (f"{label} {s.chosen} ({len(reqs)} facts x {len(ctx.layers)} layers, {s.wall_time:.1f} s); "
            f"sample-wise gap {gap['gap']:.3f} [{gap['lo']:.3f}, {gap['hi']:.3f}]")


def eval_layers(ctx: Context) -> tuple[list[int], int | None]:
    """(layers the editors are judged at, the test golden layer): every chosen layer and the golden one.

    Before the brute-test part has finished, the golden layer is None and only the chosen layers are
    returned: the editors part can then run beside brute-test and add the golden layer on a later run."""
    from golden_fast.experiment.locating import chosen_layers
    from golden_fast.locate import LayerScores

    truth_path = ctx.locate_dir / "brute-test.json"
    golden = LayerScores.from_json(truth_path).chosen if truth_path.exists() else None
    chosen = {int(m["layer"]) for m in chosen_layers(ctx.locate_dir, ctx.config.thetas).values()}
    if not chosen and golden is None:
        raise ValueError("the editors part needs a chosen layer: run a locating part (lga, hybrid, cma, "
                         "brute-proxy, brute-test) first")
    return sorted(chosen | ({golden} if golden is not None else set())), golden


def _part_editors(ctx: Context) -> str:
    from golden_fast.experiment.assemble import held_apart
    from golden_fast.experiment.editors import run_editors
    from golden_fast.locate.brute_force import request_key

    c = ctx.config
    layers, golden = eval_layers(ctx)
    test = ctx.facts.test[: c.editors_n]
    if c.portability:
        from golden_fast.data.portability import add_portability

        test, _ = add_portability(test)
    # the tables judge the facts held apart from brute-test's: only those are edited (a folder made
    # when every test fact was edited keeps its list); portability and fluency for the judged ones
    keys = [request_key(r) for r in test]
    judged, apart = held_apart(keys, {request_key(r) for r in ctx.facts.test[: c.test_brute_n]})
    stored = read_json(ctx.out / "editors" / "meta.json")
    if apart and not (stored is not None and stored.get("facts") == keys and has_results(ctx.out / "editors")):
        test, keys = [test[i] for i in judged], [keys[i] for i in judged]
        judged = list(range(len(keys)))
    res = run_editors(ctx.model, ctx.tok, test, layers, c.editors, ctx.out / "editors", ctx.pre(),
                      hparams=c.hparam_overrides(), moments=ctx.moments(layers), suites=c.suites,
                      group_size=c.group_size, meta=ctx.editors_meta(c.editors), progress=c.progress,
                      extra_keys=[keys[i] for i in judged], fluency=c.fluency)
    pending = "" if golden is not None else ("; the test golden layer is not known yet (brute-test unfinished): "
                                             "run this part again after brute-test")
    return f"{len(c.editors)} editor(s) x layers {layers} on {len(test)} test facts ({len(res)} results){pending}"


def mass_layer(ctx: Context) -> int:
    """The sequential editors' layer: the configured one, else the layer LGA (paper variant) chose."""
    from golden_fast.experiment.locating import PAPER, chosen_layers

    if ctx.config.mass_layer is not None:
        from golden_fast.models import get_adapter

        n = get_adapter(ctx.model).n_layers
        if ctx.config.mass_layer >= n:
            raise ValueError(f"mass_layer {ctx.config.mass_layer} out of range: the model has {n} layers")
        return ctx.config.mass_layer
    found = chosen_layers(ctx.locate_dir, ("down",))
    if PAPER not in found:
        raise ValueError("the sequential curve needs a layer: run the lga part (theta down) first, or give mass_layer")
    return int(found[PAPER]["layer"])


def _part_mass_batch(ctx: Context) -> str:
    from golden_fast.experiment.mass import run_batch_curve

    c = ctx.config
    if not c.batch_methods:
        return "no batch method"
    layers = list(c.mass_layers or [])
    if not layers and c.stats == "preset":  # the presets' layers join the one corpus pass
        from golden_fast.edit import Editor

        for m in c.batch_methods:
            try:
                layers += Editor(ctx.model, ctx.tok, m, hparams=c.hparam_overrides() or None,
                                 progress=False).layers
            except ValueError:  # a preset for another model: run_batch_curve says which setting to give
                pass
    curves = run_batch_curve(ctx.model, ctx.tok, ctx.facts.pool, c.batch_methods, c.batch_sizes,
                             ctx.out / "mass" / "batch", ctx.pre(), layers=c.mass_layers,
                             hparams=c.hparam_overrides(), moments=ctx.moments(layers),
                             suites=c.suites, meta=ctx.editors_meta(c.batch_methods, c.mass_layers is None),
                             progress=c.progress)
    return "; ".join(f"{m}: n = {[p['n'] for p in pts]}" for m, pts in curves.items())


def _part_mass_sequential(ctx: Context) -> str:
    from golden_fast.experiment.mass import run_sequential_curve

    c = ctx.config
    if not c.sequential_methods:
        return "no sequential method"
    layer = mass_layer(ctx)
    done = []
    for method in c.sequential_methods:
        curve = run_sequential_curve(ctx.model, ctx.tok, ctx.facts.pool, method, layer, c.checkpoints(),
                                     ctx.out / "mass" / f"sequential-{method}", ctx.pre(),
                                     hparams=c.hparam_overrides(), moments=ctx.moments([layer]), suites=c.suites,
                                     meta=ctx.editors_meta([method]), progress=c.progress)
        done.append(f"{method}: {curve[-1]['edits']} edits at layer {layer}")
    return "; ".join(done)


def _part_report(ctx: Context) -> str:
    from golden_fast.experiment.assemble import write_report

    # the report reads the stored locality reference: every rank loads it first (a collective), so
    # that rank 0 writing alone runs none
    stored = distributed.broadcast_object((ctx.out / "pre.json").exists() if distributed.is_main() else None)
    if stored and ctx._pre is None:
        ctx.pre()
    # rank 0 writes the report; every rank gets its path
    return distributed.broadcast_object(_on_main(lambda: f"{write_report(ctx).html}"))


_RUN = {
    "lga": _part_lga,
    "hybrid": _part_hybrid,
    "cma": _part_cma,
    "brute-proxy": lambda ctx: _part_brute(ctx, "proxy"),
    "brute-test": lambda ctx: _part_brute(ctx, "test"),
    "editors": _part_editors,
    "mass-batch": _part_mass_batch,
    "mass-sequential": _part_mass_sequential,
    "report": _part_report,
}


def _add_time(out: Path, part: str, seconds: float) -> None:
    if not distributed.is_main():
        return
    t = read_json(out / "timings.json") or {}
    cur = t.get(part, {"seconds": 0.0, "runs": 0})
    t[part] = {"seconds": cur["seconds"] + seconds, "runs": cur["runs"] + 1}
    write_json(out / "timings.json", t)


def _open_folder(config: ExperimentConfig, out: Path) -> Facts:
    """Make the folder, check its settings, and load the facts, checking or recording the split there."""
    out.mkdir(parents=True, exist_ok=True)
    check_meta(out, config.core(), "experiment", ignore=_NOT_RESULTS)
    return load_facts(config, out, fresh=not has_results(out, _NOT_RESULTS))


def _record_settings(config: ExperimentConfig, out: Path, facts: Facts) -> None:
    write_json(out / "config.json", config.to_dict())
    write_json(out / "data.json", facts.info())


def run_experiment(config: ExperimentConfig, model: Any = None, tok: Any = None) -> dict[str, Any]:
    """Run (or resume) the study; returns {"out", "report", "parts": {part: one-line status}}.

    model, tokenizer: an already loaded model (tests); None loads `config.model`.
    """
    from golden_fast.models import get_adapter, load_model

    out = Path(config.out)
    t0 = time.perf_counter()
    facts = _on_main(lambda: _open_folder(config, out))
    if not distributed.is_main():  # the same split; rank 0 alone checks and records it
        facts = load_facts(config)
    if config.skip_invalid:
        _say(f"{config.data}: skipped {facts.n_invalid} invalid record(s) of {facts.n_read} read "
             f"({facts.n_invalid_used} before the last record used)"
             + (f"; first: {facts.errors[0]}" if facts.errors else ""))
    if model is None:
        model, tok = load_model(config.model)
    layers = config.candidate_layers(get_adapter(model).n_layers)
    _on_main(lambda: _record_settings(config, out, facts))
    _say(f"{config.model} ready in {time.perf_counter() - t0:.1f} s; {len(facts.proxy)} proxy / "
         f"{len(facts.test)} test / {len(facts.pool)} pool facts; candidate layers {layers}; results in {out}")
    ctx = Context(config, model, tok, facts, layers, out)
    status: dict[str, str] = {}
    todo = [p for p in PARTS if p in config.parts]
    result: dict[str, Any] = {"out": str(out), "report": None, "parts": status}
    # one target cache for the whole run: ROME and R-ROME share v*, MEMIT and EMMET share z, the
    # batch curve's larger batches reuse the smaller ones', the editors reuse brute force's; each
    # reused target is timed at its original cost (target_cache.py)
    targets = TargetCache()
    for i, part in enumerate(todo, 1):
        _say(f"== [{i}/{len(todo)}] {part}")
        t1 = time.perf_counter()
        with reuse_targets(targets):
            status[part] = _RUN[part](ctx)
        seconds = time.perf_counter() - t1
        _add_time(out, part, seconds)
        _say(f"   {part}: {status[part]} ({seconds:.1f} s; targets reused {targets.hits}, optimised "
             f"{targets.misses} so far)")
        if part == "report":
            result["report"] = status[part]
    return result
