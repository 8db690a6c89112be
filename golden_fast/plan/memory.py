"""Memory formulas of golden-fast's stages, from the architecture alone (no weights).

Notation (golden_fast/plan/model.py, `Arch`): L layers, d hidden width, m down-projection input
width (the key width), V vocabulary, h / h_kv query / key-value heads of width d_h, q = h d_h,
kv = h_kv d_h; e bytes per element of the model dtype (4 float32, 2 bfloat16). All figures are
bytes; "[c]" is 1 when c holds, else 0.

Activations kept for backward, per layer (weights frozen, as in every stage here: a linear map then
keeps no input, only its weight, which is not new memory):

    kv'    = q if 1 < h_kv < h else kv        (with a padding mask transformers' SDPA path copies K, V
                                               to all h heads; h_kv = 1 is a view, h_kv = h needs none)
    N(e)   = 4d + 4  (RMSNorm: transformers upcasts, x kept in float32 with 1/rms)
           = e (d + 2) (LayerNorm: x, mean, rstd)
    a      = s + 2[gated]   tensors of width m the MLP keeps: the activation keeps s (1 for one-op
             activations: SiLU, GELU-tanh; 4 for GPT-2's gelu_new, written in Python: x, tanh(.),
             0.5 x, 1 + tanh(.)), a gated MLP also keeps act(gate) and up for their product
    A_tok  = n_norm N(e) + e (2q + a m) + 4h  [+ Gemma-3's q / k norms: 4(q + kv) + 4(h + h_kv)]
             per query token (n_norm: block norms, 2 for Llama / GPT-2, 4 for Gemma-3; 2q: the
             rotated queries and SDPA's output; 4h: SDPA's log-sum-exp)
    A_key  = 2 e kv'   per key token (K and V as SDPA keeps them)
    A_pair = e         per (query, key) pair (the additive attention mask, materialised per layer)

These were checked to the byte against autograd's saved tensors (torch.autograd.graph
.saved_tensors_hooks) on SmolLM2-, Gemma-3- and GPT-2-shaped blocks in float32 and bfloat16
(tests/unit/test_plan.py does it on the tiny models); what they leave out is per layer, not per token
(Gemma's float32 norm scales, RoPE tables: under 0.1% at real sizes).

Head (the scored positions only, never the full logits): H(n) = n V (12 + e[e != 4]) for n positions
(float32 logits, the saved log-softmax and its gradient; the e-typed logits first when e != 4).

Stages (sizes from `Assumptions`: P tokens = prompt with BOS and subject, A = answer tokens,
X = prompt tokens from the subject's last token on; defaults from the project's configs):

load      n_params e + buffers (the weights; transformers loads straight into the dtype).

lga       one batch of B facts (LGAConfig.batch_size), candidate layers low..L-1 (Lg of them),
          T = P + A - 1 tokens per sequence (the last answer token is never read), BT = B T:
              act      = Lg BT (A_tok + A_key + T A_pair)
              captured = Lg BT (2m + d) e        (the old-answer pass's k and g of every layer stay
                                                  while the new-answer pass keeps its k and backs up)
              head     = H(B A) + BT N(e)        (+ the final norm's input)
              inputs   = 2 BT d e                (embeddings, the leaf entering layer low)
          N facts run in ceil(N / B) such batches: the peak does not grow with N.

stats     one layer's C_l = sum k kᵀ over a batch of B_s = batch_tokens // T_s texts of
          T_s = min(max_length, context) tokens, no grad, the pass stopping after the layer:
              C        = m² c                    (the running sum; c = 4 float32 / 8 float64)
              forward  = B_s T_s (4 e d + max(3 e m, 2 e m + 4m[e != 4]))
                         (the embeddings, the residual in and out of the block, the normed input;
                         act(gate), up and their product, or the product, the hook's copy of the
                         kept keys and its float32 copy when e != 4)
              mask     = B_s T_s²  (boolean)      rope = 2 B_s T_s d_h 4 (cos, sin; not GPT-2)
              stats    = max(C + forward + mask + rope, 4 m² c)   (at the end symmetrize_upper's
                                                  triu, triu(1) and their sum join the sum)

r-rome    one edit of a sequential run at layer l (C comes from the statistics cache, the stats
          stage; it and its Cholesky factor, loaded by the first edit, stay in the Editor's Moments).
          R_t = 1 + sum(counts) context templates, R = R_t + [kl] rows (the KL prompt),
          prefix P_v = ctx + P - X tokens (ctx = longest template prefix + 2),
          suffix S = X + A - 1 tokens (prefix_reuse: only the suffix runs the optimised layers):
              v*       = KV + grad + H(R_t A + [kl]) + 4V[kl] + R S d e
              KV       = 2 e kv R (L P_v + L (P_v + S) + l P_v + (L - l)(P_v + S))
                         (the prefix cache, the setup pass's copy grown by the suffix, and each step's
                         copy, grown by the suffix from layer l up)
              grad     = R (L - 1 - l)(S A_tok + (P_v + S) A_key [kv' != kv] + S (P_v + S) A_pair)
              C        = 28 m² to load and factorise (float32 mean 4m², float64 C, (C + Cᵀ) and its
                         half: 24m²; then C, scale C and eigvalsh's copy, and the Cholesky factor:
                         24m²), 16 m² held after (float64 C and its factor)
              W64      = 8 d m                   (the float64 copy of the down-projection weight)
              r-rome   = W64 + max(v* + 16 m², 28 m²)      (mom2_adjustment off: W64 + v*, C = I)
          host:  d m e (the journal's copy of the original weight, for revert)

emmet     a batch of N facts over E layers l_1..l_E, z optimised at l_E in groups of G = min(N, 16)
          facts (R = G (R_t + [kl]) rows, the v* terms above at layer l_E):
              C        = (16 E + 12) m²          (every layer's float64 C and Cholesky factor stay
                                                  cached, plus one layer's loading transient)
              keys     = N R_t (2m + d) 8 + 2 N d 8   (keys_at_subject keeps every (fact, template)
                                                  key and output in float64, concatenates them, then
                                                  averages; the residual at l_E)
              solves   = 2 m N 8 + 4 N² 8 + 4 d N 8   (K, C0⁻¹K; D, D + lambda I, its symmetrised copy
                                                  and eigvalsh's; R, Z, H, U)
              updates  = E (d + m) N 8           (every layer's U, V, kept for the trace)
              emmet    = max(z, C + keys + solves + updates)   (z comes first, then the layers)
          host:  E d m e + E (d + m) N 8 + N d 8 (journal originals and factor copies, the z's)

Everything but "host" sits on the device that computes (the GPU, or the CPU when planning for RAM
only); host memory is CPU RAM in every case.

What the figures are: the terms above are bytes of tensors (and of the kernels' workspaces) at the
stage's peak, what torch's allocator holds: on a GPU, torch.cuda.max_memory_allocated; on this
project's CPU torch's allocator peaked at 0.92-1.10x them (SmolLM2-135M, Gemma-3-270M, float32).
Every stage also carries the process's own memory, in CPU RAM (golden_fast/plan/process.py): the
runtime (Python, torch, transformers, golden-fast and the modeling code: 465 MiB, measured on CPU
with tiny models, any model alike), a stage's first-run code (16-32 MiB) and the tokenizer (measured
from its files when they sit beside the config). A stage's total on CPU is then a forecast of the
resident peak (VmHWM) of a fresh process that loads the model and runs that stage:
bench/plan_vs_measured.py measures it, bench/results/plan/<model>.jsonl holds the numbers
(measured / planned 0.996-1.075 for every stage of SmolLM2-135M and Gemma-3-270M, float32). No term
models the C library's heap: with glibc's default dynamic mmap threshold, freed tensors under 32 MiB
stay in a heap that fragments, so a stage's growth of the resident set exceeds its terms by 18-49%
(statistics and R-ROME the most). The totals absorb it at these sizes, where runtime and weights
dominate; at large sizes the working terms dominate and they would not. A fixed threshold
(MALLOC_MMAP_THRESHOLD_=65536, or mallopt at start) brings the growth to 0.85-1.20x the terms and
the totals to 0.97-1.02x.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .model import Arch
from .process import RUNTIME_BYTES, STAGE_RUNTIME_BYTES

__all__ = ["Assumptions", "StageMemory", "STAGES", "stage_memory"]

STAGES = ("load", "lga", "stats", "r-rome", "emmet")

STAGE_TITLES = {
    "load": "load (weights)",
    "lga": "LGA, one batch of facts",
    "stats": "statistics, one layer",
    "r-rome": "one R-ROME edit",
    "emmet": "EMMET batch of N facts",
}


def _defaults() -> dict[str, Any]:
    """The project's own defaults, read from its configs (not copied here)."""
    from golden_fast.edit.config import EMMETConfig, RROMEConfig
    from golden_fast.locate.lga import LGAConfig
    from golden_fast.stats.config import StatsConfig

    stats = StatsConfig()
    return {
        "lga_batch": LGAConfig().batch_size,
        "stats_batch_tokens": stats.batch_tokens,
        "stats_text_tokens": stats.max_length,
        "rrome_templates": RROMEConfig().context_template_length_params,
        "emmet_templates": EMMETConfig().context_template_length_params,
    }


@dataclasses.dataclass(frozen=True)
class Assumptions:
    """Sizes the formulas need. None: the project's default for the model (its preset in
    golden_fast/presets/<model>.yaml, else the method's config default).

    Args:
        prompt_tokens: tokens of a fact's prompt, BOS and subject included (CounterFact-like
            prompts; the built-in facts average 7-8 with SmolLM2's / Gemma's tokenizers, 14 at most).
        answer_tokens: tokens of an answer / target_new.
        after_subject: prompt tokens from the subject's last token to the prompt's end, inclusive.
        lga_batch: facts per LGA forward/backward (LGAConfig.batch_size).
        lga_low: the lowest candidate layer (gradients enter there; LGA's default: all layers, 0).
        stats_batch_tokens: token budget of a statistics batch (StatsConfig.batch_tokens).
        stats_text_tokens: tokens per text (StatsConfig.max_length, capped by the model's context).
        stats_dtype: accumulation dtype of C (the preset's mom2_dtype).
        layer: R-ROME's layer; the statistics stage plans this layer too.
        templates: R-ROME's context templates, ((length, count), ...).
        kl: the KL prompt's row (kl_factor > 0 in every preset).
        mom2_adjustment: R-ROME and EMMET solve with C (True in every preset); False plans C = I
            (no m x m term).
        emmet_facts: facts in one EMMET batch (the experiment's largest batch size).
        emmet_layers: EMMET's layers.
        emmet_templates: EMMET's context templates.
        z_group: facts per z-optimisation group (optimise_targets' group_size).
        runtime_bytes: the process's runtime (Python, torch, transformers, golden-fast, the modeling
            code); None: RUNTIME_BYTES, measured on CPU (golden_fast/plan/process.py).
        tokenizer_bytes: what the loaded tokenizer keeps resident; None: measured by `plan_model`
            when tokenizer files sit beside the config, else not counted (0).
    """

    prompt_tokens: int = 12
    answer_tokens: int = 2
    after_subject: int = 5
    lga_batch: int | None = None
    lga_low: int = 0
    stats_batch_tokens: int | None = None
    stats_text_tokens: int | None = None
    stats_dtype: str | None = None
    layer: int | None = None
    templates: tuple[tuple[int, int], ...] | None = None
    kl: bool | None = None
    mom2_adjustment: bool | None = None
    emmet_facts: int = 1000
    emmet_layers: tuple[int, ...] | None = None
    emmet_templates: tuple[tuple[int, int], ...] | None = None
    z_group: int = 16
    runtime_bytes: int | None = None
    tokenizer_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "answer_tokens", "after_subject", "emmet_facts", "z_group"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Assumptions.{name} must be a positive int, got {v!r}")
        if self.after_subject > self.prompt_tokens:
            raise ValueError(
                f"Assumptions.after_subject ({self.after_subject}) cannot exceed prompt_tokens ({self.prompt_tokens})"
            )
        for name in ("lga_batch", "stats_batch_tokens", "stats_text_tokens"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"Assumptions.{name} must be a positive int or None, got {v!r}")
        for name in ("runtime_bytes", "tokenizer_bytes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"Assumptions.{name} must be a non-negative int or None, got {v!r}")
        if self.stats_dtype not in (None, "float32", "float64"):
            raise ValueError(f"Assumptions.stats_dtype must be float32 or float64, got {self.stats_dtype!r}")
        for name in ("templates", "emmet_templates"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple((int(a), int(b)) for a, b in v))
        if self.emmet_layers is not None:
            object.__setattr__(self, "emmet_layers", tuple(int(x) for x in self.emmet_layers))

    def resolve(self, arch: Arch, preset_name: str | None = None) -> Assumptions:
        """A copy with every None filled: from the preset of `preset_name` where it has one, else
        the project's config defaults; layers are checked against the model."""
        from golden_fast.edit.config import preset

        dflt = _defaults()
        rr = preset("r-rome", preset_name)
        em = preset("emmet", preset_name)
        L = arch.n_layers
        layer = self.layer if self.layer is not None else min(rr.layers[0], L - 1)
        emmet_layers = self.emmet_layers or tuple(x for x in em.layers if x < L) or (L - 1,)
        text = self.stats_text_tokens or dflt["stats_text_tokens"]
        if arch.max_positions:
            text = min(text, arch.max_positions)
        out = dataclasses.replace(
            self,
            lga_batch=self.lga_batch or dflt["lga_batch"],
            stats_batch_tokens=self.stats_batch_tokens or dflt["stats_batch_tokens"],
            stats_text_tokens=text,
            stats_dtype=self.stats_dtype or rr.mom2_dtype,
            layer=layer,
            templates=self.templates if self.templates is not None else rr.context_template_length_params,
            kl=self.kl if self.kl is not None else rr.kl_factor > 0,
            mom2_adjustment=self.mom2_adjustment if self.mom2_adjustment is not None else rr.mom2_adjustment,
            emmet_layers=tuple(sorted(set(emmet_layers))),
            emmet_templates=self.emmet_templates if self.emmet_templates is not None
            else em.context_template_length_params,
        )
        for x in (out.layer, out.lga_low, *out.emmet_layers):
            if not 0 <= x < L:
                raise ValueError(f"layer {x} out of range: {arch.name} has {L} layers")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("templates", "emmet_templates", "emmet_layers"):
            if d[k] is not None:
                d[k] = [list(x) if isinstance(x, tuple) else x for x in d[k]]
        return d


@dataclasses.dataclass
class StageMemory:
    """Working memory of one stage beyond the weights: `device` terms sit where the model computes,
    `host` terms in CPU RAM. `device_bytes` is the stage's peak (terms that never coexist are
    combined with max, as the formulas say), not always the sum of the terms."""

    name: str
    device: dict[str, int]
    host: dict[str, int]
    device_bytes: int
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    process: dict[str, int] = dataclasses.field(default_factory=dict)  # runtime, tokenizer: CPU RAM

    @property
    def host_bytes(self) -> int:
        return sum(self.host.values())

    @property
    def process_bytes(self) -> int:
        return sum(self.process.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_terms": dict(self.device),
            "host_terms": dict(self.host),
            "work_device_bytes": int(self.device_bytes),
            "work_host_bytes": int(self.host_bytes),
            "process_terms": dict(self.process),
            "process_bytes": int(self.process_bytes),
            "sizes": dict(self.notes),
        }


# ---- per-token terms ---------------------------------------------------------------------------


def norm_saved(a: Arch, e: int) -> int:
    """N(e): bytes one norm keeps per token."""
    return 4 * a.d + 4 if a.norm == "rms" else e * (a.d + 2)


def kv_eff(a: Arch) -> int:
    """kv': the K / V width SDPA keeps (a copy to all heads when 1 < h_kv < h and a mask is passed)."""
    return a.q if 1 < a.n_kv_heads < a.n_heads else a.kv


def a_tok(a: Arch, e: int) -> int:
    """A_tok: bytes a layer keeps for backward per query token, K / V and the mask aside."""
    act = a.act_saved + (2 if a.gated else 0)
    out = a.norms_per_layer * norm_saved(a, e) + e * (2 * a.q + act * a.m) + 4 * a.n_heads
    if a.qk_norm:
        out += 4 * (a.q + a.kv) + 4 * (a.n_heads + a.n_kv_heads)
    return out


def a_key(a: Arch, e: int) -> int:
    """A_key: bytes a layer keeps per key token (K and V)."""
    return 2 * e * kv_eff(a)


def head(a: Arch, e: int, n: int) -> int:
    """H(n): logits of n scored positions in float32, the log-softmax kept, its gradient."""
    return n * a.vocab * (12 + (e if e != 4 else 0))


# ---- stages ------------------------------------------------------------------------------------


def _lga(a: Arch, s: Assumptions, e: int) -> StageMemory:
    B, T = s.lga_batch, s.prompt_tokens + s.answer_tokens - 1
    BT, Lg = B * T, a.n_layers - s.lga_low
    dev = {
        "activations": Lg * BT * (a_tok(a, e) + a_key(a, e) + T * e),
        "captured_k_g": Lg * BT * (2 * a.m + a.d) * e,
        "head": head(a, e, B * s.answer_tokens) + BT * norm_saved(a, e),
        "inputs": 2 * BT * a.d * e,
    }
    return StageMemory("lga", dev, {}, sum(dev.values()), {"facts": B, "tokens": T, "layers": Lg})


def _stats(a: Arch, s: Assumptions, e: int) -> StageMemory:
    T = s.stats_text_tokens
    B = max(1, s.stats_batch_tokens // T)
    c = 8 if s.stats_dtype == "float64" else 4
    dev = {
        "C_accumulator": a.m * a.m * c,
        "forward": B * T * (4 * e * a.d + max(3 * e * a.m, 2 * e * a.m + (4 * a.m if e != 4 else 0))),
        "mask": B * T * T,
        "rope": 2 * B * T * a.head_dim * 4 if a.family != "gpt2" else 0,
        "C_symmetrize": 3 * a.m * a.m * c,
    }
    peak = max(dev["C_accumulator"] + dev["forward"] + dev["mask"] + dev["rope"], 4 * a.m * a.m * c)
    return StageMemory("stats", dev, {}, peak, {"texts": B, "tokens": T, "layer": s.layer})


def _ctx(templates: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """(templates incl. the bare prompt, prefix tokens of the longest: its length + ". ")."""
    n = 1 + sum(count for _, count in templates)
    ctx = max((length for length, count in templates if count > 0), default=-2) + 2
    return n, ctx


def _vstar(a: Arch, s: Assumptions, e: int, layer: int, facts: int, templates) -> dict[str, int]:
    """v* / z optimisation of `facts` facts at `layer` (the terms of the docstring's v*)."""
    n_t, ctx = _ctx(templates)
    kl = 1 if s.kl else 0
    R = facts * (n_t + kl)
    P = ctx + s.prompt_tokens - s.after_subject
    S = s.after_subject + s.answer_tokens - 1
    L = a.n_layers
    kv_rows = L * P + L * (P + S) + layer * P + (L - layer) * (P + S)
    extra_kv = a_key(a, e) if kv_eff(a) != a.kv else 0
    return {
        "kv_cache": 2 * e * a.kv * R * kv_rows,
        "activations": R * (L - 1 - layer) * (S * a_tok(a, e) + (P + S) * extra_kv + S * (P + S) * e),
        "head": head(a, e, facts * (n_t * s.answer_tokens + kl)) + 4 * a.vocab * facts * kl + R * S * norm_saved(a, e),
        "h_in": R * S * a.d * e,
    }


def _rrome(a: Arch, s: Assumptions, e: int) -> StageMemory:
    m2 = a.m * a.m
    v = _vstar(a, s, e, s.layer, 1, s.templates)
    v_total = sum(v.values())
    dev = {f"v*_{k}": x for k, x in v.items()}
    c = 1 if s.mom2_adjustment else 0
    dev["C_and_factor_held"] = 16 * m2 * c
    dev["C_load_peak"] = 28 * m2 * c
    dev["W_float64"] = 8 * a.d * a.m
    peak = dev["W_float64"] + max(v_total + dev["C_and_factor_held"], dev["C_load_peak"])
    n_t, ctx = _ctx(s.templates)
    notes = {"layer": s.layer, "templates": n_t, "rows": n_t + (1 if s.kl else 0),
             "prefix_tokens": ctx + s.prompt_tokens - s.after_subject,
             "suffix_tokens": s.after_subject + s.answer_tokens - 1}
    return StageMemory("r-rome", dev, {"journal_original": a.d * a.m * e}, peak, notes)


def _emmet(a: Arch, s: Assumptions, e: int) -> StageMemory:
    N, E = s.emmet_facts, len(s.emmet_layers)
    n_t, _ = _ctx(s.emmet_templates)
    G = min(N, s.z_group)
    z = _vstar(a, s, e, max(s.emmet_layers), G, s.emmet_templates)
    m2, d, m = a.m * a.m, a.d, a.m
    dev = {f"z_{k}": x for k, x in z.items()}
    rest = {
        "C_and_factors": (16 * E + 12) * m2 if s.mom2_adjustment else 0,
        "keys": N * n_t * (2 * m + d) * 8 + 2 * N * d * 8,
        "solves": 2 * m * N * 8 + 4 * N * N * 8 + 4 * d * N * 8,
        "updates": E * (d + m) * N * 8,
    }
    dev.update(rest)
    peak = max(sum(z.values()), sum(rest.values()))
    host = {"journal_originals": E * d * m * e, "journal_factors": E * (d + m) * N * 8, "z": N * d * 8}
    notes = {"facts": N, "layers": list(s.emmet_layers), "templates": n_t, "z_group": G}
    return StageMemory("emmet", dev, host, peak, notes)


def stage_memory(stage: str, arch: Arch, assumptions: Assumptions, dtype_bytes: int) -> StageMemory:
    """Working memory of `stage` (one of STAGES) beyond the weights, and the process's own memory;
    `assumptions` resolved."""
    if stage == "load":
        mem = StageMemory("load", {}, {}, 0)
    else:
        fn = {"lga": _lga, "stats": _stats, "r-rome": _rrome, "emmet": _emmet}.get(stage)
        if fn is None:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        mem = fn(arch, assumptions, dtype_bytes)
    mem.process = process_terms(stage, assumptions)
    return mem


def process_terms(stage: str, s: Assumptions) -> dict[str, int]:
    """The runtime, the stage's first-run code and the tokenizer (golden_fast/plan/process.py)."""
    runtime = RUNTIME_BYTES if s.runtime_bytes is None else s.runtime_bytes
    return {"runtime": runtime, "stage_code": STAGE_RUNTIME_BYTES[stage], "tokenizer": s.tokenizer_bytes or 0}
