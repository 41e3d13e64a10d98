"""The platform key: which arithmetic produced an output, in one string.

Two runs of one commit on two CPUs of one CI image can produce different embeddings: the
default model runs on int8 kernels only where the CPU has int8 dot products with int32 sums
(AVX-512 VNNI, AVX-VNNI, Arm's dot product), and onnxruntime's, numba's and numpy's
kernels differ by SIMD width and version. The key names exactly that — architecture, SIMD
class, int8 dot products or not, and the versions of the three libraries that change bits —
so the embedding cache, the optimised-graph cache and ``oxidize.lock`` can keep outputs of
different arithmetic apart. It is computed in one place, here.

``OXIDIZE_CPU_FEATURES`` masks CPU features the kernels may use, to reproduce another
runner's arithmetic locally: a comma-separated list of ``-name`` entries, each removing every
CPU flag that contains ``name`` (``-vnni`` makes an AVX-512 VNNI machine compute as an AVX2
runner without int8 dot products does; ``-avx512,-vnni`` as a plain AVX2 one). The key
follows the mask. (The float kernels onnxruntime picks at run time are not masked; the int8
path — the difference that matters — is.)

Light: the standard library only; versions are read from package metadata, not imports.
"""

from __future__ import annotations

import functools
import os
import platform as _platform

MASK_ENV = "OXIDIZE_CPU_FEATURES"
#: Libraries whose version changes the bits of an output.
BIT_LIBRARIES = ("onnxruntime", "numba", "numpy")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (the first processor's ``flags``/``Features`` in
    ``/proc/cpuinfo``), lower case, after :data:`MASK_ENV`'s removals."""
    return _masked(_raw_flags(), os.environ.get(MASK_ENV, ""))


@functools.lru_cache(maxsize=1)
def _raw_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return frozenset(value.lower().split())
    except OSError:
        pass
    return frozenset()


def _masked(flags: frozenset[str], mask: str) -> frozenset[str]:
    removed = [item.strip().lower().lstrip("-") for item in mask.split(",") if item.strip()]
    return frozenset(f for f in flags if not any(r and r in f for r in removed))


def machine() -> str:
    arch = _platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)


def int8_dot() -> bool:
    """Whether the (masked) CPU has int8 dot products with int32 sums: VNNI on x86, the dot
    product extension on Arm (AVX2's ``vpmaddubsw`` saturates, so it does not count)."""
    flags = cpu_flags()
    if machine() == "aarch64":
        return "asimddp" in flags or not _raw_flags()  # no cpuinfo: ARMv8.2+ servers have it
    return "avx512_vnni" in flags or "avx_vnni" in flags


def simd_class() -> str:
    flags = cpu_flags()
    if machine() == "aarch64":
        return "neon"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "sse" if flags else "generic"


def _version(package: str) -> str:
    """An installed package's version from its ``.dist-info`` folder name, found beside the
    package without importing it (importlib.metadata costs ~50 ms here: no-op builds read
    this key)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return "none"
    site = os.path.dirname(os.path.dirname(spec.origin))
    prefix = package.replace("-", "_").lower() + "-"
    try:
        for name in os.listdir(site):
            if name.lower().startswith(prefix) and name.endswith(".dist-info"):
                return name[len(prefix):-len(".dist-info")]
    except OSError:
        pass
    return "unknown"


@functools.lru_cache(maxsize=8)
def _key(mask: str) -> str:
    arith = f"{machine()}-{simd_class()}-{'int8dot' if int8_dot() else 'noint8dot'}"
    return "/".join([arith, *(f"{lib}-{_version(lib)}" for lib in BIT_LIBRARIES)])


def platform_key() -> str:
    """E.g. ``x86_64-avx512-int8dot/onnxruntime-1.32.0/numba-0.68.1/numpy-2.4.6``."""
    return _key(os.environ.get(MASK_ENV, ""))
