"""`golden-fast data`: check and look into edit-data files before spending GPU time on them.

    golden-fast data validate FILE [--format F]
    golden-fast data inspect  FILE [--format F] [--limit N] [--show K]

FILE may be the word ``builtin`` (the packaged fact set). `validate` prints every
invalid record, one per line, and exits 2 when there is any, so it can gate a script.
"""

from __future__ import annotations

import argparse
from collections import Counter

from golden_fast.data import FORMATS, EditRequest, describe_file

EXIT_INVALID = 2  # same code as bad input in golden_fast.cli

_FILE_HELP = "a JSON or JSON-Lines data file, or 'builtin' for the built-in fact set"
_FORMAT_HELP = f"data format (default: detected from the records' keys): {', '.join(FORMATS)}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data` and its `validate` / `inspect` subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "data",
        help="validate or inspect an edit-data file",
        description="Validate or inspect edit-data files "
        "(CounterFact, zsRE, KnowEdit, known_1000, golden-fast).",
    )
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    val = sub.add_parser(
        "validate",
        help="check every record; list the invalid ones",
        description="Check every record of FILE. Prints counts, then each invalid record on its own line; "
        "exit status 0 when all are valid, 2 when any is invalid.",
    )
    val.add_argument("file", metavar="FILE", help=_FILE_HELP)
    val.add_argument("--format", "-f", metavar="F", default=None, help=_FORMAT_HELP)
    val.set_defaults(func=_validate)

    ins = sub.add_parser(
        "inspect",
        help="summarise a file: format, counts, fields, first records",
        description="Print the detected format, the record count, how many records carry each field "
        "(rephrase, locality, portability, ...) and the first K records.",
    )
    ins.add_argument("file", metavar="FILE", help=_FILE_HELP)
    ins.add_argument("--format", "-f", metavar="F", default=None, help=_FORMAT_HELP)
    ins.add_argument(
        "--limit",
        "-n",
        metavar="N",
        type=_non_negative,
        default=None,
        help="look at the first N records only",
    )
    ins.add_argument(
        "--show",
        "-k",
        metavar="K",
        type=_non_negative,
        default=3,
        help="print the first K records (default 3)",
    )
    ins.set_defaults(func=_inspect)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def _format_line(fmt: str, given: str | None) -> str:
    return f"{fmt} (given)" if given else f"{fmt} (detected)"


def _validate(args: argparse.Namespace) -> int:
    fmt, total, ok, errors = describe_file(args.file, args.format)
    print(
        f"{args.file}: format {_format_line(fmt, args.format)}, {total} records: "
        f"{len(ok)} valid, {len(errors)} invalid"
    )
    for err in errors:
        print(f"  invalid: {err}")
    return EXIT_INVALID if errors else 0


def _clip(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _field_counts(requests: list[EditRequest]) -> list[tuple[str, int, str]]:
    """(field, records that have it, detail) for the inspect table."""

    def probes(attr: str) -> tuple[int, str]:
        have = sum(1 for r in requests if getattr(r, attr))
        names = Counter(p.name or "(unnamed)" for r in requests for p in getattr(r, attr))
        total = sum(names.values())
        detail = f"{total} probes" + (
            f": {', '.join(f'{k} {v}' for k, v in names.most_common())}" if names else ""
        )
        return have, detail

    def prompts(attr: str) -> tuple[int, str]:
        return sum(
            1 for r in requests if getattr(r, attr)
        ), f"{sum(len(getattr(r, attr)) for r in requests)} prompts"

    rows = [
        ("target_new", sum(r.target_new is not None for r in requests), ""),
        ("ground_truth", sum(r.ground_truth is not None for r in requests), ""),
        ("case_id", sum(r.case_id is not None for r in requests), ""),
        ("template prompt ({})", sum(r.is_template for r in requests), "others are literal text"),
        ("rephrase_prompts", *prompts("rephrase_prompts")),
        ("locality", *probes("locality")),
        ("portability", *probes("portability")),
        ("generation_prompts", *prompts("generation_prompts")),
    ]
    return rows


def _describe(r: EditRequest) -> list[str]:
    head = r.ref
    text = r.template.replace("{}", f"[{r.subject}]")
    if r.target_new is None:
        lines = [f"{head}: {_clip(text)} -> {r.ground_truth} (trace only)"]
    else:
        was = f" (was {r.ground_truth})" if r.ground_truth is not None else ""
        lines = [f"{head}: {_clip(text)} -> {r.target_new}{was}"]
    lines += [f"    rephrase: {_clip(p)}" for p in r.rephrase_prompts[:2]]
    for kind in ("locality", "portability"):
        for p in getattr(r, kind)[:2]:
            tag = f"{kind}[{p.name}]" if p.name else kind
            alias = f" (+{len(p.answers) - 1} aliases)" if len(p.answers) > 1 else ""
            lines.append(f"    {tag}: {_clip(p.prompt)} -> {p.answer}{alias}")
    lines += [f"    generation: {_clip(p)}" for p in r.generation_prompts[:1]]
    return lines


def _inspect(args: argparse.Namespace) -> int:
    fmt, total, ok, errors = describe_file(args.file, args.format, limit=args.limit)
    looked = len(ok) + len(errors)
    print(f"file:    {args.file}")
    print(f"format:  {_format_line(fmt, args.format)}")
    scope = f" (first {looked} inspected)" if looked < total else ""
    print(f"records: {total}{scope}: {len(ok)} valid, {len(errors)} invalid")
    if errors:
        for err in errors[:5]:
            print(f"  invalid: {err}")
        if len(errors) > 5:
            print(f"  ... {len(errors) - 5} more (run `golden-fast data validate` for all)")
    print("fields (records that have it):")
    width = max(len(name) for name, _, _ in _field_counts([]))
    for name, count, detail in _field_counts(ok):
        print(f"  {name:<{width}}  {count:>7}" + (f"  {detail}" if detail else ""))
    if args.show and ok:
        print(f"first {min(args.show, len(ok))} valid records:")
        for r in ok[: args.show]:
            for line in _describe(r):
                print(f"  {line}")
    return 0
