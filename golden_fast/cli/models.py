"""`golden-fast models list | fetch NAME | info NAME`."""

from __future__ import annotations

import argparse
import json

from golden_fast.cli import CLIError, add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, fetch and describe models", description=__doc__)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    p_list = msub.add_parser("list", help="the built-in model names and whether they are cached")
    p_list.set_defaults(func=_list)

    p_fetch = msub.add_parser("fetch", help="download and convert a zoo model into the cache")
    p_fetch.add_argument("name")
    p_fetch.add_argument("--force", action="store_true", help="convert again even if cached")
    add_threads_argument(p_fetch)
    p_fetch.set_defaults(func=_fetch)

    p_info = msub.add_parser("info", help="layers, down-projection shapes and parameters of a model")
    p_info.add_argument("name", help="zoo name, tiny-* name, local folder or Hugging Face id")
    p_info.add_argument("--json", action="store_true", help="print JSON instead of text")
    p_info.set_defaults(func=_info)


def _list(args: argparse.Namespace) -> int:
    from golden_fast.models import TINY_NAMES, ZOO, cache_dir, home, is_cached

    print(f"cache: {home()}")
    for name, entry in ZOO.items():
        state = f"cached at {cache_dir(name)}" if is_cached(name) else "not fetched"
        print(f"  {name:14s} {entry.description}  [{state}]")
    for name in TINY_NAMES:
        print(f"  {name:14s} tiny random model for tests, built in memory")
    print("  any Hugging Face id or local directory also works (from_pretrained)")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from golden_fast.models import ZOO, fetch

    if args.name not in ZOO:
        raise CLIError(f"unknown zoo model {args.name!r}; zoo models: {', '.join(ZOO)}", code=2)
    print(fetch(args.name, force=args.force))
    return 0


def _info(args: argparse.Namespace) -> int:
    from golden_fast.models import get_adapter, load_model

    model, tok = load_model(args.name)
    info = get_adapter(model).describe()
    info["vocab_size"] = len(tok)
    info["name"] = args.name
    if args.json:
        print(json.dumps(info, default=str))
    else:
        for k, v in info.items():
            print(f"{k:28s} {v}")
    return 0
