"""Read benchmark files into `EditRequest`s, sample them, split them.

Formats (`FORMATS`), detected from the records' keys unless `format=` is given:

===================  ==================================================================
``counterfact``      EasyEdit's flat CounterFact: case_id, prompt, subject, target_new,
                     ground_truth, rephrase_prompt, locality_prompt, locality_ground_truth
``counterfact-rome`` ROME's CounterFact: case_id, requested_rewrite{prompt "{}", subject,
                     target_new{str}, target_true{str}}, paraphrase_prompts,
                     neighborhood_prompts, generation_prompts (optional)
``zsre``             MEND's zsRE: subject, src, rephrase, alt, answers[], loc, loc_ans
``knowedit``         KnowEdit: subject, prompt, target_new, ground_truth (optional; str or
                     alias lists), rephrase (optional; str or list), portability/locality
                     (optional; {name: [{prompt, ground_truth}]})
``known1000``        ROME's known_1000 (causal tracing): known_id, subject, attribute,
                     prompt; target_new is None, ground_truth = attribute
``golden-fast``      our own `EditRequest.to_dict` records
===================  ==================================================================

Files are a JSON list or JSON Lines. Strictness is the point: every defect in a record
raises `EditRequestError` naming the record's index in the file, its case_id and the
field *as spelled in the file* (``'requested_rewrite.subject'``, ``'alt'``), never a
KeyError from deep inside an editor, and no record is ever dropped without a word.
`validate` collects every defect instead of stopping at the first.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from golden_fast.data.builtin import builtin_records
from golden_fast.data.request import EditRequest, EditRequestError, Probe

__all__ = [
    "FORMATS",
    "describe_file",
    "detect_format",
    "from_records",
    "load",
    "read_records",
    "resolve_format",
    "sample",
    "split",
    "validate",
    "validate_records",
]

FORMATS: tuple[str, ...] = ("counterfact", "counterfact-rome", "zsre", "knowedit", "known1000", "golden-fast")

# spellings people actually type, after lower-casing and "_" -> "-"
_ALIASES = {
    "counterfact-flat": "counterfact",
    "easyedit": "counterfact",
    "rome": "counterfact-rome",
    "mend": "zsre",
    "zsre-mend": "zsre",
    "known-1000": "known1000",
    "known": "known1000",
    "goldenfast": "golden-fast",
    "golden": "golden-fast",
}

# records inspected to detect a format: enough to outvote a few broken ones, cheap on 10k files
_DETECT_SAMPLE = 50

T = TypeVar("T")


# ---- reading files ---------------------------------------------------------------------


def read_records(path: str | Path) -> list[Any]:
    """The raw records of a JSON-list or JSON-Lines file, unvalidated.

    A file holding a single JSON object is read as one record. Malformed JSON raises
    ValueError naming the file (and the line, for JSON Lines).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped[0] == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        return list(data)
    try:  # one (possibly pretty-printed) object; JSON Lines fails here with "Extra data"
        return [json.loads(text)]
    except json.JSONDecodeError:
        pass
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"{path}: line {lineno}: not valid JSON (expected a JSON list or JSON Lines): {exc}"
            ) from None
    return records


# ---- formats ---------------------------------------------------------------------------


def resolve_format(format: str | None) -> str | None:
    """Canonical name of a format (None stays None: detect). Unknown names raise a
    ValueError listing the known ones."""
    if format is None:
        return None
    key = str(format).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown data format {format!r}; known formats: {', '.join(FORMATS)}")
    return key


def _guess(keys: set) -> str | None:
    """The format a single record's keys point to, or None. Order matters: the most
    specific signatures first (ROME also has generation_prompts; KnowEdit is the
    catch-all for {prompt, subject, target_new})."""
    if "requested_rewrite" in keys:
        return "counterfact-rome"
    if "known_id" in keys or {"attribute", "template"} <= keys:
        return "known1000"
    if "src" in keys and ({"alt", "loc", "loc_ans"} & keys):
        return "zsre"
    if "rephrase_prompts" in keys or "generation_prompts" in keys:
        return "golden-fast"
    if {"locality_prompt", "locality_ground_truth", "rephrase_prompt"} & keys:
        return "counterfact"
    if "portability" in keys or "locality" in keys or {"prompt", "subject", "target_new"} <= keys:
        return "knowedit"
    return None


def detect_format(records: Sequence[Any]) -> str:
    """The format of `records`, by majority vote over the first few records' keys (so
    one broken record at the top does not mislead it). Raises ValueError when nothing
    matches, listing the keys seen and the known formats."""
    votes: Counter[str] = Counter()
    seen: set[str] = set()
    for rec in records[:_DETECT_SAMPLE]:
        if isinstance(rec, Mapping):
            keys = {str(k) for k in rec}
            seen |= keys
            guess = _guess(keys)
            if guess:
                votes[guess] += 1
    if not votes:
        raise ValueError(
            f"cannot detect the data format from keys {sorted(seen)[:12]}; "
            f"pass format=; known formats: {', '.join(FORMATS)}"
        )
    return votes.most_common(1)[0][0]


# ---- per-record conversion -------------------------------------------------------------

_MISSING = object()


class _Rec:
    """Typed access to one raw record; every failure is an EditRequestError that names
    the record and the field path as spelled in the source file."""

    def __init__(self, raw: Any, index: int, id_key: str | None):
        self.index = index
        self.case_id: str | int | None = None
        if not isinstance(raw, Mapping):
            raise EditRequestError(f"expected a JSON object, got {type(raw).__name__}", index=index)
        self.raw = raw
        if id_key is not None:
            cid = raw.get(id_key)
            if (isinstance(cid, int) and not isinstance(cid, bool)) or (isinstance(cid, str) and cid.strip()):
                self.case_id = cid

    def fail(self, path: str, reason: str) -> EditRequestError:
        return EditRequestError(reason, field=path, index=self.index, case_id=self.case_id)

    def get(
        self, path: str, *, obj: Mapping | None = None, key: str | None = None, required: bool = True
    ) -> Any:
        """The value at `key` of `obj` (default: the record's top-level key `path`);
        `path` is the full dotted name used in errors."""
        node: Any = self.raw if obj is None else obj
        key = path if key is None else key
        if key not in node:
            if required:
                raise self.fail(path, "missing")
            return _MISSING
        return node[key]

    def obj(self, path: str, *, parent: Mapping | None = None, key: str | None = None) -> Mapping:
        value = self.get(path, obj=parent, key=key)
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected an object, got {_describe(value)}")
        return value

    def str(
        self, path: str, *, parent: Mapping | None = None, key: str | None = None, required: bool = True
    ) -> Any:
        value = self.get(path, obj=parent, key=key, required=required)
        if value is _MISSING:
            return None
        return self.check_str(value, path)

    def check_str(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {_describe(value)}")
        if not value.strip():
            raise self.fail(path, f"empty or blank string {value!r}")
        return value

    def str_list(self, path: str, *, required: bool = True, allow_str: bool = False) -> tuple[str, ...]:
        value = self.get(path, required=required)
        if value is _MISSING or (value is None and not required):
            return ()
        if allow_str and isinstance(value, str):
            return (self.check_str(value, path),)
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list of strings, got {_describe(value)}")
        return tuple(self.check_str(v, f"{path}[{i}]") for i, v in enumerate(value))

    def case_id_of(self, key: str) -> str | int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.fail(key, f"expected an int or a string, got {_describe(value)}")
        return self.check_str(value, key) if isinstance(value, str) else value

    def answers(self, value: Any, path: str) -> tuple[str, ...]:
        """KnowEdit answers: "a", ["a", "b"] (aliases) or [["a", "b"], ["c"]] (several
        answers, each with aliases). All are flattened into one alias tuple, first =
        canonical, duplicates dropped: portability counts a hit on any of them."""
        if isinstance(value, str):
            return (self.check_str(value, path).strip(),)
        if not isinstance(value, list):
            raise self.fail(path, f"expected a string or a list of aliases, got {_describe(value)}")
        if not value:
            raise self.fail(path, "empty list: no answer")
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, list):
                if not item:
                    raise self.fail(f"{path}[{i}]", "empty list: no answer")
                out += [self.check_str(a, f"{path}[{i}][{j}]").strip() for j, a in enumerate(item)]
            else:
                out.append(self.check_str(item, f"{path}[{i}]").strip())
        return tuple(dict.fromkeys(out))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:56] + '...'}"


def _build(rec: _Rec, names: Mapping[str, str], **kwargs: Any) -> EditRequest:
    """EditRequest(**kwargs), its errors renamed to the source file's field names."""
    try:
        return EditRequest(index=rec.index, **kwargs)
    except EditRequestError as exc:
        raise exc.located(
            field=names.get(exc.field or "", exc.field), index=rec.index, case_id=rec.case_id
        ) from None


def _counterfact(raw: Any, index: int) -> EditRequest:
    rec = _Rec(raw, index, "case_id")
    case_id = rec.case_id_of("case_id")
    return _build(
        rec,
        {"rephrase_prompts[0]": "rephrase_prompt"},
        case_id=case_id,
        prompt=rec.str("prompt"),
        subject=rec.str("subject"),
        target_new=rec.str("target_new"),
        ground_truth=rec.str("ground_truth"),
        rephrase_prompts=(rec.str("rephrase_prompt"),),
        locality=(Probe(rec.str("locality_prompt"), (rec.str("locality_ground_truth"),), "neighborhood"),),
    )


def _counterfact_rome(raw: Any, index: int) -> EditRequest:
    rec = _Rec(raw, index, "case_id")
    case_id = rec.case_id_of("case_id")
    rw = rec.obj("requested_rewrite")
    prompt = rec.str("requested_rewrite.prompt", parent=rw, key="prompt")
    if "{}" not in prompt:  # ROME formats it with the subject; literal text here is a broken record
        raise rec.fail("requested_rewrite.prompt", f"expected a '{{}}' template, got {prompt!r}")
    subject = rec.str("requested_rewrite.subject", parent=rw, key="subject")
    targets = {}
    for key in ("target_new", "target_true"):
        node = rec.obj(f"requested_rewrite.{key}", parent=rw, key=key)
        targets[key] = rec.str(f"requested_rewrite.{key}.str", parent=node, key="str")
    true = targets["target_true"]
    paraphrases = rec.str_list("paraphrase_prompts")
    neighbours = rec.str_list("neighborhood_prompts")
    generations = rec.str_list("generation_prompts", required=False)
    names = {
        "prompt": "requested_rewrite.prompt",
        "subject": "requested_rewrite.subject",
        "target_new": "requested_rewrite.target_new.str",
        "ground_truth": "requested_rewrite.target_true.str",
    }
    return _build(
        rec,
        names,
        case_id=case_id,
        prompt=prompt,
        subject=subject,
        target_new=targets["target_new"],
        ground_truth=true,
        rephrase_prompts=paraphrases,
        # a neighbour shares the relation and the true object: it must still say target_true
        locality=tuple(Probe(p, (true,), "neighborhood") for p in neighbours),
        generation_prompts=generations,
    )


def _zsre(raw: Any, index: int) -> EditRequest:
    rec = _Rec(raw, index, "case_id")
    answers = rec.str_list("answers")
    if not answers:
        raise rec.fail("answers", "empty list: no ground truth")
    return _build(
        rec,
        {
            "prompt": "src",
            "target_new": "alt",
            "ground_truth": "answers[0]",
            "rephrase_prompts[0]": "rephrase",
        },
        prompt=rec.str("src"),
        subject=rec.str("subject"),
        target_new=rec.str("alt"),
        ground_truth=answers[0],
        rephrase_prompts=(rec.str("rephrase"),),
        # the "nq question: " prefix is kept, as MEND and EasyEdit score it
        locality=(Probe(rec.str("loc"), (rec.str("loc_ans"),), "nq"),),
    )


def _knowedit_probes(rec: _Rec, key: str) -> tuple[Probe, ...]:
    groups = rec.get(key, required=False)
    if groups is _MISSING or groups is None:
        return ()
    if not isinstance(groups, Mapping):
        raise rec.fail(key, f"expected an object {{name: [probes]}}, got {_describe(groups)}")
    probes = []
    for name, entries in groups.items():
        base = f"{key}.{name}"
        if isinstance(entries, Mapping):  # a lone probe instead of a one-element list
            entries = [entries]
        if not isinstance(entries, list):
            raise rec.fail(base, f"expected a list of {{prompt, ground_truth}}, got {_describe(entries)}")
        for i, entry in enumerate(entries):
            path = f"{base}[{i}]"
            if not isinstance(entry, Mapping):
                raise rec.fail(path, f"expected an object {{prompt, ground_truth}}, got {_describe(entry)}")
            prompt = rec.str(f"{path}.prompt", parent=entry, key="prompt")
            value = rec.get(f"{path}.ground_truth", obj=entry, key="ground_truth")
            probes.append(Probe(prompt, rec.answers(value, f"{path}.ground_truth"), str(name)))
    return tuple(probes)


def _knowedit(raw: Any, index: int) -> EditRequest:
    rec = _Rec(raw, index, "case_id")
    case_id = rec.case_id_of("case_id") if rec.raw.get("case_id") is not None else None
    truth = rec.get("ground_truth", required=False)
    ground_truth = None if truth is _MISSING or truth is None else rec.answers(truth, "ground_truth")[0]
    return _build(
        rec,
        {},
        case_id=case_id,
        prompt=rec.str("prompt"),
        subject=rec.str("subject"),
        target_new=rec.str("target_new"),
        ground_truth=ground_truth,
        rephrase_prompts=rec.str_list("rephrase", required=False, allow_str=True),
        portability=_knowedit_probes(rec, "portability"),
        locality=_knowedit_probes(rec, "locality"),
    )


def _known1000(raw: Any, index: int) -> EditRequest:
    rec = _Rec(raw, index, "known_id")
    # `prompt` (not `template`): causal tracing reads the full prompt, whose last
    # words ("... in the continent of") the template lacks in 478 of 1,209 records
    return _build(
        rec,
        {"ground_truth": "attribute", "case_id": "known_id"},
        case_id=rec.case_id_of("known_id"),
        prompt=rec.str("prompt"),
        subject=rec.str("subject"),
        target_new=None,
        ground_truth=rec.str("attribute"),
    )


def _golden_fast(raw: Any, index: int) -> EditRequest:
    return EditRequest.from_dict(raw, index=index)


_CONVERTERS: dict[str, Callable[[Any, int], EditRequest]] = {
    "counterfact": _counterfact,
    "counterfact-rome": _counterfact_rome,
    "zsre": _zsre,
    "knowedit": _knowedit,
    "known1000": _known1000,
    "golden-fast": _golden_fast,
}


# ---- public loading API ----------------------------------------------------------------


def _window(records: Sequence[Any], limit: int | None, offset: int) -> Sequence[Any]:
    for name, value in (("offset", offset), ("limit", limit)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return records[offset : None if limit is None else offset + limit]


def _convert_all(records: Sequence[Any], format: str | None, start: int, collect: bool):
    fmt = resolve_format(format) or (detect_format(records) if records else "golden-fast")
    convert = _CONVERTERS[fmt]
    ok: list[EditRequest] = []
    errors: list[EditRequestError] = []
    for i, raw in enumerate(records, start):
        try:
            ok.append(convert(raw, i))
        except EditRequestError as exc:
            if not collect:
                raise
            errors.append(exc)
    return fmt, ok, errors


def from_records(records: Sequence[Any], format: str | None = None, *, start: int = 0) -> list[EditRequest]:
    """Convert in-memory raw records (as `json.load` gives them). `start` is the index
    of the first record, so errors point into the original file. Stops at the first
    bad record with EditRequestError."""
    return _convert_all(records, format, start, collect=False)[1]


def validate_records(
    records: Sequence[Any], format: str | None = None, *, start: int = 0
) -> tuple[list[EditRequest], list[EditRequestError]]:
    """Like `from_records`, but collects every bad record instead of stopping."""
    _, ok, errors = _convert_all(records, format, start, collect=True)
    return ok, errors


def _is_builtin(path: str | Path) -> bool:
    return str(path) == "builtin" and not Path(path).exists()


def _read(path: str | Path, format: str | None) -> tuple[list[Any], str | None]:
    """Raw records and the requested format; the word "builtin" names our fact set."""
    if _is_builtin(path):
        fmt = resolve_format(format)
        if fmt not in (None, "golden-fast"):
            raise ValueError(f"the built-in facts are in the golden-fast format, not {fmt!r}")
        return builtin_records(), "golden-fast"
    return read_records(path), format


def _prepare(
    path: str | Path, format: str | None, limit: int | None, offset: int
) -> tuple[str | None, int, Sequence[Any]]:
    """(format, records in the file, the offset/limit window); format is None only
    for an empty file."""
    records, format = _read(path, format)
    fmt = resolve_format(format) or (detect_format(records) if records else None)
    return fmt, len(records), _window(records, limit, offset)


def load(
    path: str | Path, format: str | None = None, limit: int | None = None, offset: int = 0
) -> list[EditRequest]:
    """Load edit requests from a JSON/JSONL file.

    Args:
        path: the file; the word ``"builtin"`` (when no such file exists) loads the
            built-in fact set.
        format: one of `FORMATS` (aliases like "known_1000" accepted); None detects it
            from the records' keys.
        limit: at most this many records, after `offset`.
        offset: skip this many records first. `EditRequest.index` stays the position
            in the file, so errors and reports point at the right record.

    Raises:
        EditRequestError: at the first malformed record in the window (use `validate`
            to see them all).
        ValueError: unknown format, undetectable format, malformed JSON.
    """
    fmt, _, window = _prepare(path, format, limit, offset)
    return from_records(window, fmt, start=offset)


def validate(
    path: str | Path, format: str | None = None, limit: int | None = None, offset: int = 0
) -> tuple[list[EditRequest], list[EditRequestError]]:
    """Load like `load`, but return ``(valid requests, errors)`` with one error per bad
    record instead of raising at the first: the CLI's `data validate` reports all.

    This is also the explicit way to use the valid part of a file with known defects:
    MEND's zsre_mend_train-1k.json has 17 records whose `alt` equals the answer and 2
    with an empty `alt`, so `load` refuses it while ``validate(...)[0]`` gives the 981
    usable edits (and the 19 errors, to report)."""
    fmt, _, window = _prepare(path, format, limit, offset)
    return validate_records(window, fmt, start=offset)


def describe_file(
    path: str | Path, format: str | None = None, limit: int | None = None, offset: int = 0
) -> tuple[str, int, list[EditRequest], list[EditRequestError]]:
    """``(format, records in file, valid, errors)``: `validate` plus what the CLI's
    `data inspect` prints about the file itself. An empty file reports "empty"."""
    fmt, total, window = _prepare(path, format, limit, offset)
    ok, errors = validate_records(window, fmt or "golden-fast", start=offset)
    return fmt or "empty", total, ok, errors


# ---- sampling --------------------------------------------------------------------------


def sample(requests: Sequence[T], n: int, seed: int = 0) -> list[T]:
    """`n` distinct items drawn without replacement, in their original order.

    Deterministic: a private `random.Random(seed)`, so the same seed gives the same
    sample whatever the global RNG state (experiments must be re-runnable).
    Raises ValueError when n is negative or exceeds len(requests).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if n > len(requests):
        raise ValueError(f"cannot sample {n} of {len(requests)} requests without replacement")
    picked = sorted(random.Random(seed).sample(range(len(requests)), n))
    return [requests[i] for i in picked]


def split(requests: Sequence[T], proxy_fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """``(proxy, test)``: a deterministic, disjoint partition covering every item.

    The golden layer is searched on the proxy part and judged on the test part (FORMULAS.md,
    section "Brute force and the golden layer"). round(proxy_fraction * n) items go to proxy,
    clamped so that neither part is empty when n >= 2. Both keep the original order.
    """
    if (
        not isinstance(proxy_fraction, (int, float))
        or isinstance(proxy_fraction, bool)
        or not 0 < proxy_fraction < 1
    ):
        raise ValueError(f"proxy_fraction must lie strictly between 0 and 1, got {proxy_fraction!r}")
    n = len(requests)
    if n < 2:
        raise ValueError(f"need at least 2 requests to split into proxy and test, got {n}")
    k = min(max(round(proxy_fraction * n), 1), n - 1)
    proxy_idx = set(random.Random(seed).sample(range(n), k))
    proxy = [r for i, r in enumerate(requests) if i in proxy_idx]
    test = [r for i, r in enumerate(requests) if i not in proxy_idx]
    return proxy, test
