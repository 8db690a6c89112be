"""A planner that needs no weights: how much memory each golden-fast stage takes for a model, in
each dtype, and whether (and how) it fits a device budget.

    from golden_fast.plan import plan_model
    p = plan_model("gemma-3-12b", devices=["1x80GB", "2x24GB", "cpu:24GB"])
    print(p.format())                       # or p.to_dict() for JSON
    p.stage("lga", "bfloat16").total_bytes

    golden-fast plan --model gemma-3-12b --devices 1x80GB 2x24GB cpu:24GB [--json]

The model is built from its config on the meta device (golden_fast/plan/model.py: names, zoo models,
shipped presets under golden_fast/presets/configs, any config.json); each stage's working memory
comes from the formulas in golden_fast/plan/memory.py (stated in its docstring, with their
assumptions); the process's own memory (runtime, tokenizer) from golden_fast/plan/process.py, so
a stage's total on CPU forecasts the resident peak of a process that runs it; weights are placed by
accelerate's `infer_auto_device_map` under each budget (golden_fast/plan/devices.py).
"""

from .devices import Budget, Placement, format_bytes, parse_budget, parse_devices, parse_size
from .memory import STAGES, Assumptions, StageMemory, stage_memory
from .model import Arch, architecture, build_meta_model, preset_config_names, resolve_config
from .planner import DTYPES, Plan, StagePlan, default_devices, plan_model
from .process import RUNTIME_BYTES, STAGE_RUNTIME_BYTES, tokenizer_bytes

__all__ = [
    "DTYPES",
    "RUNTIME_BYTES",
    "STAGES",
    "STAGE_RUNTIME_BYTES",
    "Arch",
    "Assumptions",
    "Budget",
    "Placement",
    "Plan",
    "StageMemory",
    "StagePlan",
    "architecture",
    "build_meta_model",
    "default_devices",
    "format_bytes",
    "parse_budget",
    "parse_devices",
    "parse_size",
    "plan_model",
    "preset_config_names",
    "resolve_config",
    "stage_memory",
    "tokenizer_bytes",
]
