"""Edit requests: one fact to rewrite, plus the probes that judge the rewrite (FORMULAS.md,
section "Notation").

Every loader, editor, locator and metric speaks `EditRequest`, so all validation
happens here, once, at construction: a request that exists is well formed. A bad one
raises `EditRequestError`, a `ValueError` that names the record (its position in the
source file and its case_id) and the field, because with 20,000 CounterFact cases
"subject not found" alone is useless.

Conventions:
- `prompt` is either a template with exactly one ``{}`` where the subject goes
  (CounterFact ROME, our built-in facts) or literal text that contains the subject
  (CounterFact flat, zsRE, KnowEdit). `.text` and `.template` give both views.
- Targets and answers are scored as ``text + " " + target`` (the leading space belongs
  to the target tokens), so leading/trailing whitespace of `target_new`,
  `ground_truth` and probe answers is stripped here; otherwise a dataset that stores
  " Paris" would be scored with two spaces.
- Sequences are tuples (the dataclasses are frozen and hashable); lists are accepted
  and converted, so `EditRequest(..., rephrase_prompts=[...])` works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EditRequest", "EditRequestError", "Probe"]

# the one placeholder a template may hold
_SLOT = "{}"


class EditRequestError(ValueError):
    """A malformed edit request, located: which record, which case, which field.

    Attributes:
        reason: what is wrong, without the location.
        index: position of the record in its source file/list, or None.
        case_id: the record's case_id (or known_id), or None.
        field: dotted path of the offending field in the *source* record
            (e.g. ``'requested_rewrite.subject'``, ``'locality[0].answers'``), or None
            when the record as a whole is wrong (e.g. not a JSON object).
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        index: int | None = None,
        case_id: str | int | None = None,
    ) -> None:
        self.reason = reason
        self.field = field
        self.index = index
        self.case_id = case_id
        super().__init__(str(self))

    def __str__(self) -> str:
        where = record_ref(self.index, self.case_id)
        if self.field:
            return f"{where}: field {self.field!r}: {self.reason}"
        return f"{where}: {self.reason}"

    def __reduce__(self):  # keyword-only __init__: keep pickling (multiprocessing) working
        return (_rebuild_error, (self.reason, self.field, self.index, self.case_id))

    def located(
        self,
        *,
        index: int | None = None,
        case_id: str | int | None = None,
        field: str | None = None,
        prefix: str | None = None,
    ) -> EditRequestError:
        """A copy with the location filled in: loaders know the record index and the
        source field name that the dataclass cannot know. Given values win over the
        stored ones; `prefix` is prepended to the field path (``prefix.field``)."""
        f = field if field is not None else self.field
        if prefix:
            f = prefix if not f else (f"{prefix}{f}" if f.startswith("[") else f"{prefix}.{f}")
        return EditRequestError(
            self.reason,
            field=f,
            index=index if index is not None else self.index,
            case_id=case_id if case_id is not None else self.case_id,
        )


def _rebuild_error(reason, field, index, case_id) -> EditRequestError:
    return EditRequestError(reason, field=field, index=index, case_id=case_id)


def record_ref(index: int | None, case_id: str | int | None) -> str:
    """Human name of a record: ``"record 12 (case_id 4031)"``, ``"record 12"``,
    ``"request (case_id 4031)"`` or ``"request"``."""
    head = f"record {index}" if index is not None else "request"
    return f"{head} (case_id {case_id})" if case_id is not None else head


def _short(value: Any, limit: int = 80) -> str:
    """repr() clipped, so one bad 2,000-character prompt does not flood the terminal."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_str(value: Any, name: str, *, strip: bool = False) -> str:
    """A non-empty, non-blank str (optionally stripped), else EditRequestError(field=name)."""
    if not isinstance(value, str):
        raise EditRequestError(f"expected a string, got {_type_name(value)} {_short(value)}", field=name)
    if not value.strip():
        raise EditRequestError(f"empty or blank string {_short(value)}", field=name)
    return value.strip() if strip else value


def _check_str_tuple(value: Any, name: str, *, strip: bool = False) -> tuple[str, ...]:
    """A tuple/list of non-empty strings, returned as a tuple. A bare string is refused:
    iterating it would silently give one prompt per character."""
    if not isinstance(value, (tuple, list)):
        raise EditRequestError(
            f"expected a list of strings, got {_type_name(value)} {_short(value)}", field=name
        )
    return tuple(_check_str(v, f"{name}[{i}]", strip=strip) for i, v in enumerate(value))


def _check_case_id(value: Any, name: str = "case_id") -> str | int | None:
    # bool is an int subclass; True as a case_id is always a bug upstream
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        return _check_str(value, name)
    raise EditRequestError(
        f"expected an int, a string or null, got {_type_name(value)} {_short(value)}", field=name
    )


@dataclass(frozen=True)
class Probe:
    """A prompt with its expected answer, to measure locality, portability or
    neighbourhood preservation.

    Args:
        prompt: literal text, completed by the answer (scored as prompt + " " + answer).
        answers: aliases of the answer, first = canonical; non-empty, each stripped.
        name: category, e.g. KnowEdit's ``"Relation_Specificity"``, ``"neighborhood"``
            for CounterFact, ``"nq"`` for zsRE; ``""`` when the source gives none.
    """

    prompt: str
    answers: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        _check_str(self.prompt, "prompt")
        answers = self.answers
        if isinstance(answers, str):  # a single answer is a common, harmless shorthand
            answers = (_check_str(answers, "answers", strip=True),)
        answers = _check_str_tuple(answers, "answers", strip=True)
        if not answers:
            raise EditRequestError("no answer given (need at least one alias)", field="answers")
        object.__setattr__(self, "answers", answers)
        if not isinstance(self.name, str):
            raise EditRequestError(f"expected a string, got {_type_name(self.name)}", field="name")

    @property
    def answer(self) -> str:
        """The canonical answer (first alias)."""
        return self.answers[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `Probe.from_dict` inverts it."""
        return {"prompt": self.prompt, "answers": list(self.answers), "name": self.name}

    @classmethod
    def from_dict(cls, d: Any) -> Probe:
        """Inverse of `to_dict`; any defect raises EditRequestError naming the field."""
        if not isinstance(d, Mapping):
            raise EditRequestError(f"expected an object with prompt/answers, got {_type_name(d)} {_short(d)}")
        unknown = sorted(set(d) - {"prompt", "answers", "name"})
        if unknown:
            raise EditRequestError(f"unknown key(s) {unknown}", field=str(unknown[0]))
        for key in ("prompt", "answers"):
            if key not in d:
                raise EditRequestError("missing", field=key)
        return cls(d["prompt"], d["answers"], d.get("name", ""))


def _check_probes(value: Any, name: str) -> tuple[Probe, ...]:
    if not isinstance(value, (tuple, list)):
        raise EditRequestError(
            f"expected a list of probes, got {_type_name(value)} {_short(value)}", field=name
        )
    for i, p in enumerate(value):
        if not isinstance(p, Probe):
            raise EditRequestError(f"expected a Probe, got {_type_name(p)} {_short(p)}", field=f"{name}[{i}]")
    return tuple(value)


# the fields in to_dict order; `from_dict` accepts exactly these keys
_FIELDS = (
    "prompt",
    "subject",
    "target_new",
    "ground_truth",
    "rephrase_prompts",
    "locality",
    "portability",
    "generation_prompts",
    "case_id",
    "index",
)


@dataclass(frozen=True)
class EditRequest:
    """One fact to rewrite: "`subject` `relation` -> `target_new`" (was `ground_truth`).

    Args:
        prompt: a template with exactly one ``{}`` for the subject, or literal text
            that contains the subject (its *last* occurrence is the edited one).
        subject: the entity whose fact changes; its last token is where editors act.
        target_new: the new answer; None only for trace-only facts (known_1000).
            Stripped, since it is scored as ``text + " " + target_new``.
        ground_truth: the old (true) answer, if known; stripped likewise.
        rephrase_prompts: paraphrases of the prompt (literal text), for generalisation.
        locality: probes about *other* facts, which the edit must not change.
        portability: probes about consequences of the edit (one hop away).
        generation_prompts: free-generation prompts for fluency (CounterFact ROME).
        case_id: the dataset's own id, if it has one.
        index: position in the source file or list, so errors and reports can point at it.

    Raises:
        EditRequestError: on any malformed field (see the module docstring).
    """

    prompt: str
    subject: str
    target_new: str | None
    ground_truth: str | None = None
    rephrase_prompts: tuple[str, ...] = ()
    locality: tuple[Probe, ...] = ()
    portability: tuple[Probe, ...] = ()
    generation_prompts: tuple[str, ...] = ()
    case_id: str | int | None = None
    index: int | None = None

    def __post_init__(self) -> None:
        try:
            self._validate()
        except EditRequestError as exc:
            # locate with whatever id we have; the case_id itself may be the bad field
            case_id = self.case_id if _valid_case_id(self.case_id) else None
            index = self.index if _valid_index(self.index) else None
            raise exc.located(index=index, case_id=case_id) from None

    def _validate(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # frozen dataclass
        # ids first, so the errors below can name the record
        set_("case_id", _check_case_id(self.case_id))
        if self.index is not None and not _valid_index(self.index):
            raise EditRequestError(
                f"expected a non-negative int or null, got {_short(self.index)}", field="index"
            )

        prompt = _check_str(self.prompt, "prompt")
        subject = _check_str(self.subject, "subject")
        slots = prompt.count(_SLOT)
        if slots > 1:
            raise EditRequestError(
                f"{slots} '{{}}' slots in prompt {_short(prompt)}; a template has one", field="prompt"
            )
        if slots == 0 and subject not in prompt:
            raise EditRequestError(
                f"{_short(subject)} does not occur in prompt {_short(prompt)}", field="subject"
            )

        # targets are stripped: they are scored as text + " " + target
        for name in ("target_new", "ground_truth"):
            value = getattr(self, name)
            if value is not None:
                set_(name, _check_str(value, name, strip=True))
        if self.target_new is None and self.ground_truth is None:
            raise EditRequestError(
                "target_new and ground_truth are both null; need at least one", field="target_new"
            )
        if self.target_new is not None and self.target_new == self.ground_truth:
            raise EditRequestError(
                f"equals ground_truth {_short(self.ground_truth)}: nothing to edit", field="target_new"
            )

        set_("rephrase_prompts", _check_str_tuple(self.rephrase_prompts, "rephrase_prompts"))
        set_("generation_prompts", _check_str_tuple(self.generation_prompts, "generation_prompts"))
        set_("locality", _check_probes(self.locality, "locality"))
        set_("portability", _check_probes(self.portability, "portability"))

    # ---- views -------------------------------------------------------------------------

    @property
    def is_template(self) -> bool:
        """True when `prompt` holds a ``{}`` slot, False when it is literal text."""
        return _SLOT in self.prompt  # validation guarantees at most one

    @property
    def text(self) -> str:
        """The prompt with the subject filled in (what the model reads).

        A plain replacement of the one ``{}``, not `str.format`: prompts may contain
        other braces (code, LaTeX) that must be left alone."""
        return self.prompt.replace(_SLOT, self.subject) if self.is_template else self.prompt

    @property
    def template(self) -> str:
        """The prompt as a ``{}`` template. For literal text the *last* occurrence of the
        subject becomes the slot: prompts like "X, the son of X's brother, ..." are
        edited where the relation is read, which is next to the end."""
        if self.is_template:
            return self.prompt
        head, _, tail = self.prompt.rpartition(self.subject)
        return head + _SLOT + tail

    @property
    def ref(self) -> str:
        """Human name of the request for messages, e.g. ``"record 12 (case_id 4031)"``."""
        return record_ref(self.index, self.case_id)

    # ---- (de)serialisation -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with every field (our "golden-fast" file format)."""
        return {
            "prompt": self.prompt,
            "subject": self.subject,
            "target_new": self.target_new,
            "ground_truth": self.ground_truth,
            "rephrase_prompts": list(self.rephrase_prompts),
            "locality": [p.to_dict() for p in self.locality],
            "portability": [p.to_dict() for p in self.portability],
            "generation_prompts": list(self.generation_prompts),
            "case_id": self.case_id,
            "index": self.index,
        }

    @classmethod
    def from_dict(cls, d: Any, index: int | None = None) -> EditRequest:
        """Inverse of `to_dict`: ``EditRequest.from_dict(r.to_dict()) == r``.

        Lists become tuples, probes may be dicts. `index`, when given, overrides the
        stored one (a loader knows the position in *its* file). Unknown keys are an
        error: in a hand-written file they are typos ("rephrase_prompt") whose content
        would otherwise be dropped without a word.
        """
        pos = index if _valid_index(index) else None
        if not isinstance(d, Mapping):
            raise EditRequestError(f"expected a JSON object, got {_type_name(d)} {_short(d)}", index=pos)
        raw_id = d.get("case_id")
        case_id = raw_id if _valid_case_id(raw_id) else None
        stored_index = d.get("index")
        if pos is None and _valid_index(stored_index):
            pos = stored_index

        def fail(reason: str, name: str) -> EditRequestError:
            return EditRequestError(reason, field=name, index=pos, case_id=case_id)

        unknown = sorted(str(k) for k in set(d) - set(_FIELDS))
        if unknown:
            raise fail(f"unknown key (known: {', '.join(_FIELDS)})", unknown[0])
        for key in ("prompt", "subject"):
            if key not in d:
                raise fail("missing", key)
        kwargs = {k: d[k] for k in _FIELDS if k in d and k not in ("locality", "portability")}
        for key in ("locality", "portability"):
            raw = d.get(key, [])
            if not isinstance(raw, (list, tuple)):
                raise fail(f"expected a list of probes, got {_type_name(raw)} {_short(raw)}", key)
            probes = []
            for i, p in enumerate(raw):
                try:
                    probes.append(p if isinstance(p, Probe) else Probe.from_dict(p))
                except EditRequestError as exc:
                    raise exc.located(index=pos, case_id=case_id, prefix=f"{key}[{i}]") from None
            kwargs[key] = tuple(probes)
        if index is not None:
            kwargs["index"] = index
        kwargs.setdefault("target_new", None)
        try:
            return cls(**kwargs)
        except EditRequestError as exc:
            raise exc.located(index=pos, case_id=case_id) from None


def _valid_case_id(value: Any) -> bool:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return True
    return isinstance(value, str) and bool(value.strip())


def _valid_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
