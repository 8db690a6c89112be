"""Text corpora for the second-moment statistics, each with a stable identity for cache keys.

Sources (`StatsConfig.corpus`):

- A local file or directory.
  * ``.txt``: one text per paragraph, paragraphs separated by blank lines. A file without any
    blank line is read as one text per line instead (a sentence-per-line file would otherwise be
    a single text, truncated to max_length tokens). Texts are stripped; empty ones are skipped.
  * ``.jsonl``: one JSON object per line, its ``text`` field (StatsConfig.text_field) is the
    text; a line holding a bare JSON string is taken as the text itself.
  * a directory: every ``.txt`` and ``.jsonl`` below it (recursively, hidden files skipped), in
    sorted order of their relative paths.
  The first n_samples texts are read, in file order (no shuffling: the corpus is what it is).
  Identity: the absolute path, and every file's relative path, size and mtime.
- ``"wikitext-103"`` / ``"wikipedia"``: Hugging Face datasets (wikitext-103-raw-v1; wikimedia/
  wikipedia 20231101.en, as ROME's 20200501.en script dataset no longer loads), streamed, shuffled
  with a 10,000-text buffer and StatsConfig.seed, first n_samples non-empty texts. Needs the
  `datasets` package and the network; both missing are a CorpusUnavailableError that names the
  offline choices. Identity: dataset, config, split, seed.
- ``"wikitext-2"``: WikiText-2's test split from the data folder ($GOLDEN_FAST_DATA,
  `golden_fast.data.location`), one text per paragraph, headings dropped, the release's
  tokenisation undone (`golden_fast.data.wikitext`); texts in file order. Wikipedia text, the
  kind the anchors use, offline. Identity: the file's size and sha256.
- ``"model-sampled"`` (alias ``"builtin-sampled"``): the offline fallback. Texts sampled from the
  model itself: each starts with one of a fixed set of short generic prefixes ("The", "In the",
  "According to", ...) and continues with sample_length tokens of top-k sampling (top_k =
  StatsConfig.sample_top_k, temperature 1), seeded per batch, so the corpus is reproducible.
  Cached as jsonl under home()/corpora/<model identity>/ and extended, never regenerated, when a
  later call asks for more texts; an interrupted sampling resumes from its last whole batch.
  Identity: the model identity and every sampling setting.

  Limits of the sampled corpus, to keep in mind when reading results obtained with it:
  * It is the model's own distribution, not Wikipedia's. Keys then follow what the model
    "expects", which flatters well-modelled directions and under-represents rare ones (names,
    numbers, other languages, code): C is biased towards the model's typical subspace.
  * Texts are short (a prefix plus sample_length tokens) and start with a handful of prefixes,
    so early positions are over-represented relative to 1024-token Wikipedia articles.
  * Small models (and instruction-tuned ones) drift into repetition at top-k sampling; C then
    has a few dominant directions.
  * For ROME / R-ROME this is usually fine: the update uses C^-1 k* divided by (C^-1 k*)ᵀ k, so
    an overall scale of C cancels and only its shape matters; the sampled C is a reasonable proxy
    for that shape. For MEMIT / EMMET, whose lambda * C is weighed against K Kᵀ, the scale and
    the sample count matter; the numbers are not comparable to the anchors' Wikipedia C.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from golden_fast.fileio import atomic_write, iter_jsonl
from golden_fast.models.placement import execution_device

__all__ = [
    "HF_CORPORA",
    "SAMPLED_NAMES",
    "SAMPLE_PREFIXES",
    "Corpus",
    "CorpusUnavailableError",
    "corpus_key",
    "read_jsonl_texts",
    "read_txt",
    "resolve_corpus",
    "sampled_corpus_path",
]

# name -> (dataset path, config, split). "wikitext" is ROME's spelling of the same corpus.
HF_CORPORA: dict[str, tuple[str, str, str]] = {
    "wikitext-103": ("wikitext", "wikitext-103-raw-v1", "train"),
    "wikitext": ("wikitext", "wikitext-103-raw-v1", "train"),
    "wikipedia": ("wikimedia/wikipedia", "20231101.en", "train"),
}
SAMPLED_NAMES = ("model-sampled", "builtin-sampled")
# Short generic openings (ours): varied enough to avoid one topic, neutral enough for any model.
SAMPLE_PREFIXES: tuple[str, ...] = (
    "The", "In the", "A", "It is", "This", "He", "She", "They", "When", "After", "According to",
    "One of the", "There are", "Today", "During the", "Although", "In", "The history of", "Many",
    "We",
)
# Texts generated per batch of the sampled corpus. Fixed (part of the identity): the random stream
# of batch b is seeded by (seed, b), so changing it would change the texts. 64, not 16: on a 2-core
# CPU a step of 64 sequences costs 2.3x one of 16 (measured 290 vs 128 ms on SmolLM2), 1.8x the texts/s.
_GEN_BATCH = 64
_HF_SHUFFLE_BUFFER = 10_000


class CorpusUnavailableError(RuntimeError):
    """The corpus cannot be read here (no `datasets`, no network); the message names the fallbacks."""


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "corpus"


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A resolved corpus: `iter_texts(n)` yields its first n texts (fewer if it has fewer), and
    `texts(n)` lists them. Streaming matters for Wikipedia: 100,000 whole articles are gigabytes
    of text, of which only the first max_length tokens each are kept.

    `fingerprint` identifies the source (see the module doc); `name` is for humans and paths.
    """

    kind: str  # "file" | "dir" | "wikitext" | "hf" | "sampled"
    name: str
    fingerprint: str
    description: str
    _load: Callable[[int], Iterable[str]] = dataclasses.field(repr=False, compare=False)

    def iter_texts(self, n: int) -> Iterator[str]:
        return itertools.islice(iter(self._load(n)), n)

    def texts(self, n: int) -> list[str]:
        return list(self.iter_texts(n))


def corpus_key(corpus: Corpus, max_length: int, add_special_tokens: bool) -> str:
    """Folder name of a corpus in the stats cache: the source plus the settings that change which
    tokens are read (the truncation length, special tokens). The sample count and dtype are in
    the file names below it."""
    h = _hash({"source": corpus.fingerprint, "max_length": max_length, "special": add_special_tokens})
    return f"{_slug(corpus.name)}-{h[:16]}"


# -- local files -------------------------------------------------------------------------------
def read_txt(path: Path) -> Iterator[str]:
    """Paragraphs (blank-line separated) of a text file; its lines when it has no blank line."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    pieces = re.split(r"\n[ \t]*\n", text) if re.search(r"\n[ \t]*\n", text) else text.splitlines()
    for piece in pieces:
        piece = piece.strip()
        if piece:
            yield piece


def read_jsonl_texts(path: Path, field: str = "text") -> Iterator[str]:
    """The `field` of every JSON object line (a bare JSON string line is the text itself)."""
    for lineno, rec in iter_jsonl(path):
        text = rec.get(field) if isinstance(rec, dict) else rec
        if isinstance(rec, dict) and field not in rec:
            raise ValueError(f"{path}:{lineno}: record has no {field!r} field (keys: {sorted(rec)[:8]})")
        if not isinstance(text, str):
            raise ValueError(f"{path}:{lineno}: {field!r} is {type(text).__name__}, not a string")
        text = text.strip()
        if text:
            yield text


_SUFFIXES = (".txt", ".jsonl")


def _files_of(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix not in _SUFFIXES:
            raise ValueError(f"corpus file {root} must end in .txt or .jsonl")
        return [root]
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix in _SUFFIXES
         and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise ValueError(f"corpus directory {root} holds no .txt or .jsonl file")
    return files


def _local_corpus(root: Path, field: str) -> Corpus:
    root = root.resolve()
    files = _files_of(root)
    base = root if root.is_dir() else root.parent
    stamp = []
    for p in files:
        st = p.stat()
        stamp.append((p.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns))
    fingerprint = _hash({"kind": "local", "path": str(root), "files": stamp, "field": field})

    def load(n: int) -> Iterator[str]:
        for p in files:
            yield from read_txt(p) if p.suffix == ".txt" else read_jsonl_texts(p, field)

    kind = "dir" if root.is_dir() else "file"
    desc = f"{kind} {root} ({len(files)} file{'s' if len(files) != 1 else ''})"
    return Corpus(kind, root.stem if kind == "file" else root.name, fingerprint, desc, load)


# -- WikiText-2 from the data folder ----------------------------------------------------------------
#: name -> file of the data folder ($GOLDEN_FAST_DATA); read detokenised, headings dropped
LOCAL_CORPORA = {"wikitext-2": "wikitext-2/test.txt", "wikitext-2-test": "wikitext-2/test.txt"}


def _wikitext_corpus(name: str) -> Corpus:
    from golden_fast.data.location import data_file
    from golden_fast.data.wikitext import wikitext_paragraphs

    path = data_file(LOCAL_CORPORA[name]).resolve()
    st = path.stat()
    # the file's content identifies it (its path differs between machines and checkouts)
    fingerprint = _hash({"kind": "wikitext", "file": LOCAL_CORPORA[name], "size": st.st_size,
                         "sha256": _file_sha256(path)})

    def load(n: int) -> Iterator[str]:
        yield from wikitext_paragraphs(path)

    return Corpus("wikitext", "wikitext-2-test", fingerprint, f"WikiText-2 test split, detokenised ({path})", load)


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- Hugging Face datasets ----------------------------------------------------------------------
_OFFLINE_HINT = "offline, use corpus='model-sampled' or a local .txt/.jsonl file or directory"


def _hf_corpus(name: str, seed: int) -> Corpus:
    path, config, split = HF_CORPORA[name]
    fingerprint = _hash({"kind": "hf", "path": path, "config": config, "split": split, "seed": seed,
                         "buffer": _HF_SHUFFLE_BUFFER})

    def load(n: int) -> Iterator[str]:
        try:
            import datasets
        except ImportError:
            raise CorpusUnavailableError(
                f"corpus {name!r} needs the Hugging Face `datasets` package (pip install datasets) "
                f"and network access to the hub; {_OFFLINE_HINT}"
            ) from None
        try:
            ds = datasets.load_dataset(path, config, split=split, streaming=True)
            ds = ds.shuffle(seed=seed, buffer_size=_HF_SHUFFLE_BUFFER)
            it = iter(ds)
        except Exception as exc:  # hub unreachable, dataset renamed...: one clear error
            raise CorpusUnavailableError(
                f"could not stream {path} ({config}, {split}) for corpus {name!r}: "
                f"{type(exc).__name__}: {exc}; {_OFFLINE_HINT}"
            ) from exc
        kept = 0
        while kept < n:
            try:
                rec = next(it)
            except StopIteration:
                return
            except Exception as exc:  # the connection dropped mid-stream
                raise CorpusUnavailableError(
                    f"streaming {path} ({config}, {split}) failed after {kept} texts: "
                    f"{type(exc).__name__}: {exc}; {_OFFLINE_HINT}"
                ) from exc
            text = (rec.get("text") or "").strip()
            if text:
                kept += 1
                yield text

    return Corpus("hf", name, fingerprint, f"Hugging Face {path} ({config}, {split}), seed {seed}", load)


# -- the offline fallback: texts sampled from the model ------------------------------------------
def _sampled_settings(model, config, model_id: str | None = None) -> dict:
    from golden_fast.models.identity import model_identity

    return {
        "kind": "sampled",
        "model": model_id or model_identity(model),
        "prefixes": list(SAMPLE_PREFIXES),
        "length": config.sample_length,
        "top_k": config.sample_top_k,
        "temperature": 1.0,
        "seed": config.seed,
        "batch": _GEN_BATCH,
        "special": config.add_special_tokens,
    }


def sampled_corpus_path(model, config, model_id: str | None = None) -> Path:
    """Where the model-sampled corpus of these settings is cached (a jsonl file)."""
    from golden_fast.models import home

    settings = _sampled_settings(model, config, model_id)
    return home() / "corpora" / settings["model"] / f"sampled-{_hash(settings)[:16]}.jsonl"


def _read_sampled(path: Path) -> list[dict]:
    """The whole batches of a (possibly interrupted) sampled-corpus file, in order."""
    if not path.is_file():
        return []
    recs = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption: the end
                break
            if not isinstance(rec, dict) or rec.get("batch") != len(recs) // _GEN_BATCH:
                break
            recs.append(rec)
    return recs[: len(recs) // _GEN_BATCH * _GEN_BATCH]


@torch.no_grad()
def _sample_batch(model, tok, batch: int, config) -> list[str]:
    from golden_fast.tokens import encode_texts, pad_id

    prefixes = [SAMPLE_PREFIXES[(batch * _GEN_BATCH + i) % len(SAMPLE_PREFIXES)] for i in range(_GEN_BATCH)]
    enc = encode_texts(tok, prefixes, add_special_tokens=config.add_special_tokens)
    device = execution_device(model)
    # fork_rng: seed this batch's stream without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed * 1_000_003 + batch)
        out = model.generate(
            input_ids=enc.input_ids.to(device),
            attention_mask=enc.attention_mask.to(device),
            do_sample=True,
            top_k=config.sample_top_k,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=config.sample_length,
            pad_token_id=pad_id(tok),
        )
    return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]


def _sampled_corpus(model, tok, config, progress: bool, model_id: str | None) -> Corpus:
    if model is None or tok is None:
        raise ValueError("the model-sampled corpus needs the model and its tokenizer")
    settings = _sampled_settings(model, config, model_id)
    path = sampled_corpus_path(model, config, model_id)

    def load(n: int) -> list[str]:
        recs = _read_sampled(path)
        if len(recs) < n:
            # Rewrite the whole batches atomically, dropping a torn tail, then append new batches.
            atomic_write(path, "".join(json.dumps(rec) + "\n" for rec in recs))
            first = len(recs) // _GEN_BATCH
            last = -(-n // _GEN_BATCH)
            from tqdm.auto import tqdm

            bar = tqdm(range(first, last), desc="sampling corpus", unit="batch", disable=not progress)
            with path.open("a", encoding="utf-8") as f:
                for b in bar:
                    texts = _sample_batch(model, tok, b, config)
                    for text in texts:
                        rec = {"batch": b, "text": text}
                        recs.append(rec)
                        f.write(json.dumps(rec) + "\n")
                    f.flush()  # a whole batch per flush: an interruption loses at most one batch
        return [r["text"] for r in recs[:n] if r["text"]]

    desc = (f"model-sampled from {settings['model']} ({len(SAMPLE_PREFIXES)} prefixes, "
            f"{config.sample_length} tokens, top-k {config.sample_top_k}, seed {config.seed}) at {path}")
    return Corpus("sampled", "model-sampled", _hash(settings), desc, load)


def resolve_corpus(
    spec: str, config, model=None, tok=None, progress: bool = True, model_id: str | None = None
) -> Corpus:
    """The Corpus named by `spec` (a path, a dataset name or "model-sampled"); see the module doc.

    Nothing is read yet: `Corpus.texts(n)` reads (or samples) on demand, so a cache hit costs nothing.
    """
    if spec in SAMPLED_NAMES:
        return _sampled_corpus(model, tok, config, progress, model_id)
    if spec in HF_CORPORA:
        return _hf_corpus(spec, config.seed)
    if spec in LOCAL_CORPORA:
        return _wikitext_corpus(spec)
    path = Path(spec).expanduser()
    if path.exists():
        return _local_corpus(path, config.text_field)
    raise FileNotFoundError(
        f"corpus {spec!r} is neither an existing file or directory nor one of "
        f"{', '.join([*SAMPLED_NAMES, *HF_CORPORA, *LOCAL_CORPORA])}"
    )
