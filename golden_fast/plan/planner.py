"""`plan_model`: the memory of each stage in each dtype, and where it fits (see the package docstring)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from .devices import Budget, Placement, format_bytes, parse_devices, place
from .memory import STAGE_TITLES, STAGES, Assumptions, StageMemory, stage_memory
from .model import Arch, architecture, build_meta_model, resolve_config, text_config
from .process import find_tokenizer, tokenizer_bytes

__all__ = ["DTYPES", "Plan", "StagePlan", "default_devices", "plan_model"]

DTYPES = ("float32", "bfloat16")


def default_devices() -> list[str]:
    """One 80 GB and one 24 GB accelerator, and this machine's RAM."""
    out = ["1x80GB", "1x24GB"]
    try:
        import psutil

        out.append(f"cpu:{psutil.virtual_memory().total // 10**9}GB")
    except ImportError:  # pragma: no cover - accelerate depends on psutil
        pass
    return out


@dataclasses.dataclass
class StagePlan:
    stage: str
    dtype: str
    weights_bytes: int  # parameters x dtype bytes
    buffers_bytes: int
    memory: StageMemory
    placements: list[Placement]

    @property
    def total_bytes(self) -> int:
        """Everything on one machine: weights, buffers, working memory (device and host), the process's
        runtime and tokenizer; on CPU, the resident peak of a process running the stage."""
        m = self.memory
        return self.weights_bytes + self.buffers_bytes + m.device_bytes + m.host_bytes + m.process_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "title": STAGE_TITLES[self.stage],
            "dtype": self.dtype,
            "weights_bytes": self.weights_bytes,
            "buffers_bytes": self.buffers_bytes,
            **self.memory.to_dict(),
            "total_bytes": self.total_bytes,
            "placements": [p.to_dict() for p in self.placements],
        }


@dataclasses.dataclass
class Plan:
    name: str
    source: str
    arch: Arch
    assumptions: Assumptions
    budgets: list[Budget]
    stages: list[StagePlan]
    tokenizer: str = "not counted"  # where the tokenizer term comes from

    def stage(self, stage: str, dtype: str = "float32") -> StagePlan:
        for s in self.stages:
            if s.stage == stage and s.dtype == dtype:
                return s
        raise KeyError(f"no stage {stage!r} in {dtype} in this plan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "config": self.source,
            "architecture": self.arch.to_dict(),
            "parameters": self.arch.n_params,
            "assumptions": self.assumptions.to_dict(),
            "tokenizer": self.tokenizer,
            "budgets": [b.spec for b in self.budgets],
            "units": "bytes; budgets: GB = 10^9, GiB = 2^30",
            "stages": [s.to_dict() for s in self.stages],
        }

    def format(self, terms: bool = True) -> str:
        return format_plan(self, terms=terms)


def _dtype(name: str | torch.dtype) -> tuple[str, torch.dtype]:
    if isinstance(name, torch.dtype):
        return str(name).removeprefix("torch."), name
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
        raise ValueError(f"unknown dtype {name!r}; e.g. float32, bfloat16")
    return str(name), dt


def plan_model(
    model: Any,
    devices: str | Sequence[str] | None = None,
    dtypes: Sequence[str | torch.dtype] = DTYPES,
    assumptions: Assumptions | None = None,
    stages: Sequence[str] = STAGES,
    preset: str | None = None,
) -> Plan:
    """Plan `model`: a name or config.json path (golden_fast/plan/model.py resolves it), or a
    transformers config. Nothing is loaded: the model is built on the meta device.

    devices: budgets (each "1x80GB", "2x24GB", "cpu:24GB", "1x24GB+cpu:64GB"); None: `default_devices()`.
    preset: the golden_fast/presets/<preset>.yaml to take layers and templates from (default: the
    model's name when it has one).
    """
    if isinstance(model, str):
        resolved = resolve_config(model)
        name, config, source = resolved.name, resolved.config, resolved.source
    else:
        config = model
        name = str(getattr(text_config(config), "name_or_path", "") or getattr(config, "model_type", "model"))
        source = "config object"
    for s in stages:
        if s not in STAGES:
            raise ValueError(f"unknown stage {s!r}; stages: {', '.join(STAGES)}")
    budgets = parse_devices(default_devices() if devices is None else devices)
    meta = {dt_name: build_meta_model(config, dt) for dt_name, dt in map(_dtype, dtypes)}
    if not meta:
        raise ValueError("dtypes: give at least one, e.g. float32")
    arch = architecture(name, config, meta.get("float32") or build_meta_model(config, torch.float32))
    asm = (assumptions or Assumptions()).resolve(arch, preset or name)
    asm, tok_note = _with_tokenizer(asm, source)

    from accelerate.utils import compute_module_sizes

    out: list[StagePlan] = []
    for stage in stages:
        for dt_name, model_meta in meta.items():
            dt = getattr(torch, dt_name)
            e = torch.finfo(dt).bits // 8
            weights = sum(p.numel() * p.element_size() for p in model_meta.parameters())
            buffers = sum(b.numel() * b.element_size() for b in model_meta.buffers())
            mem = stage_memory(stage, arch, asm, e)
            sizes = compute_module_sizes(model_meta, dtype=dt)
            placements = [
                place(model_meta, b, dt, mem.device_bytes, mem.host_bytes + mem.process_bytes, arch.no_split, sizes)
                for b in budgets
            ]
            out.append(StagePlan(stage, dt_name, int(weights), int(buffers), mem, placements))
    return Plan(name, source, arch, asm, budgets, out, tok_note)


def _with_tokenizer(asm: Assumptions, source: str) -> tuple[Assumptions, str]:
    """The tokenizer's bytes: given, else measured from tokenizer files beside the config."""
    if asm.tokenizer_bytes is not None:
        return asm, "given"
    measured = tokenizer_bytes(source)
    if measured is None:
        return asm, "not counted (no tokenizer files beside the config; --tokenizer-mib)"
    return dataclasses.replace(asm, tokenizer_bytes=measured), f"measured from {find_tokenizer(source)}"


# ---- text ---------------------------------------------------------------------------------------


def _sizes_line(p: Plan) -> list[str]:
    a, s = p.assumptions, p.arch
    lines = [
        f"sizes: prompt {a.prompt_tokens} tokens with BOS and subject, answer {a.answer_tokens}, "
        f"{a.after_subject} from the subject's last token on",
    ]
    for sp in p.stages:
        if sp.dtype != p.stages[0].dtype:
            continue
        n = sp.memory.notes
        if sp.stage == "lga":
            lines.append(f"  lga: {n['facts']} facts x {n['tokens']} tokens, layers {a.lga_low}-{s.n_layers - 1}")
        elif sp.stage == "stats":
            lines.append(
                f"  stats: layer {n['layer']}, {n['texts']} texts x {n['tokens']} tokens, C in {a.stats_dtype}"
            )
        elif sp.stage == "r-rome":
            lines.append(
                f"  r-rome: layer {n['layer']}, {n['templates']} templates ({n['rows']} rows with the KL prompt), "
                f"prefix {n['prefix_tokens']} + suffix {n['suffix_tokens']} tokens"
            )
        elif sp.stage == "emmet":
            lines.append(
                f"  emmet: {n['facts']} facts, layers {', '.join(map(str, n['layers']))}, {n['templates']} templates, "
                f"z in groups of {n['z_group']}"
            )
    return lines


def _verdict(pl: Placement) -> str:
    if pl.verdict == "fits":
        return "fits"
    if pl.verdict == "no":
        return "no"
    off = [f"{k} {format_bytes(v)}" for k, v in pl.per_device.items() if k in ("cpu", "disk") and v > 0]
    return "offload: " + ", ".join(off)


def format_plan(p: Plan, terms: bool = True) -> str:
    s = p.arch
    tied = "embeddings tied" if s.tied_embeddings else "untied head"
    lines = [
        f"{p.name}: {s.model_class} ({s.model_type}), {s.n_layers} layers, d {s.d}, m {s.m}, vocab {s.vocab}, "
        f"heads {s.n_heads} / {s.n_kv_heads} KV x {s.head_dim}",
        f"parameters: {s.n_params:,} ({tied}); config: {p.source}",
        *_sizes_line(p),
        "units: GB = 10^9 bytes; working = beyond the weights on the computing device; host = CPU RAM;",
        "process = runtime (Python, torch, transformers, measured on CPU) and tokenizer, in CPU RAM; "
        f"tokenizer {p.tokenizer}",
        "",
    ]
    head = ["stage", "dtype", "weights", "working", "host", "process", "total"] + [b.spec for b in p.budgets]
    rows = []
    for sp in p.stages:
        rows.append([
            STAGE_TITLES[sp.stage], sp.dtype, format_bytes(sp.weights_bytes + sp.buffers_bytes),
            format_bytes(sp.memory.device_bytes), format_bytes(sp.memory.host_bytes),
            format_bytes(sp.memory.process_bytes), format_bytes(sp.total_bytes),
            *[_verdict(pl) for pl in sp.placements],
        ])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    lines += [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]
    if terms:
        lines += ["", "working-memory terms (golden_fast/plan/memory.py):"]
        dts = list(dict.fromkeys(sp.dtype for sp in p.stages))
        first = p.stages[0].memory.process
        code = {sp.stage: sp.memory.process["stage_code"] for sp in p.stages}
        lines.append(f"  process: runtime {format_bytes(first['runtime'])}; "
                     f"tokenizer {format_bytes(first['tokenizer'])}; "
                     "a stage's first-run code " + ", ".join(f"{k} {format_bytes(v)}" for k, v in code.items()))
        for stage in dict.fromkeys(sp.stage for sp in p.stages):
            if stage == "load":
                continue
            per = {sp.dtype: sp for sp in p.stages if sp.stage == stage}
            names = list(per[dts[0]].memory.device) + list(per[dts[0]].memory.host)
            cells = []
            for t in names:
                vals = [per[d].memory.device.get(t, per[d].memory.host.get(t)) for d in dts]
                cells.append(f"{t} {' / '.join(format_bytes(v) for v in vals)}")
            lines.append(f"  {stage} ({' / '.join(dts)}): " + "; ".join(cells))
    return "\n".join(lines)
