"""The CUDA sources (csrc/cuda/*.cu) compile with this machine's nvcc, GPU or not.

setup.py builds them only when torch has CUDA (torch.version.cuda and CUDA_HOME), so on a CPU-only
machine nothing else would notice a .cu file that no longer compiles. Here each one is compiled to an object file
(`nvcc -c`, no link: a CPU torch has no CUDA libraries to link against) against the installed torch's
headers, with the flags torch's BuildExtension gives nvcc. A CPU wheel lacks the one generated CUDA
header (c10/cuda/impl/cuda_cmake_macros.h); C10_CUDA_NO_CMAKE_CONFIGURE_FILE skips it, which only
drops a Windows export macro. Warnings from our own sources fail the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

ROOT = Path(__file__).resolve().parents[2]
CU_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
# Hopper (the H100/H200 the GPU tests run on); one architecture keeps the compile to about a minute.
ARCH = os.environ.get("GOLDEN_FAST_TEST_CUDA_ARCH", "sm_90")


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    home = cpp_extension.CUDA_HOME or os.environ.get("CUDA_HOME")
    candidate = Path(home, "bin", "nvcc") if home else None
    return str(candidate) if candidate and candidate.is_file() else None


NVCC = _nvcc()


def test_there_are_cuda_sources():
    assert CU_SOURCES, "csrc/cuda/ has no .cu files"


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, CUDA_HOME): CUDA sources not compiled")
@pytest.mark.parametrize("source", CU_SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path):
    includes = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    generated = Path(includes[0], "c10", "cuda", "impl", "cuda_cmake_macros.h")
    cmd = [
        NVCC,
        "-c",
        str(source),
        "-o",
        str(tmp_path / (source.stem + ".o")),
        "-std=c++20",  # what BuildExtension passes for torch >= 2.10 headers
        "-O3",
        f"-arch={ARCH}",
        "-Xcompiler",
        "-Wall",
        *cpp_extension.COMMON_NVCC_FLAGS,
        "-DTORCH_EXTENSION_NAME=_C",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        *([] if generated.is_file() else ["-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"]),
        *(f"-I{d}" for d in includes),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"nvcc failed on {source.name} (torch {torch.__version__}):\n{output[-6000:]}"
    ours = [line for line in output.splitlines() if "warning" in line.lower() and str(ROOT / "csrc") in line]
    assert not ours, "warnings in our CUDA sources:\n" + "\n".join(ours)
    assert (tmp_path / (source.stem + ".o")).stat().st_size > 0
