"""What a golden-fast process holds besides the weights and a stage's tensors: the runtime (Python,
torch, transformers, golden-fast, a model class built) and the tokenizer.

Runtime, measured on CPU (Linux x86-64, Python 3.11, torch 2.13 CPU, transformers 5.24): the resident
set of a fresh process, cumulative,

    after the imports (torch, transformers, golden_fast.edit / locate / stats)     250 MiB
    after building a model from its config (the modeling code)       460 MiB, any model alike
                                                                     (tiny-llama, SmolLM2, Gemma-3, GPT-2-XL)
    after `from_pretrained` of a saved tiny model                    462-466 MiB (tiny-llama, -gemma3, -gpt2)

so RUNTIME_BYTES = 465 MiB whatever the model. A stage's first run adds its own code and lazily
imported modules: STAGE_RUNTIME_BYTES, the growth of the resident peak when tiny-llama (tensors
under 1 MiB) runs the stage in a fresh process (tiny-gemma3 and tiny-gpt2: within 11 MiB of it).
A CUDA process holds more (the CUDA libraries and context): give runtime_bytes there.

The tokenizer has no formula from its config (the Rust tokenizer's tables and transformers' Python
vocabularies grow with vocabulary and merges at different rates); `tokenizer_bytes` loads it (no
weights) in a fresh process that already holds the runtime, and reads what it adds to the resident
set once the load's temporaries are freed and returned (gc, malloc_trim), since the load's transient
heap is reused by what the process allocates next: 17 MiB for SmolLM2's 49k-entry BPE (its modules
are mostly the runtime's already), 266 MiB for Gemma-3's 262k-entry one.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["RUNTIME_BYTES", "STAGE_RUNTIME_BYTES", "TOKENIZER_FILES", "find_tokenizer", "tokenizer_bytes"]

MiB = 2**20
RUNTIME_BYTES = 465 * MiB
STAGE_RUNTIME_BYTES = {"load": 0, "lga": 16 * MiB, "stats": 32 * MiB, "r-rome": 24 * MiB, "emmet": 28 * MiB}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")

# runs in a fresh interpreter that first holds the runtime (the imports and the model class built on
# the meta device, as RUNTIME_BYTES counts them): the tokenizer's own modules and tables are then
# what it adds; prints the resident bytes (VmRSS) before and after it
_MEASURE = r"""
import ctypes, gc, json, sys
import torch
import golden_fast.edit, golden_fast.locate.lga, golden_fast.stats
from golden_fast.plan.model import build_meta_model, resolve_config
from transformers import AutoTokenizer

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def settle():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass

model = build_meta_model(resolve_config(sys.argv[1]).config)
settle()
before = rss()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
settle()
print(json.dumps({"before": before, "after": rss()}))
"""


def find_tokenizer(source: str | Path) -> Path | None:
    """The folder of a config source that also holds tokenizer files, else None."""
    path = Path(str(source))
    folder = path.parent if path.is_file() else path
    if folder.is_dir() and any((folder / f).is_file() for f in TOKENIZER_FILES):
        return folder
    return None


@functools.lru_cache(maxsize=16)
def _measure(folder: str) -> int | None:
    try:
        # the package this one is, importable whatever the working directory
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
        out = subprocess.run([sys.executable, "-c", _MEASURE, folder], capture_output=True, text=True,
                             timeout=600, check=True, env=env)
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, TypeError):
        return None  # no /proc (not Linux), or the tokenizer does not load
    return max(0, int(data["after"]) - int(data["before"]))


def tokenizer_bytes(source: str | Path) -> int | None:
    """Resident bytes the tokenizer beside `source` (a config.json or its folder) keeps once loaded;
    None where there is none or it cannot be measured here."""
    folder = find_tokenizer(source)
    return None if folder is None else _measure(str(folder.resolve()))
