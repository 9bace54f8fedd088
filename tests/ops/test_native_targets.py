"""The native kernels on every compile target this machine can build or run (freqjax.ops.native.build).

- simd.h's table: vector lanes and registers for AVX-512, AVX2, NEON and the generic build, from
  compile-only probes (``static_assert``), so that a target this CPU cannot run is still checked.
- Warning-clean builds (``-Wall -Werror``) for AVX-512 (``-march=x86-64-v4``, compiled even on an
  AVX2 machine) and, with ``aarch64-linux-gnu-g++`` installed (Debian: ``g++-aarch64-linux-gnu``),
  an aarch64 NEON object and a generic aarch64 syntax check; skipped without that compiler.
- The value and gradient checks of test_native.py (<= 1e-5 against XLA) for the AVX2 target
  (``x86-64-v3``, where the CPU runs it) and the generic build, each in a process of its own
  with ``FREQJAX_NATIVE_TARGET`` set: the machine's own target runs them in test_native.py itself.
"""

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from freqjax.ops import native
from freqjax.ops.native.build import _FLAGS, KERNELS

X86 = platform.machine().lower() in ("x86_64", "amd64")
CROSS = "aarch64-linux-gnu-g++"
CXX = os.environ.get("CXX", "c++")
CPU_FLAGS = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()

pytestmark = pytest.mark.skipif(shutil.which(CXX) is None, reason="needs a C++ compiler")

PROBE = """
#include "simd.h"
static_assert(freqjax::kLanes == {lanes} && freqjax::kRegisters == {registers}, "simd.h's table");
static_assert(sizeof(freqjax::Vec) == {lanes} * sizeof(float), "one vector, {lanes} floats");
"""


def _compile(cxx: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([cxx, *args], capture_output=True, text=True, check=False)


# (compiler, flags, lanes, registers)
PROBES = [
    pytest.param(CXX, ["-march=x86-64-v4"], 16, 32, id="avx512", marks=pytest.mark.skipif(not X86, reason="x86")),
    pytest.param(CXX, ["-march=x86-64-v3"], 8, 16, id="avx2", marks=pytest.mark.skipif(not X86, reason="x86")),
    pytest.param(CXX, ["-march=x86-64"], 4, 16, id="x86-64-sse2", marks=pytest.mark.skipif(not X86, reason="x86")),
    pytest.param(CXX, ["-DFREQJAX_SIMD_GENERIC"], 4, 16, id="generic"),
    pytest.param(
        CROSS,
        ["-march=armv8-a"],
        4,
        32,
        id="neon",
        marks=pytest.mark.skipif(shutil.which(CROSS) is None, reason=f"{CROSS} not installed"),
    ),
]


@pytest.mark.parametrize(("cxx", "flags", "lanes", "registers"), PROBES)
def test_simd_header_picks_width_and_registers_from_the_target(tmp_path, cxx, flags, lanes, registers):
    probe = tmp_path / "probe.cc"
    probe.write_text(PROBE.format(lanes=lanes, registers=registers))
    result = _compile(cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Werror", *flags, f"-I{KERNELS}", str(probe))
    assert result.returncode == 0, result.stderr


def _kernel_flags(*extra: str) -> list[str]:
    flags = [f for f in _FLAGS if f != "-shared"]  # an object, not a library: no link step
    return [*flags, "-Werror", *extra, f"-I{KERNELS}", "-isystem", jax.ffi.include_dir(), str(native.SOURCE)]


@pytest.mark.skipif(not X86, reason="x86 only")
def test_avx512_build_compiles_warning_clean(tmp_path):
    result = _compile(CXX, *_kernel_flags("-march=x86-64-v4", "-c", "-o", str(tmp_path / "k.o")))
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.skipif(shutil.which(CROSS) is None, reason=f"no {CROSS} (g++-aarch64-linux-gnu)")
def test_aarch64_cross_compile(tmp_path):
    # NEON, compiled to an object (code generation warnings included); the generic build's syntax
    neon = _compile(CROSS, *_kernel_flags("-march=armv8-a", "-c", "-o", str(tmp_path / "k.o")))
    assert neon.returncode == 0, neon.stderr[-3000:]
    generic = _compile(CROSS, *_kernel_flags("-DFREQJAX_SIMD_GENERIC", "-fsyntax-only"))
    assert generic.returncode == 0, generic.stderr[-3000:]


def _runs_x86_64_v3() -> bool:
    return X86 and {"avx2", "fma", "bmi2", "f16c", "movbe"} <= CPU_FLAGS


# The checks against XLA from test_native.py, and test_native's check that the build is the one asked for.
SELECTION = "matches_xla or matches_float64 or matches_flax or build_target"


@pytest.mark.parametrize(
    ("target", "isa"),
    [
        pytest.param(
            "x86-64-v3", "avx2", marks=pytest.mark.skipif(not _runs_x86_64_v3(), reason="this CPU cannot run AVX2")
        ),
        pytest.param("generic", "generic"),
    ],
)
def test_value_and_gradient_checks_on_other_targets(target, isa):
    env = {**os.environ, "FREQJAX_NATIVE_TARGET": target}
    here = Path(__file__).parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-k", SELECTION, "test_native.py"],
        cwd=here,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]
