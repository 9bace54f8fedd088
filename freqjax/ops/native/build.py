"""Compile freqjax's native CPU kernels (``kernels/*.cc``) for this machine and register them with the XLA FFI.

The first call to :func:`available` in a process compiles the kernel source with the C++ compiler
(``$CXX``, else ``c++``) for this machine's CPU (``-march=native``) against jaxlib's FFI headers,
into a cache directory (``$FREQJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/freqjax``, else
``~/.cache/freqjax``). The file name hashes the source and every file it includes, compiler,
flags, jaxlib version and CPU flags, so hosts sharing a home directory never load each other's
builds; it is written to a temporary name and renamed, so concurrent processes never see a partial
file. About 10 s, once.

The vector width and register tiles follow the compile target (``kernels/simd.h``).
``FREQJAX_NATIVE_TARGET`` picks another target than this CPU's (:data:`TARGETS`: ``x86-64-v3``,
AVX2 + FMA, which also runs on AVX-512 CPUs; ``generic``, 4-float vectors and none of the ISA
paths), for tests and benchmarks.

``FREQJAX_NATIVE=0`` turns the kernels off (:func:`available` is then false and the XLA
formulations of :mod:`freqjax.ops.conv` run everywhere); a failed build warns once and does the same.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax

from freqjax.runtime import atomic_path, cache_dir

__all__ = [
    "SOURCE",
    "TARGETS",
    "available",
    "build",
    "included_files",
    "register_library",
    "simd",
    "tuned_for_this_cpu",
]

KERNELS = Path(__file__).parent / "kernels"
SOURCE = KERNELS / "conv_kernels.cc"
# Compile targets: this CPU (-march=native), the AVX2 + FMA level of x86-64, and a generic build
# (-DFREQJAX_SIMD_GENERIC: simd.h's generic row, plus -march=x86-64 on x86).
TARGETS = ("native", "x86-64-v3", "generic")
# FFI target name -> exported handler symbol in the shared library.
_TARGETS = {
    "freqjax_conv_forward": "FreqjaxConvForward",
    "freqjax_winograd_forward": "FreqjaxWinogradForward",
    "freqjax_conv_weight_grad": "FreqjaxConvWeightGrad",
    "freqjax_conv_input_grad": "FreqjaxConvInputGrad",
    "freqjax_winograd_weight_grad": "FreqjaxWinogradWeightGrad",
    "freqjax_channel_sums": "FreqjaxChannelSums",
    "freqjax_depthwise_forward": "FreqjaxDepthwiseForward",
    "freqjax_depthwise_weight_grad": "FreqjaxDepthwiseWeightGrad",
    "freqjax_repeat_vector": "FreqjaxRepeatVector",
}
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-Wall")


def _cpu_signature() -> str:
    """CPU model and feature flags (the binary is built with -march=native)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(dict.fromkeys(keep))


def tuned_for_this_cpu() -> bool:
    """Whether the kernels are measured faster than the ``'cpu'`` formulations on this kind of CPU:
    x86 with AVX-512 or with AVX2 + FMA, the targets whose vector width and register tiles simd.h
    sizes and whose train steps were timed against ``'cpu'`` and ``'xla'``. On a 2-core AVX2 AMD
    EPYC, images/s native / 'cpu' / 'xla' (``python benchmarks/native_targets.py``, interleaved):
    cifar_resnet8 812 / 333 / 270, mobilenetv2_100 234 / 183 / 18, resnet18 34.9 / 6.2 / 6.0
    (docs/native_kernels.md). Arm (NEON) and other CPUs build and pass the tests but are untimed,
    so they keep ``'cpu'``."""
    flags = set(_cpu_signature().split())
    return "avx512f" in flags or {"avx2", "fma"} <= flags


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        raise RuntimeError(f"no C++ compiler: $CXX / 'c++' ({cxx!r}) is not on PATH")
    return path


def _arch_flag(cxx: str) -> list[str]:
    """-march=native where the compiler takes it (GCC, Clang on x86), else -mcpu=native, else none."""
    for flag in ("-march=native", "-mcpu=native"):
        probe = subprocess.run(
            [cxx, flag, "-x", "c++", "-fsyntax-only", "-"], input="", capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [flag]
    return []


def _target_flags(cxx: str, target: str) -> list[str]:
    if target == "native":
        return _arch_flag(cxx)
    if target == "generic":
        x86 = platform.machine().lower() in ("x86_64", "amd64")
        return ["-DFREQJAX_SIMD_GENERIC", *(["-march=x86-64"] if x86 else [])]
    if target in TARGETS:
        return [f"-march={target}"]
    raise ValueError(f"unknown native kernel target {target!r}; one of {TARGETS}")


def default_target() -> str:
    """``$FREQJAX_NATIVE_TARGET`` if set, else ``'native'`` (this CPU)."""
    return os.environ.get("FREQJAX_NATIVE_TARGET", "native") or "native"


_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def included_files(source: Path = SOURCE) -> list[Path]:
    """``source`` and every file it includes with ``#include "..."``, recursively (resolved next to the
    including file, then in ``kernels/``): what the build's cache key hashes."""
    found: list[Path] = []
    todo = [source.resolve()]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.append(path)
        for name in _INCLUDE.findall(path.read_text(errors="replace")):
            for folder in (path.parent, KERNELS):
                if (folder / name).is_file():
                    todo.append((folder / name).resolve())
                    break
    return found


def build(force: bool = False, source: Path = SOURCE, target: str | None = None) -> Path:
    """Compile ``source`` (:data:`SOURCE`; another version of it for benchmarks/kernel_ab.py)
    for ``target`` (one of :data:`TARGETS`; default :func:`default_target`, this CPU) if not cached
    and return the shared library's path.

    Raises ``RuntimeError`` with the compiler's message if there is no compiler or the build fails.
    """
    target = target or default_target()
    cxx = _compiler()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    # jaxlib's headers as system headers: -Wall is for the kernels' own code.
    flags = [*_FLAGS, *_target_flags(cxx, target), f"-I{KERNELS}", "-isystem", jax.ffi.include_dir()]
    key = hashlib.sha256()
    jaxlib_version = importlib.metadata.version("jaxlib")
    files = [part for path in included_files(source) for part in (path.name, path.read_bytes())]
    for part in (*files, version, " ".join(flags), jaxlib_version, _cpu_signature()):
        key.update(part.encode() if isinstance(part, str) else part)
        key.update(b"\0")
    name = "conv_kernels" if target == "native" else f"conv_kernels-{target}"
    target_path = cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"
    if target_path.exists() and not force:
        return target_path
    target_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target_path, ".so") as tmp:
        result = subprocess.run([cxx, *flags, str(source), "-o", tmp], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"building {source.name} failed ({cxx} {' '.join(flags)}):\n{result.stderr[-3000:]}")
    return target_path


# FFI registration is process-wide and permanent: the library registered first stays in use.
_registered: dict[str, ctypes.CDLL] = {}


def register_library(lib: ctypes.CDLL, prefix: str = "") -> None:
    """Register every FFI target of the loaded kernel library ``lib`` as ``prefix + target`` and keep
    ``lib`` loaded (``benchmarks/kernel_ab.py`` registers two builds under two prefixes).

    Raises AttributeError, before registering anything, if ``lib`` lacks one of the handlers.
    """
    capsules = {prefix + name: jax.ffi.pycapsule(getattr(lib, symbol)) for name, symbol in _TARGETS.items()}
    for name, capsule in capsules.items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    _registered[prefix or "lib"] = lib


@functools.cache
def _load() -> ctypes.CDLL | None:
    if os.environ.get("FREQJAX_NATIVE", "1") == "0":
        return None
    if "lib" in _registered:
        return _registered["lib"]
    try:
        lib = ctypes.CDLL(str(build()))
        register_library(lib)
    except (RuntimeError, OSError, AttributeError) as err:
        warnings.warn(
            f"freqjax native CPU conv kernels unavailable, using XLA formulations instead: {err}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return lib


def simd(lib: ctypes.CDLL | None = None) -> str:
    """The vector instruction set a loaded kernel build was compiled for, as simd.h chose it, e.g.
    ``'avx2: 8 lanes, 16 registers'`` (``lib``: default the process's build; '' if none)."""
    lib = lib if lib is not None else (_load() if sys.platform != "win32" else None)
    if lib is None:
        return ""
    lib.FreqjaxSimdName.restype = ctypes.c_char_p
    name = lib.FreqjaxSimdName().decode()
    return f"{name}: {lib.FreqjaxSimdLanes()} lanes, {lib.FreqjaxSimdRegisters()} registers"


def available() -> bool:
    """Whether the native kernels are built and registered (builds them on first call; CPU only)."""
    return sys.platform != "win32" and _load() is not None
