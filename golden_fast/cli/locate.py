"""`golden-fast locate`: score every layer on proxy requests and choose the one to edit.

    golden-fast locate --model smollm2-135m --data counterfact-edit.json \\
        --method lga --n 50 --plot lga.png --json lga.json
    golden-fast locate --model smollm2-135m --data known_1000.json --method cma --n 20 \\
        --plot cma.png --heatmap trace.png
    golden-fast locate --model smollm2-135m --data cf.json --method brute --n 20 --out runs/brute --plot bf.png
    golden-fast locate --model smollm2-135m --data cf.json --method hybrid --n 32 --out runs/hybrid

(--data: a local copy of a benchmark file, e.g. CounterFact or ROME's known_1000; `--data builtin`
uses the small fact set shipped with the package.)

LGA (Layer Gradient Analysis) takes one forward and one backward pass per batch for the old answers
and one for the new; CMA (causal tracing) runs (layers + 1) x --samples noisy copies per request;
brute force edits each request at each layer (R-ROME by default), evaluates and reverts, and can be
resumed: rerun the same command with the same --out. The hybrid takes LGA's best --shortlist layers
(after its Tukey filter) and runs successive halving with trial edits on the proxy requests: --n0
requests per layer, the better half kept and the requests doubled each round, early stop when the
leader's paired bootstrap interval is above 0 against every other layer (resumable with --out too).
"""

from __future__ import annotations

import argparse
import json
import time

from golden_fast.cli import CLIError, add_threads_argument


def _layers(text: str) -> list[int]:
    from golden_fast.cli.edit import _parse_layers

    return _parse_layers(text)


def _k(text: str) -> float | None:
    if text.strip().lower() in ("none", "off", "no"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tukey-k takes a number or 'none', got {text!r}") from None


def shortlist_arg(text: str) -> int | str:
    """argparse type of a hybrid shortlist: a positive int or "all"."""
    if text == "all":
        return "all"
    try:
        c = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a positive int or 'all', got {text!r}") from None
    if c < 1:
        raise argparse.ArgumentTypeError(f"a positive int or 'all', got {text!r}")
    return c


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number > 0, got {text!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"a number > 0, got {text!r}")
    return x


def register(sub: argparse._SubParsersAction) -> None:
    from golden_fast.edit.registry import editor_names
    from golden_fast.locate.api import METHODS
    from golden_fast.locate.lga import LOSS_REDUCTIONS, LOSS_SPANS, OLD_ANSWERS, THETAS, VARIANTS

    p = sub.add_parser(
        "locate",
        help="choose the layer to edit: LGA, causal tracing (cma), brute force or hybrid (LGA + trial edits)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="zoo name, tiny-* name, local folder or Hugging Face id")
    p.add_argument(
        "--data", required=True, help="a CounterFact/zsRE/KnowEdit/known_1000/golden-fast file, or 'builtin'"
    )
    p.add_argument("--format", default=None, help="data format (default: detected from the records)")
    p.add_argument("--method", default="lga", choices=METHODS, help="default: lga")
    p.add_argument("--n", type=int, default=None, help="use the first N requests (after --offset) as the proxy set")
    p.add_argument("--offset", type=int, default=0, help="skip the first N requests")
    p.add_argument("--layers", type=_layers, default=None, help="candidate layers: 3,4,5 or 0-29 (default: all)")
    p.add_argument("--top-k", type=int, default=1, help="how many layers to report (multi-layer editors)")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw the per-layer curve")
    p.add_argument("--json", default=None, metavar="PATH", help="write the LayerScores as JSON")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "float64"))
    p.add_argument("--device", default="cpu", help="device to load the model on (cpu, cuda, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_argument(p)
    g = p.add_argument_group("LGA")
    g.add_argument("--theta", default="down", choices=THETAS, help="whose gradient (default down)")
    g.add_argument(
        "--variant",
        default="signed",
        choices=VARIANTS,
        help="the score the layer is chosen on (default: signed, the paper's)",
    )
    g.add_argument("--loss-span", default="answer", choices=LOSS_SPANS)
    g.add_argument("--loss-reduction", default="mean", choices=LOSS_REDUCTIONS)
    g.add_argument(
        "--old-answer",
        default="data",
        choices=OLD_ANSWERS,
        help="old answer: the record's ground truth (data), the model's greedy answer, or auto",
    )
    g.add_argument("--tukey-k", type=_k, default=1.0, help="Tukey fence factor (default 1; 'none': no filter)")
    g.add_argument("--batch-size", type=int, default=8, help="requests per pass (default 8)")
    g.add_argument(
        "--checkpoint", action="store_true", help="recompute each block in backward: less memory, one more forward pass"
    )
    g = p.add_argument_group("causal tracing (cma)")
    g.add_argument("--kind", default="mlp", choices=("mlp", "attn", "hidden"), help="what is restored")
    g.add_argument("--window", type=int, default=10, help="layers restored around each layer (default 10)")
    g.add_argument("--samples", type=int, default=10, help="noisy copies (default 10)")
    g.add_argument("--noise", type=float, default=3.0, help="noise = this x std of subject embeddings (default 3)")
    g.add_argument(
        "--answer",
        default="data",
        choices=("data", "greedy"),
        help="traced answer: first token of the ground truth (data) or the model's top token",
    )
    g.add_argument("--no-skip", action="store_true", help="trace requests the clean model gets wrong too")
    g.add_argument(
        "--heatmap",
        default=None,
        metavar="PNG",
        help="also trace every (token, layer) cell of the first proxy request and draw it",
    )
    g = p.add_argument_group("brute force")
    g.add_argument("--editor", default="r-rome", choices=editor_names())
    g.add_argument("--hparams", default=None, help="editor hyperparameter file (default: the preset)")
    g.add_argument("--identity-c", action="store_true", help="C = I (no second-moment statistics)")
    g.add_argument("--out", default=None, metavar="DIR", help="resumable results directory")
    g = p.add_argument_group("hybrid (also takes the LGA and brute-force options)")
    g.add_argument(
        "--shortlist",
        type=shortlist_arg,
        default=8,
        metavar="C",
        help="LGA's best kept layers that enter the halving (default 8), or 'all': every candidate layer, "
             "LGA not run (n0 1, cut short at --budget-per-layer trial edits per layer)",
    )
    g.add_argument(
        "--eta", type=int, default=2, metavar="K",
        help="each round keeps 1/K of the layers and multiplies the requests by K (default 2)",
    )
    g.add_argument(
        "--n0", type=int, default=None, metavar="N",
        help="requests each layer edits in the first round (default: the largest of 1-4 whose full schedule "
             "costs at most --budget-per-layer trial edits per candidate layer)",
    )
    g.add_argument(
        "--budget-per-layer", type=_positive_float, default=2.0, metavar="B",
        help="with --n0 unset, the trial edits per candidate layer at most (default 2: a tenth of brute force "
             "on 20 requests); a schedule that does not fit is cut short there",
    )
    g.add_argument(
        "--confidence", type=float, default=0.95, metavar="P", help="of the early stop's intervals (default 0.95)"
    )
    g.add_argument(
        "--min-stop-facts", type=int, default=8, metavar="N", help="no early stop before this many requests (default 8)"
    )
    g.add_argument(
        "--trial-score", default="accuracies", choices=("accuracies", "probabilities", "mixed"),
        help="what a trial edit is scored by: knowedit's accuracies (default), their probabilities (suite soft), "
             "or mixed (the new answer's probabilities, knowedit's locality)",
    )
    g.add_argument(
        "--paraphrases", type=int, default=0, metavar="K",
        help="score each trial edit's rephrase on up to K more paraphrases of the fact too: the data file's other "
             "question templates of its relation, filled with its subject (zsRE-style data; default 0)",
    )
    g.add_argument("--no-early-stop", action="store_true", help="halve until one layer is left")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the early stop's bootstrap (default 0)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from golden_fast.data import load, validate
    from golden_fast.locate import locate
    from golden_fast.models import load_model

    if args.n is not None and args.n < 1:
        raise CLIError("--n must be >= 1", code=2)
    requests = load(args.data, format=args.format, limit=args.n, offset=args.offset)
    if not requests:
        raise CLIError(f"no requests in {args.data} (offset {args.offset}, n {args.n})", code=2)
    t0 = time.perf_counter()
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    print(
        f"model {args.model} ({args.dtype}, {args.device}, loaded in {time.perf_counter() - t0:.1f} s); "
        f"{len(requests)} proxy request(s) from {args.data}"
    )
    progress = not args.no_progress
    if args.method == "lga":
        scores = locate(
            model,
            tok,
            requests,
            "lga",
            args.layers,
            theta=args.theta,
            variant=args.variant,
            loss_span=args.loss_span,
            loss_reduction=args.loss_reduction,
            old_answer=args.old_answer,
            tukey_k=args.tukey_k,
            top_k=args.top_k,
            batch_size=args.batch_size,
            checkpoint=args.checkpoint,
            progress=progress,
        )
    elif args.method == "cma":
        opts = dict(
            kind=args.kind,
            window=args.window,
            samples=args.samples,
            noise=args.noise,
            answer=args.answer,
            skip_wrong=not args.no_skip,
            top_k=args.top_k,
        )
        scores = locate(model, tok, requests, "cma", args.layers, progress=progress, **opts)
        if args.heatmap:
            from golden_fast.locate.causal_trace import CMAConfig, plot_heatmap, trace_heatmap

            tr = trace_heatmap(model, tok, requests[0], CMAConfig(**opts))
            print(
                f"heatmap: {plot_heatmap(tr, args.heatmap)} ({requests[0].ref}: clean {tr.high:.4f}, "
                f"corrupted {tr.low:.4f})"
            )
    else:
        hparams = args.hparams
        if args.identity_c:
            if hparams is not None:
                raise CLIError("--identity-c and --hparams: put mom2_adjustment: false in the file instead", code=2)
            hparams = {"mom2_adjustment": False}
        editor = {"method": args.editor, "hparams": hparams}
        if args.method == "hybrid":
            from golden_fast.locate.hybrid import TRIAL_SCORES

            suites, metric = TRIAL_SCORES[args.trial_score]
            if args.paraphrases < 0:
                raise CLIError("--paraphrases must be >= 0", code=2)
            # the templates are grouped over every valid record of the file, not only the proxy window
            source = validate(args.data, format=args.format)[0] if args.paraphrases else None
            scores = locate(
                model,
                tok,
                requests,
                "hybrid",
                args.layers,
                editor=editor,
                out=args.out,
                top_k=args.top_k,
                progress=progress,
                shortlist=args.shortlist,
                eta=args.eta,
                n0=args.n0,
                budget_per_layer=args.budget_per_layer,
                confidence=args.confidence,
                min_stop_facts=args.min_stop_facts,
                early_stop=not args.no_early_stop,
                seed=args.seed,
                suites=suites,
                metric=metric,
                paraphrases=args.paraphrases,
                paraphrase_source=source,
                theta=args.theta,
                variant=args.variant,
                loss_span=args.loss_span,
                loss_reduction=args.loss_reduction,
                old_answer=args.old_answer,
                tukey_k=args.tukey_k,
                batch_size=args.batch_size,
                checkpoint=args.checkpoint,
            )
        else:
            scores = locate(
                model,
                tok,
                requests,
                "brute",
                args.layers,
                editor=editor,
                out=args.out,
                top_k=args.top_k,
                progress=progress,
            )
    print(scores.summary())
    if args.method == "cma":
        print(
            f"  skipped {scores.extra['n_skipped']} of {scores.n_requests} request(s) (clean model wrong); "
            f"noise sigma {scores.extra['sigma']:.4g} ({scores.extra['noise_source']})"
        )
    if args.method == "brute":
        from golden_fast.locate.golden import Gap, GoldenReport

        rep = dict(scores.extra["golden"])
        rep["gap"] = {k: Gap(**v) for k, v in rep["gap"].items()}
        print(GoldenReport(**rep).table())
    if args.method == "hybrid":
        from golden_fast.locate.hybrid import rounds_table

        cost = scores.extra["cost"]
        if scores.extra["lga"] is None:
            print(f"  every candidate layer, no LGA: {scores.extra['shortlist']}")
        else:
            print(f"  shortlist (LGA, best first): {scores.extra['shortlist']}")
        para = scores.extra.get("paraphrases") or {}
        if para.get("added"):
            print(f"  template paraphrases: {para['added']} added to the rephrase of {para['facts']} proxy fact(s)")
        print(rounds_table(scores.extra["rounds"]))
        budget = cost.get("budget_edits")
        print(
            f"  cost: {cost['edits']} trial edit(s) (full schedule {cost['full_schedule_edits']}"
            + (f", budget {budget}" if budget is not None else "") + "), "
            f"{cost['seconds']:.1f} s (LGA {cost['lga_seconds']:.1f} s)"
            + ("; stopped early" if scores.extra["stopped_early"] else "")
            + ("; the budget ended it" if scores.extra.get("budget_spent") else "")
        )
    if args.plot:
        print(f"plot: {scores.plot(args.plot)}")
    if args.json:
        scores.to_json(args.json)
        print(f"scores: {args.json}")
    print(
        json.dumps(
            {
                "method": scores.method,
                "chosen": scores.chosen,
                "top_k": scores.top_k,
                "wall_time": round(scores.wall_time, 3),
                "n": scores.n_used,
            }
            | ({"edits": scores.extra["cost"]["edits"]} if args.method == "hybrid" else {})
        )
    )
    return 0
