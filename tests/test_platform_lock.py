"""Locked builds that hold on every CI runner: the platform key, per-platform outputs, and
locked mode on a platform the lock has not seen (OXIDIZE_CPU_FEATURES plays the other runner).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from project_factory import make_project

from oxidize import platform as plat
from oxidize.engine import lockfile


def run(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # locked mode only when the case asks for it, whatever the calling shell has set
    full = {k: v for k, v in os.environ.items() if k != "OXIDIZE_LOCKED"} | (env or {})
    return subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, env=full,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ the platform key


def test_mask_removes_features_and_the_key_follows(monkeypatch):
    flags = frozenset({"avx2", "avx512f", "avx512_vnni", "sse4_2"})
    monkeypatch.setattr(plat, "_raw_flags", lambda: flags)
    monkeypatch.setattr(plat, "machine", lambda: "x86_64")
    plat._key.cache_clear()
    monkeypatch.delenv(plat.MASK_ENV, raising=False)
    assert plat.int8_dot() and plat.simd_class() == "avx512"
    native = plat.platform_key()
    assert native.startswith("x86_64-avx512-int8dot/onnxruntime-")
    assert [part.split("-")[0] for part in native.split("/")[1:]] == list(plat.BIT_LIBRARIES)
    monkeypatch.setenv(plat.MASK_ENV, "-vnni")
    assert not plat.int8_dot() and plat.platform_key().startswith("x86_64-avx512-noint8dot/")
    monkeypatch.setenv(plat.MASK_ENV, "-avx512, -vnni")
    assert plat.simd_class() == "avx2" and plat.platform_key().startswith("x86_64-avx2-noint8dot/")
    plat._key.cache_clear()


def test_the_encoder_follows_the_mask(monkeypatch):
    """The int8 rewrite is used only where the (masked) CPU has int8 dot products."""
    from oxidize.embed import int8

    monkeypatch.setattr(plat, "_raw_flags", lambda: frozenset({"avx512f", "avx512_vnni"}))
    monkeypatch.setattr(plat, "machine", lambda: "x86_64")
    monkeypatch.delenv(plat.MASK_ENV, raising=False)
    assert int8.cpu_has_int8_dot()
    monkeypatch.setenv(plat.MASK_ENV, "-vnni")
    assert not int8.cpu_has_int8_dot()


def test_graph_and_embedding_caches_are_keyed_by_the_platform(monkeypatch):
    from oxidize.embed.sessions import graph_key
    from oxidize.engine.stages import cache_key

    monkeypatch.delenv(plat.MASK_ENV, raising=False)
    a = (graph_key("fp"), cache_key({"fingerprint": "fp"}))
    monkeypatch.setenv(plat.MASK_ENV, "-vnni,-avx512,-avx2")
    b = (graph_key("fp"), cache_key({"fingerprint": "fp"}))
    if plat.platform_key() == plat._key(""):
        pytest.skip("this CPU has none of the masked features")
    assert a[0] != b[0] and a[1] != b[1]


# ------------------------------------------------------------------ merge and check (unit)

P, Q = "x86_64-avx512-int8dot/onnxruntime-1/numba-1/numpy-1", "x86_64-avx2-noint8dot/onnxruntime-1/numba-1/numpy-1"


def _flat(platform: str, weights: str = "aa", mrr: str = "0.5", log: str = "11") -> dict[str, str]:
    out = f'outputs."{platform}".semantic'
    return {"version": "2", "recipe": '"r"', "eventlog.sha256": f'"{log}"',
            f"{out}.weights_sha256": f'"{weights}"', f"{out}.test_mrr": mrr}


def test_merge_keeps_other_platforms_until_an_input_changes():
    first = _flat(P)
    both = lockfile.merge(first, _flat(Q, weights="bb"))
    assert {lockfile._platform_of(k) for k in both} == {None, P, Q}
    assert both[f'outputs."{P}".semantic.weights_sha256'] == '"aa"'
    again = lockfile.merge(both, _flat(P, weights="cc"))  # P rebuilt: its entry replaced
    assert again[f'outputs."{P}".semantic.weights_sha256'] == '"cc"' and f'outputs."{Q}".semantic.test_mrr' in again
    reset = lockfile.merge(both, _flat(P, log="22"))
    assert {lockfile._platform_of(k) for k in reset} == {None, P}


def test_check_exact_on_a_known_platform_tolerant_on_a_new_one():
    committed = _flat(P, mrr="0.5")
    assert lockfile.check(committed, _flat(P, mrr="0.5")) == ([], None)
    diffs, _ = lockfile.check(committed, _flat(P, weights="zz"))
    assert [d[0] for d in diffs] == [f'outputs."{P}".semantic.weights_sha256']
    diffs, note = lockfile.check(committed, _flat(Q, weights="zz", mrr="0.51"))
    assert diffs == [] and note.startswith(f"platform {Q} is new to the lock: test mrr@10 within")
    assert "semantic 0.510 vs 0.500" in note
    diffs, note = lockfile.check(committed, _flat(Q, mrr=str(0.5 + lockfile.METRIC_TOLERANCE + 0.01)))
    assert note is None and diffs[0][0] == f'outputs."{Q}".semantic.test_mrr'
    diffs, _ = lockfile.check(committed, _flat(Q), strict=True)
    assert diffs and "strict" in diffs[0][2]
    for platform in (P, Q):  # an input change fails on either platform
        diffs, _ = lockfile.check(committed, _flat(platform, log="22"))
        assert ("eventlog.sha256", '"11"', '"22"') in diffs


# ------------------------------------------------------------------ end to end


def test_a_lock_written_on_a_passes_on_a_and_within_tolerance_on_b(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    assert run(root).returncode == 0
    lock = root / "recipes/a/oxidize.lock"
    a_text = lock.read_text()
    from oxidize.train.blas import kernel_family

    a_key = f"{plat.platform_key()}/openblas-{kernel_family()}"  # the OpenBLAS kernel too
    assert f'[outputs."{a_key}".semantic]' in a_text
    # "A": byte-exact
    proc = run(root, env={"OXIDIZE_LOCKED": "1"})
    assert proc.returncode == 0 and "a:lock: build matches recipes/a/oxidize.lock" in proc.stdout
    # "B": the same project as another CPU family would build it (a fresh build folder)
    mask = {"OXIDIZE_CPU_FEATURES": "-vnni,-avx512,-avx2,-sse"}
    b_key = subprocess.run([sys.executable, "-c", "from oxidize.platform import platform_key; "
                            "from oxidize.train.blas import kernel_family; "
                            "print(platform_key() + '/openblas-' + kernel_family())"],
                           env={**os.environ, **mask}, capture_output=True, text=True).stdout.strip()
    assert b_key != a_key
    import shutil

    shutil.rmtree(root / "build")
    proc = run(root, env={**mask, "OXIDIZE_LOCKED": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notes = [line for line in proc.stdout.splitlines() if line.startswith("a:lock: platform")]
    assert len(notes) == 1 and notes[0].startswith(f"a:lock: platform {b_key} is new to the lock")
    assert lock.read_text() == a_text  # locked mode never writes
    proc = run(root, env={**mask, "OXIDIZE_LOCKED": "strict"})
    assert proc.returncode == 1 and "OXIDIZE_LOCKED=strict" in proc.stdout + proc.stderr
    # Writing on "B" adds its entry beside "A"'s
    assert run(root, env=mask).returncode == 0
    both = lock.read_text()
    assert f'[outputs."{b_key}".semantic]' in both and f'[outputs."{a_key}".semantic]' in both
    # An input change fails on either platform
    from eventlog_factory import append_session

    append_session(root / "events.db", "late", ["a late note about the database migration schema"])
    for env in ({}, mask):
        proc = run(root, env={**env, "OXIDIZE_LOCKED": "1"})
        assert proc.returncode == 1 and "eventlog.events: committed 30 vs built 31" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ the OpenBLAS kernel


def _kernel(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", "from oxidize.train.blas import kernel_family; "
                           "print(kernel_family())"], env={**os.environ, **env},
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(plat.machine() != "x86_64", reason="OPENBLAS_CORETYPE names x86 kernels")
def test_the_lock_names_the_openblas_kernel_training_ran_on():
    """OPENBLAS_CORETYPE changes training's bits (SkylakeX against Haswell kernels gave the
    example other weights), so the kernel is part of the lock's platform key; kernels that
    gave the same bits share a name."""
    assert _kernel({"OPENBLAS_CORETYPE": "Haswell"}) == "haswell"
    assert _kernel({"OPENBLAS_CORETYPE": "Zen"}) == "haswell"
    assert _kernel({"OPENBLAS_CORETYPE": "Sandybridge"}) == "sandybridge"


def test_the_committed_example_lock_holds_on_a_fresh_copy(tmp_path: Path):
    """`OXIDIZE_LOCKED=1 doit` on the repository's own example, as a fresh clone runs it:
    byte-exact where the lock records this platform and kernel, else within tolerance."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    root = tmp_path / "clone"
    shutil.copytree(repo / "recipes/example", root / "recipes/example",
                    ignore=shutil.ignore_patterns("build", "*.pyc"))
    shutil.copy(repo / "dodo.py", root / "dodo.py")
    committed = (root / "recipes/example/oxidize.lock").read_text()
    proc = run(root, env={"OXIDIZE_LOCKED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ("example:lock: build matches recipes/example/oxidize.lock" in proc.stdout
            or "is new to the lock" in proc.stdout)
    assert (root / "recipes/example/oxidize.lock").read_text() == committed
