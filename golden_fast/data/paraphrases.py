"""More paraphrases of a fact, from its data set's own question templates (FORMULAS.md, "Template
paraphrases").

zsRE asks each fact through templates of its relation ("What is the university where {} went?",
"What's the university where {} went?", ...) but gives a record only one paraphrase. A request's
question and its paraphrases, with the subject replaced by "{}", are templates of one relation, and two
requests that share a template share the relation; joining the templates that occur together
(union-find) therefore groups the templates of a data set by relation. A fact's template paraphrases
are the other templates of its group, filled with its subject.

A trial edit scored on them as well as on the fact's own paraphrase measures its generalisation with
less of one paraphrase's luck (the hybrid locator's `paraphrases` option).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from golden_fast.data.request import EditRequest

__all__ = ["relation_groups", "subject_template", "template_paraphrases", "with_template_paraphrases"]

SLOT = "{}"


def subject_template(text: str, subject: str) -> str | None:
    """`text` with its subject replaced by "{}"; None unless the subject occurs exactly once (or the text
    already holds a "{}": a template of its own, ambiguous once filled)."""
    if not subject or SLOT in text or text.count(subject) != 1:
        return None
    return text.replace(subject, SLOT)


def _templates(req: EditRequest) -> list[str]:
    """The templates of a request's question (filled) and its paraphrases."""
    out = []
    for text in (req.text, *req.rephrase_prompts):
        t = subject_template(text, req.subject)
        if t is not None and t not in out:
            out.append(t)
    return out


def relation_groups(requests: Iterable[EditRequest]) -> dict[str, frozenset[str]]:
    """template -> every template of its group: the templates of one request are joined, and requests
    sharing a template join their groups."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for req in requests:
        ts = _templates(req)
        for t in ts:
            find(t)
        for t in ts[1:]:
            parent[find(t)] = find(ts[0])
    groups: dict[str, set[str]] = {}
    for t in parent:
        groups.setdefault(find(t), set()).add(t)
    return {t: frozenset(groups[find(t)]) for t in parent}


def template_paraphrases(req: EditRequest, groups: Mapping[str, frozenset[str]], limit: int) -> list[str]:
    """Up to `limit` other templates of the request's group filled with its subject (in template order;
    texts equal to its question or one of its paraphrases left out). [] when its templates are not in
    `groups` or their group holds no other."""
    own = _templates(req)
    group = next((groups[t] for t in own if t in groups), frozenset())
    seen = {req.text, *req.rephrase_prompts}
    out = []
    for t in sorted(group - set(own)):
        text = t.replace(SLOT, req.subject)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out[: max(int(limit), 0)]


def with_template_paraphrases(
    requests: Sequence[EditRequest], limit: int, source: Iterable[EditRequest] | None = None
) -> list[EditRequest]:
    """The requests with up to `limit` template paraphrases each appended to their rephrase prompts; the
    groups come from `source` (default: the requests themselves; give the whole data set, whose other
    records hold the other templates)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"with_template_paraphrases: limit must be a non-negative int, got {limit!r}")
    requests = list(requests)
    if limit == 0:
        return requests
    groups = relation_groups(requests if source is None else [*source, *requests])
    return [
        dataclasses.replace(r, rephrase_prompts=(*r.rephrase_prompts, *extra)) if extra else r
        for r in requests
        for extra in [template_paraphrases(r, groups, limit)]
    ]
