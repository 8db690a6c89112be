"""Second-moment statistics C_l = E[k kᵀ] of the MLP down-projection keys (FORMULAS.md, section
"Second-moment statistics C_l").

    from golden_fast.stats import StatsConfig, second_moments, get_second_moment
    config = StatsConfig(corpus="model-sampled", n_samples=2000)
    stats = second_moments(model, tok, range(30), config)     # one pass, cached
    C = stats[12].mean()                                      # (m, m)
    print(stats[12].conditioning())

The editors use `get_second_moment` (cached; several layers in one pass) and `conditioning`.
"""

from .config import ACC_DTYPES, StatsConfig
from .corpus import Corpus, CorpusUnavailableError, corpus_key, resolve_corpus
from .second_moment import (
    Conditioning,
    SecondMoment,
    conditioning,
    effective_max_length,
    get_second_moment,
    layer_stats,
    per_layer_second_moments,
    second_moments,
)

__all__ = [
    "ACC_DTYPES",
    "Conditioning",
    "Corpus",
    "CorpusUnavailableError",
    "SecondMoment",
    "StatsConfig",
    "conditioning",
    "corpus_key",
    "effective_max_length",
    "get_second_moment",
    "layer_stats",
    "per_layer_second_moments",
    "resolve_corpus",
    "second_moments",
]
