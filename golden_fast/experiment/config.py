"""`ExperimentConfig`: every size and option of the study, validated once, with a `--quick` preset.

Which settings may change between a run and its resumption is decided here too (`CORE_FIELDS`):
those change what every part measures (the model, the facts and their split, the editors'
hyperparameters, the locating options), so a results folder made with other values is refused
rather than mixed. Sizes (brute-force subsets, mass-editing points) may grow between runs: every
finished pair or point is kept and only the new ones are computed. LGA's and CMA's options may change
too: only that method is recomputed (seconds to minutes; the hybrid locator follows LGA, its trial edits
kept), and the editors then also visit the new layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["CORE_FIELDS", "PARTS", "ExperimentConfig", "editor_choices", "quick_config"]

#: the parts, in the order they run (each skips what it finished before)
PARTS = ("lga", "hybrid", "cma", "brute-proxy", "brute-test", "editors", "mass-batch", "mass-sequential", "report")
_THETAS = ("down", "mlp", "block")
_SUITES = ("knowedit", "counterfact")

def editor_choices(single: bool = False) -> tuple[str, ...]:
    """The registered editors the study can run (`single`: only those edited fact by fact, which the
    sequential curves and brute force take)."""
    from golden_fast.edit.registry import editor_names, get_editor

    return tuple(n for n in editor_names() if not single or get_editor(n).single)


#: fields a resumed run must share with the run that made the folder (see the module docstring)
CORE_FIELDS = (
    "model",
    "data",
    "format",
    "skip_invalid",
    "offset",
    "seed",
    "proxy_n",
    "test_n",
    "layers",
    "layer_sample",
    "stats",
    "mom2_n_samples",
    "v_steps",
    "templates",
    "suites",
    "brute_editor",
)


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Settings of `golden-fast experiment` (each a CLI flag; defaults: the study at this machine's scale).

    Args:
        model: zoo name, tiny-* name, local folder or Hugging Face id.
        data: a facts file `golden_fast.data.load` reads, or "builtin".
        format: its format (None: detected).
        out: the results folder; rerunning with the same folder resumes.
        skip_invalid: keep the valid records of a file with malformed ones (counted and reported)
            instead of stopping at the first.
        offset: skip this many records first.
        seed: seed of the proxy / test split.
        proxy_n, test_n: facts of the proxy split (where layers are chosen) and of the disjoint test
            split (where the choices are judged); the split is drawn from the first proxy_n + test_n
            records.
        brute_proxy_n: the first proxy facts brute force searches (its choice is a locating method).
        test_brute_n: the first test facts brute force searches at every layer: the ground truth
            (test golden layer, sample-wise optima and their gap).
        editors_n: the first test facts the editors part judges the chosen layers on (None: all
            test_n); of those, the ones held apart from brute-test's facts (when at least 10 are)
            are edited and judged. Fixed for a results folder: its editors' results are refused if
            it changes.
        layers: candidate layers (None: all, or `layer_sample` evenly spread ones).
        layer_sample: when `layers` is None, this many evenly spread layers, first and last included
            (None: every layer).
        thetas: LGA parameter sets to run ("down", "mlp", "block"); every variant (signed, cosine,
            new_norm) comes from each run.
        lga_batch_size, lga_old_answer: LGA's requests per pass and old answer ("data", "greedy", "auto").
        cma_samples, cma_answer, cma_window: causal tracing's noisy copies, traced answer ("data": the
            record's old answer, facts the model gets wrong skipped; "greedy": the model's own top
            token, nothing skipped) and restored window.
        brute_editor: the editor of brute force (the sample-wise optimum is "for this editor") and of the
            hybrid locator's trial edits (on the proxy facts, at the layers LGA shortlists).
        hybrid_shortlist, hybrid_eta: the hybrid locator's shortlist (LGA's c best layers, or "all":
            every candidate layer, LGA not used) and the fraction 1/eta of layers each round keeps
            (`HybridConfig`); changing them recomputes the hybrid only, its trial edits kept.
        hybrid_trial_score, hybrid_paraphrases: what the hybrid's trial edits are scored by
            (`hybrid.TRIAL_SCORES`: "accuracies", the default, "probabilities" or "mixed"; a score other
            than the accuracies keeps its trial edits in a folder of its own) and how many template
            paraphrases of its relation each proxy fact's rephrase is also scored on (default 0;
            `HybridConfig.paraphrases`, templates grouped over every valid record of the data file).
        editors: editors judged at each chosen layer on the test facts: ROME / R-ROME edit each fact
            alone (evaluated, then reverted); MEMIT / EMMET edit all test facts as one batch at
            that single layer.
        group_size: ROME / R-ROME facts whose v* are optimised in one batched pass (Editor.edit_each).
        stats: "preset" (C from the statistics cache, the preset's corpus settings) or "identity"
            (C = I: no corpus pass; for pipeline checks).
        mom2_n_samples, v_steps, templates: overrides of every editor's preset (None: the preset's):
            corpus texts for C, v* optimisation steps, context templates [(length, count), ...].
        suites: evaluation suites ("knowedit", "counterfact"); golden layers use "overall", the mean
            of the metrics present per fact.
        portability: the editors part adds two-hop portability probes (`golden_fast.data.portability`:
            CounterFact place relations the hand-written tables know) to the facts it judges, and
            reports portability where a fact has probes.
        fluency: the editors part also samples a continuation of each judged fact's prompt from the
            edited model and reports its n-gram entropy (and the unedited model's, as reference).
            Portability and fluency are reported beside "overall", never inside it, so the editors'
            "overall" stays the golden layer's.
        batch_methods, batch_sizes: the mass-editing curve of the batch editors: one batch of each size
            (the first facts of the evaluation pool), evaluated, reverted.
        sequential_methods, sequential_n, sequential_every: the curve of sequential single-layer
            editing: up to sequential_n facts one after another, a checkpoint every sequential_every
            (metrics over every fact edited so far, time, peak memory; the journal saved).
        mass_layer: layer of the sequential editors (None: the layer LGA chose, paper variant).
        mass_layers: layers of the batch editors (None: their preset's).
        n_boot: bootstrap draws of every interval (the golden band's and the hybrid's early stop included).
        parts: the parts to run (see PARTS); finished work is skipped either way.
        progress: progress bars.
        quick: recorded when the sizes came from `quick_config`.
    """

    model: str = "smollm2-135m"
    data: str = "builtin"
    format: str | None = None
    out: str = "golden-fast-experiment"
    skip_invalid: bool = False
    offset: int = 0
    seed: int = 0
    proxy_n: int = 50
    test_n: int = 100
    brute_proxy_n: int = 20
    test_brute_n: int = 30
    editors_n: int | None = None
    layers: tuple[int, ...] | None = None
    layer_sample: int | None = None
    thetas: tuple[str, ...] = ("down",)
    lga_batch_size: int = 16
    lga_old_answer: str = "data"
    cma_samples: int = 10
    cma_answer: str = "data"
    cma_window: int = 10
    brute_editor: str = "r-rome"
    hybrid_shortlist: int | str = 8
    hybrid_eta: int = 2
    hybrid_trial_score: str = "accuracies"
    hybrid_paraphrases: int = 0
    editors: tuple[str, ...] = ("r-rome", "rome", "emmet")
    group_size: int = 16
    stats: str = "preset"
    mom2_n_samples: int | None = None
    v_steps: int | None = None
    templates: tuple[tuple[int, int], ...] | None = None
    suites: tuple[str, ...] = ("knowedit",)
    portability: bool = True
    fluency: bool = True
    batch_methods: tuple[str, ...] = ("emmet", "memit")
    batch_sizes: tuple[int, ...] = (10, 100, 1000)
    sequential_methods: tuple[str, ...] = ("r-rome", "rome")
    sequential_n: int = 500
    sequential_every: int = 50
    mass_layer: int | None = None
    mass_layers: tuple[int, ...] | None = None
    n_boot: int = 2000
    parts: tuple[str, ...] = PARTS
    progress: bool = True
    quick: bool = False

    def __post_init__(self) -> None:
        # tuples, whatever sequence was given (a JSON round trip gives lists)
        for name in ("layers", "thetas", "editors", "suites", "batch_methods", "batch_sizes",
                     "sequential_methods", "mass_layers", "parts"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(v))
        if self.templates is not None:
            object.__setattr__(self, "templates", tuple((int(a), int(b)) for a, b in self.templates))
        if not str(self.model).strip():
            raise ValueError("model: give a model name or folder")
        if not str(self.data).strip():
            raise ValueError("data: give a facts file or 'builtin'")
        for name in ("proxy_n", "test_n", "brute_proxy_n", "test_brute_n", "lga_batch_size", "cma_samples",
                     "cma_window", "group_size", "sequential_n", "sequential_every", "n_boot"):
            _positive(name, getattr(self, name))
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {self.offset!r}")
        if self.brute_proxy_n > self.proxy_n:
            raise ValueError(f"brute_proxy_n ({self.brute_proxy_n}) cannot exceed proxy_n ({self.proxy_n})")
        if self.test_brute_n > self.test_n:
            raise ValueError(f"test_brute_n ({self.test_brute_n}) cannot exceed test_n ({self.test_n})")
        if self.editors_n is not None:
            _positive("editors_n", self.editors_n)
            if self.editors_n > self.test_n:
                raise ValueError(f"editors_n ({self.editors_n}) cannot exceed test_n ({self.test_n})")
        if self.sequential_every > self.sequential_n:
            raise ValueError(
                f"sequential_every ({self.sequential_every}) cannot exceed sequential_n ({self.sequential_n})"
            )
        for name in ("layers", "mass_layers"):
            v = getattr(self, name)
            if v is not None:
                if not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in v):
                    raise ValueError(f"{name} must be non-negative layer numbers, got {v!r}")
                if len(set(v)) != len(v):
                    raise ValueError(f"{name}: a layer is repeated in {v!r}")
        if self.layer_sample is not None:
            _positive("layer_sample", self.layer_sample)
        if self.mass_layer is not None and (not isinstance(self.mass_layer, int) or self.mass_layer < 0):
            raise ValueError(f"mass_layer must be a non-negative layer number, got {self.mass_layer!r}")
        editors, single = editor_choices(), editor_choices(single=True)
        for name, allowed in (("thetas", _THETAS), ("editors", editors), ("suites", _SUITES),
                              ("batch_methods", editors), ("sequential_methods", single), ("parts", PARTS)):
            v = getattr(self, name)
            bad = [x for x in v if x not in allowed]
            if bad or len(set(v)) != len(v):
                raise ValueError(f"{name}: {bad or list(v)} not allowed (distinct values of {', '.join(allowed)})")
        if not self.thetas or not self.suites:
            raise ValueError("thetas and suites need at least one value each")
        from golden_fast.locate.hybrid import TRIAL_SCORES, HybridConfig

        # raises on a bad value
        HybridConfig(shortlist=self.hybrid_shortlist, eta=self.hybrid_eta, paraphrases=self.hybrid_paraphrases)
        if self.hybrid_trial_score not in TRIAL_SCORES:
            raise ValueError(
                f"hybrid_trial_score must be one of {sorted(TRIAL_SCORES)}, got {self.hybrid_trial_score!r}"
            )
        if self.brute_editor not in editors:
            raise ValueError(f"brute_editor must be one of {editors}, got {self.brute_editor!r}")
        if self.lga_old_answer not in ("data", "greedy", "auto"):
            raise ValueError(f"lga_old_answer must be data, greedy or auto, got {self.lga_old_answer!r}")
        if self.cma_answer not in ("data", "greedy"):
            raise ValueError(f"cma_answer must be data or greedy, got {self.cma_answer!r}")
        if self.stats not in ("preset", "identity"):
            raise ValueError(f"stats must be 'preset' or 'identity', got {self.stats!r}")
        for name in ("mom2_n_samples", "v_steps"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.templates is not None and (not self.templates or any(a < 1 or b < 1 for a, b in self.templates)):
            raise ValueError(f"templates must be (length, count) pairs of positive integers, got {self.templates!r}")
        for n in self.batch_sizes:
            _positive("batch_sizes", n)
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"batch_sizes: a size is repeated in {self.batch_sizes!r}")

    # ---- derived ---------------------------------------------------------------------------

    @property
    def pool_n(self) -> int:
        """Facts of the evaluation pool: the test split, then the next records for the mass-editing curve
        (whatever parts run now, so that every run of one folder sees the same facts)."""
        sizes = [self.test_n]
        if self.batch_methods:
            sizes.append(max(self.batch_sizes))
        if self.sequential_methods:
            sizes.append(self.sequential_n)
        return max(sizes)

    def checkpoints(self) -> list[int]:
        """Edit counts where the sequential curve is measured: every `sequential_every`, and the end."""
        stops = list(range(self.sequential_every, self.sequential_n + 1, self.sequential_every))
        return stops + ([self.sequential_n] if stops[-1] != self.sequential_n else [])

    def hparam_overrides(self) -> dict[str, Any]:
        """Overrides every editor that has these fields applies on top of its preset
        (`Editor(hparams=...)`; an editor without one of them, UltraEdit's statistics-free config
        for instance, skips it)."""
        from golden_fast.edit.editor import SharedOverrides

        hparams: dict[str, Any] = SharedOverrides()
        if self.stats == "identity":
            hparams["mom2_adjustment"] = False
        if self.mom2_n_samples is not None:
            hparams["mom2_n_samples"] = self.mom2_n_samples
        if self.v_steps is not None:
            hparams["v_num_grad_steps"] = self.v_steps
        if self.templates is not None:
            hparams["context_template_length_params"] = [list(t) for t in self.templates]
        return hparams

    def candidate_layers(self, n_layers: int) -> list[int]:
        """The candidate layers for a model with `n_layers` layers."""
        if self.layers is not None:
            bad = [x for x in self.layers if x >= n_layers]
            if bad:
                raise ValueError(f"layers {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
            return sorted(self.layers)
        if self.layer_sample is None or self.layer_sample >= n_layers:
            return list(range(n_layers))
        k = self.layer_sample
        if k == 1:
            return [n_layers // 2]
        return sorted({round(i * (n_layers - 1) / (k - 1)) for i in range(k)})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(map(list, v)) if k == "templates" and v is not None else
                    list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def core(self) -> dict[str, Any]:
        """The CORE_FIELDS, JSON-ready."""
        d = self.to_dict()
        return {k: d[k] for k in CORE_FIELDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"ExperimentConfig: unknown field(s) {unknown}")
        return cls(**dict(d))


#: --quick: a few minutes on a 135M-parameter model on 2 CPU cores; checks the pipeline, not the science
_QUICK: dict[str, Any] = {
    "proxy_n": 6,
    "test_n": 4,
    "brute_proxy_n": 2,
    "test_brute_n": 2,
    "layer_sample": 4,
    "lga_batch_size": 8,
    "cma_samples": 3,
    "stats": "identity",
    "v_steps": 3,
    "templates": ((3, 2),),
    "group_size": 4,
    "batch_sizes": (4, 8),
    "sequential_n": 6,
    "sequential_every": 3,
    "n_boot": 200,
}


def quick_config(**overrides: Any) -> ExperimentConfig:
    """The --quick preset (tiny sizes, 4 evenly spread layers, C = I, 3 v* steps, 2 short templates);
    `overrides` win over it."""
    values = dict(_QUICK, quick=True)
    values.update(overrides)
    return ExperimentConfig(**values)
