"""Build of golden-fast: the Python package, `kernels/` installed as `golden_fast.kernels`,
and the native extension `golden_fast._C` from csrc/ (C++/OpenMP always, CUDA when torch has it).

GOLDEN_FAST_BUILD_CPP=0 skips the extension: the package then runs on its torch paths and
`golden_fast.native.available()` says why.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extensions() -> tuple[list, dict]:
    if os.environ.get("GOLDEN_FAST_BUILD_CPP", "1") == "0":
        print("golden-fast: GOLDEN_FAST_BUILD_CPP=0, native extension not built", file=sys.stderr)
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # no torch at build time: pure-python install
        print("golden-fast: torch not importable at build time, native extension not built", file=sys.stderr)
        return [], {}
    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    if not cpp:
        return [], {}
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # No -std flag: BuildExtension adds the standard this torch's headers need (C++20 for 2.13);
    # forcing -std=c++17 makes them warn (bit-field initialisers) and may break on the next torch.
    # -ffp-contract=off: GCC fuses a*b+c into FMA by default in C++, and only where the instruction
    # set has one, so the AVX2/AVX-512 and baseline kernels (csrc/simd.h) would round differently.
    cxx = ["-O3", "-ffp-contract=off", *openmp]
    if torch.version.cuda and cpp_extension.CUDA_HOME and cu:
        ext = cpp_extension.CUDAExtension(
            "golden_fast._C",
            cpp + cu,
            extra_compile_args={"cxx": cxx + ["-DGOLDEN_FAST_WITH_CUDA"], "nvcc": ["-O3"]},
            extra_link_args=openmp,
        )
    else:
        if cu:
            print("golden-fast: no CUDA in torch or no CUDA_HOME: CUDA sources skipped", file=sys.stderr)
        ext = cpp_extension.CppExtension(
            "golden_fast._C", cpp, extra_compile_args={"cxx": cxx}, extra_link_args=openmp
        )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["golden_fast", "golden_fast.*"]) + ["golden_fast.kernels"],
    package_dir={"golden_fast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
