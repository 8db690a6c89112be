"""StatsConfig: what a second-moment pass reads and how it accumulates (FORMULAS.md, section
"Second-moment statistics C_l")."""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["ACC_DTYPES", "StatsConfig"]

ACC_DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class StatsConfig:
    """Settings of a C_l = E[k kᵀ] pass.

    Args:
        corpus: where the texts come from: a local .txt / .jsonl file or a directory of them,
            "wikitext-103" or "wikipedia" (Hugging Face `datasets`, network needed), or
            "model-sampled" (alias "builtin-sampled"): the offline fallback, texts sampled from
            the model itself (see golden_fast.stats.corpus for its limits). Default "wikipedia",
            the anchors' corpus (ROME/MEMIT mom2_dataset); offline machines must choose another.
        n_samples: number of texts read from the corpus (ROME/MEMIT mom2_n_samples = 100,000).
            A corpus with fewer texts is used whole; the cache records how many were read.
        dtype: accumulation dtype, "float32" (default, as ROME's mom2_dtype) or "float64".
        max_length: texts are truncated to min(max_length, the model's context) tokens.
        batch_tokens: token budget of a batch, padding included (ours: 4096; ROME uses 3 x 1024).
            Texts are sorted by length first, so batches carry little padding. Results do not
            depend on it beyond float rounding, and it is not part of the cache key.
        add_special_tokens: tokenise with the tokenizer's BOS etc., as ROME's TokenizedDataset
            does; those tokens' keys are counted like any other.
        checkpoint_every: during a pass, save the partial sums every this many texts, so an
            interrupted pass resumes (ours: 2048; 0 turns checkpoints off).
        cache: read and write the on-disk cache under golden_fast.models.home() / "stats".
        seed: shuffling seed of streamed Hugging Face corpora and of the sampled corpus.
        sample_length: new tokens per text of the model-sampled corpus (ours: 128).
        sample_top_k: top-k of the model-sampled corpus (ours: 50; ROME's templates use 5, which
            is too narrow to stand for a corpus).
        text_field: the field of .jsonl records holding the text.
    """

    corpus: str = "wikipedia"
    n_samples: int = 100_000
    dtype: str = "float32"
    max_length: int = 1024
    batch_tokens: int = 4096
    add_special_tokens: bool = True
    checkpoint_every: int = 2048
    cache: bool = True
    seed: int = 0
    sample_length: int = 128
    sample_top_k: int = 50
    text_field: str = "text"

    def __post_init__(self) -> None:
        if isinstance(self.dtype, torch.dtype):  # accept torch.float64 as well as "float64"
            object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))
        if self.dtype not in ACC_DTYPES:
            raise ValueError(f"StatsConfig.dtype must be one of {ACC_DTYPES}, not {self.dtype!r}")
        if not isinstance(self.corpus, str) or not self.corpus:
            raise ValueError("StatsConfig.corpus must be a non-empty string")
        for name in ("n_samples", "max_length", "batch_tokens", "sample_length", "sample_top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"StatsConfig.{name} must be a positive int, not {value!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(
                f"StatsConfig.checkpoint_every must be an int >= 0, not {self.checkpoint_every!r}"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def replace(self, **changes) -> StatsConfig:
        return dataclasses.replace(self, **changes)
