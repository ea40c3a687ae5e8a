"""Builds the compiled CPU kernels (streamlearn/kernels/cpu/*.c) as extension modules, and
the Kafka record parser (streamlearn/worker/kafka/records.c) as one of its own.

The same sources compile once per variant into their own module: on x86-64 for the x86-64-v4
(AVX-512), x86-64-v3 (AVX2, FMA) and baseline levels, elsewhere for the baseline alone;
streamlearn.kernels.cpu.binding imports the best one the CPU runs. module.c, bind_host.c and
bind_step.c are the binding, on CPython's C API with the buffer protocol, which Python 3.10's
limited API lacks: the modules are built for one CPython version (no abi3), and wheels are
built per version. Every module is optional: where none builds (no C compiler, MSVC) the
install still succeeds and the learner runs the torch step (and kafka-python parses its own
records, slower).
The rest of the project's configuration is in pyproject.toml.
"""

from __future__ import annotations

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PACKAGE = "streamlearn.kernels.cpu"
HERE = "streamlearn/kernels/cpu"
SOURCES = [
    "module.c",
    "bind_host.c",
    "bind_step.c",
    "step.c",
    "async.c",
    "memory.c",
    "linear.c",
    "mix.c",
    "replay.c",
    "draws.c",
    "drift.c",
    "features.c",
]
HEADERS = ["gemm.h", "step.h", "kernels.h", "args.h", "bindings.h"]
# -fassociative-math (with the two flags it needs) lets the compiler vectorise the dot products;
# NaN and inf still propagate (no -ffinite-math-only), so the kernels' non-finite guards work.
FLAGS = [
    "-O3",
    "-fno-math-errno",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
    "-pthread",
]
# (module, variant, its own flags), best first: binding.VARIANTS names the same modules. The
# AVX-512 build keeps 256-bit vectors for the compiler's own loops, as GCC's tuning for
# AVX-512 Intel cores does (and so -march=native there): the same sums in the same order.
X86_64 = [
    ("_kernels_v4", "x86-64-v4", ["-march=x86-64-v4", "-mprefer-vector-width=256"]),
    ("_kernels_v3", "x86-64-v3", ["-march=x86-64-v3"]),
    # -Wno-psabi: memory.c passes its 256-bit key vectors between static functions only, where
    # the note that SSE2 returns them differently from AVX concerns no caller
    ("_kernels", "x86-64", ["-Wno-psabi"]),
]
BASELINE = [("_kernels", "baseline", [])]


def _variants() -> list[tuple[str, str, list[str]]]:
    machine = platform.machine().lower()
    return X86_64 if machine in ("x86_64", "amd64") and sys.maxsize > 2**32 else BASELINE


class BuildKernels(build_ext):
    """Each variant compiles the same sources with its own flags, so each gets its own
    temporary folder for the objects (one at a time); MSVC is skipped (the sources need
    GCC or Clang: pthreads, GNU vector types)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.parallel = False  # variants share object names, each in its own folder in turn

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "msvc":
            print("skipping the compiled CPU kernels: they build with GCC or Clang only")
            self.extensions = []
        super().build_extensions()

    def build_extension(self, ext: Extension) -> None:
        temp = self.build_temp
        self.build_temp = os.path.join(temp, ext.name)
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = temp


setup(
    ext_modules=[
        Extension(
            f"{PACKAGE}.{module}",
            sources=[f"{HERE}/{name}" for name in SOURCES],
            depends=[f"{HERE}/{name}" for name in HEADERS],
            define_macros=[
                ("KERNELS_MODULE", module),
                ("KERNELS_VARIANT", f'"{variant}"'),
            ],
            extra_compile_args=FLAGS + flags,
            extra_link_args=["-pthread"],
            libraries=["m"],
            optional=True,
        )
        for module, variant, flags in _variants()
    ]
    + [
        Extension(
            "streamlearn.worker.kafka._records",
            sources=["streamlearn/worker/kafka/records.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildKernels},
)
