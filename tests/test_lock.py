"""``oxidize.lock``, reproducible builds, locked mode, and builds running side by side.

Real doit processes on the project of test_stale.py (recipe ``a`` with two projections,
recipe ``b`` with one, a tiny ONNX model, SQLite event logs).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from project_factory import make_project

from oxidize import __version__
from oxidize.engine.stages import cache_key
from oxidize.platform import platform_key
from oxidize.train.blas import kernel_family


def lock_key() -> str:
    """The lock's platform key of a build in this environment: the platform and the OpenBLAS
    kernel training ran on."""
    return f"{platform_key()}/openblas-{kernel_family()}"
from test_stale import executed, run

LOCKS = ("recipes/a/oxidize.lock", "recipes/b.lock")
WEIGHTS = ("build/a/semantic/weights.safetensors", "build/a/other/weights.safetensors",
           "build/b/semantic/weights.safetensors")


def test_two_clean_builds_give_the_same_lock_and_weights(tmp_path: Path):
    one = make_project(tmp_path / "one")
    two = make_project(tmp_path / "elsewhere" / "two")
    run(one)
    run(two)
    for lock in LOCKS:
        text = (one / lock).read_text()
        assert text == (two / lock).read_text(), lock
        assert str(tmp_path) not in text  # no absolute paths
    for weights in WEIGHTS:
        assert (one / weights).read_bytes() == (two / weights).read_bytes(), weights
    lock = (one / "recipes/a/oxidize.lock").read_text()
    assert lock.splitlines()[3:7] == ["version = 2", f'oxidize_version = "{__version__}"', 'recipe = "a"',
                                     f'recipe_hash = "{_field(lock, "recipe_hash")}"']
    outputs = f'[outputs."{lock_key()}"'
    sha = hashlib.sha256((one / "build/a/other/weights.safetensors").read_bytes()).hexdigest()
    assert f'weights_sha256 = "{sha}"' in lock.split(f"{outputs}.other]")[1].split("\n\n")[0]
    assert "\n[eventlog]\nevents = 30\nmax_seq = 30\n" in lock
    assert "\n[projections.semantic]\n" in lock and "\ntriplets = 200\n" in lock
    loss = json.loads((one / "build/a/semantic/training.json").read_text())["losses"][-1]
    assert f"final_loss = {loss!r}" in lock.split(f"{outputs}.semantic]")[1].split("\n\n")[0]
    # Building again writes nothing; a locked build of the same inputs matches.
    assert executed(run(one)) == set()
    locked = run(one, env={"OXIDIZE_LOCKED": "1"})
    assert "a:lock: build matches recipes/a/oxidize.lock" in locked.stdout
    run(one, "stale", "--locked")
    run(one, "stale", "--check", env={"OXIDIZE_LOCKED": "1"})  # verifying is not staleness


def _field(lock: str, key: str) -> str:
    return next(line.split('"')[1] for line in lock.splitlines() if line.startswith(key + " ="))


def test_locked_mode_fails_naming_each_differing_field(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    run(root)
    lock_file = root / "recipes/a/oxidize.lock"
    committed = lock_file.read_text()
    built_sha = _field(committed, "weights_sha256")

    # A committed lock that says other weights: both checks fail and name the field.
    edited = committed.replace(built_sha, "0" * 64)
    lock_file.write_text(edited)
    proc = run(root, env={"OXIDIZE_LOCKED": "1"}, expect=None)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    field = f'outputs."{lock_key()}".other.weights_sha256'
    assert f'{field}: committed "{"0" * 64}" vs built "{built_sha}"' in out
    assert "Traceback" not in out
    assert lock_file.read_text() == edited  # locked mode never writes the lock
    stale = run(root, "stale", "--locked", expect=1)
    assert f"recipes/a/oxidize.lock: {field}: committed" in stale.stdout
    assert "recipes/b.lock" not in stale.stdout
    assert json.loads(run(root, "stale", "--locked", "--json", "b").stdout) == {"tasks": [], "lock": []}

    # Unlocked, the build rewrites the lock; then locked mode passes again.
    lock_file.write_text(committed)
    recipe = root / "recipes/a/oxidize.yaml"
    # A new seed draws other triplets, so the weights change (more epochs might not: early
    # stopping can keep the same epoch).
    recipe.write_text(recipe.read_text().replace("seed: 7", "seed: 8"))
    proc = run(root, env={"OXIDIZE_LOCKED": "1"}, expect=None)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "recipe_hash: committed" in out and f"{field}: committed" in out
    assert "projections.semantic" not in out  # the other projection did not change
    run(root)
    assert lock_file.read_text() != committed
    run(root, env={"OXIDIZE_LOCKED": "1"})
    run(root, "stale", "--check", "--locked")

    # No lock committed at all.
    (root / "recipes/b.lock").unlink()
    assert "no lock file recipes/b.lock" in run(root, "stale", "--locked", expect=1).stdout
    proc = run(root, "b", env={"OXIDIZE_LOCKED": "1"}, expect=None)
    assert proc.returncode != 0 and "no committed lock file" in proc.stdout + proc.stderr


def _check_cache_and_state(root: Path) -> None:
    """The embedding cache and doit's state are intact, and every text has its vector."""
    cache = sqlite3.connect(root / "build/.cache/embeddings.sqlite")
    try:
        assert cache.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for recipe, projection in (("a", "semantic"), ("a", "other"), ("b", "semantic")):
            model = cache_key(json.loads((root / f"build/{recipe}/model.json").read_text()))
            lines = (root / f"build/{recipe}/{projection}/texts.jsonl").read_text().splitlines()
            texts = [json.loads(line) for line in lines]
            missing = [t for t in texts if cache.execute(
                "SELECT count(*) FROM embeddings WHERE model = ? AND text_sha256 = ?",
                (model, hashlib.sha256(t.encode("utf-8")).digest())).fetchone()[0] != 1]
            assert texts and not missing, (recipe, projection, missing[:3])
    finally:
        cache.close()
    state = sqlite3.connect(root / "build/.doit.db")
    try:
        assert state.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        state.close()
    assert executed(run(root)) == set()
    run(root, "stale", "--check", "--locked")


def test_parallel_runner_builds_every_projection(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    proc = run(root, "-n", "2")
    # Worker processes write to one stdout, so a task's ".  name" line can be glued to
    # another's output: find the markers anywhere, not only at line starts.
    ran = set(re.findall(r"\.  ([\w.-]+:[\w.-]+)", proc.stdout))
    assert ran == {"a:model", "b:model", "a:lock", "b:lock"} | {
        f"{r}:{p}.{s}" for r, p in (("a", "semantic"), ("a", "other"), ("b", "semantic"))
        for s in ("pairs", "embed", "train", "eval", "index")}
    _check_cache_and_state(root)


def test_two_builds_at_once_leave_cache_and_state_intact(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    env = dict(os.environ)
    env.pop("OXIDIZE_MODELS", None)
    env.pop("OXIDIZE_LOCKED", None)
    procs = [subprocess.Popen([sys.executable, "-m", "doit"], cwd=root, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    _check_cache_and_state(root)
