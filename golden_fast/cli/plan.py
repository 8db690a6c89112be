"""`golden-fast plan --model NAME [--devices 1x80GB 2x24GB cpu:24GB] [--json]`: the memory each stage
needs (load, LGA, statistics, one R-ROME edit, an EMMET batch) in float32 and bfloat16, and whether it
fits each device budget, with the device_map accelerate would use. No weights are read: the model is
built from its config on the meta device. Formulas: golden_fast/plan/memory.py."""

from __future__ import annotations

import argparse
import json


def _templates(text: str) -> tuple[tuple[int, int], ...]:
    """"10x5" or "5x10,10x10" -> ((10, 5),) / ((5, 10), (10, 10)); "" or "none" -> () (bare prompt only)."""
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    out = []
    for part in text.split(","):
        try:
            length, count = part.lower().split("x")
            out.append((int(length), int(count)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad templates {part!r}: LENGTHxCOUNT, comma-separated, e.g. 10x5 or 5x10,10x10"
            ) from None
    return tuple(out)


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad layers {text!r}: comma-separated integers, e.g. 4,5,6,7,8") from None


def _mib(value: float | None) -> int | None:
    return None if value is None else int(value * 2**20)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="memory per stage and dtype, and whether it fits a device budget (no weights read)",
        description=__doc__,
    )
    p.add_argument("--model", "-m", required=True,
                   help="zoo name, shipped preset (gemma-3-12b, llama-2-7b, gpt2-xl), tiny-* name, "
                        "config.json path or folder")
    p.add_argument("--devices", nargs="+", default=None, metavar="BUDGET",
                   help="budgets to compare, each NxSIZE (accelerators), cpu:SIZE, or devices joined by '+' "
                        "(1x24GB+cpu:64GB); GB = 10^9, GiB = 2^30 (default: 1x80GB 1x24GB and this machine's RAM)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated (default float32,bfloat16)")
    p.add_argument("--stages", default=None, help="comma-separated subset of load,lga,stats,r-rome,emmet")
    p.add_argument("--preset", default=None, help="golden_fast/presets/<NAME>.yaml for layers and templates "
                                                  "(default: the model's name)")
    g = p.add_argument_group("assumptions (golden_fast/plan/memory.py, Assumptions)")
    g.add_argument("--prompt-tokens", type=int, default=12, help="a fact's prompt, BOS and subject included (12)")
    g.add_argument("--answer-tokens", type=int, default=2, help="tokens of an answer / target (2)")
    g.add_argument("--after-subject", type=int, default=5,
                   help="prompt tokens from the subject's last token on (5)")
    g.add_argument("--lga-batch", type=int, default=None, help="facts per LGA pass (LGAConfig: 8)")
    g.add_argument("--lga-low", type=int, default=0, help="lowest LGA candidate layer (0: all layers)")
    g.add_argument("--stats-batch-tokens", type=int, default=None, help="statistics batch (StatsConfig: 4096)")
    g.add_argument("--stats-text-tokens", type=int, default=None,
                   help="tokens per statistics text (StatsConfig.max_length 1024, capped by the context)")
    g.add_argument("--stats-dtype", choices=("float32", "float64"), default=None,
                   help="C accumulation (the preset's mom2_dtype)")
    g.add_argument("--layer", type=int, default=None, help="R-ROME / statistics layer (the preset's)")
    g.add_argument("--templates", type=_templates, default=None,
                   help="R-ROME context templates LENGTHxCOUNT,... (the preset's; 'none': bare prompt)")
    g.add_argument("--no-mom2", action="store_true", help="plan R-ROME and EMMET with C = I (mom2_adjustment off)")
    g.add_argument("--emmet-facts", type=int, default=1000, help="facts in the EMMET batch (1000)")
    g.add_argument("--emmet-layers", type=_layers, default=None, help="EMMET layers (the preset's)")
    g.add_argument("--emmet-templates", type=_templates, default=None, help="EMMET context templates (the preset's)")
    g.add_argument("--z-group", type=int, default=16, help="facts per z-optimisation group (16)")
    g.add_argument("--runtime-mib", type=float, default=None,
                   help="the process's runtime: Python, torch, transformers, golden-fast (default 465 MiB, "
                        "measured on CPU; a CUDA process holds more)")
    g.add_argument("--tokenizer-mib", type=float, default=None,
                   help="the loaded tokenizer (default: measured when tokenizer files sit beside the config, "
                        "else not counted)")
    p.add_argument("--no-terms", action="store_true", help="leave out the per-term breakdown")
    p.add_argument("--json", action="store_true", help="print JSON (every term, placement and device_map)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from golden_fast.plan import STAGES, Assumptions, plan_model

    asm = Assumptions(
        prompt_tokens=args.prompt_tokens, answer_tokens=args.answer_tokens, after_subject=args.after_subject,
        lga_batch=args.lga_batch, lga_low=args.lga_low, stats_batch_tokens=args.stats_batch_tokens,
        stats_text_tokens=args.stats_text_tokens, stats_dtype=args.stats_dtype, layer=args.layer,
        templates=args.templates, mom2_adjustment=False if args.no_mom2 else None,
        emmet_facts=args.emmet_facts, emmet_layers=args.emmet_layers,
        emmet_templates=args.emmet_templates, z_group=args.z_group,
        runtime_bytes=_mib(args.runtime_mib), tokenizer_bytes=_mib(args.tokenizer_mib),
    )
    stages = STAGES if not args.stages else tuple(s.strip() for s in args.stages.split(",") if s.strip())
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    plan = plan_model(args.model, devices=args.devices, dtypes=dtypes, assumptions=asm, stages=stages,
                      preset=args.preset)
    if args.json:
        print(json.dumps(plan.to_dict()))
    else:
        print(plan.format(terms=not args.no_terms))
    return 0
