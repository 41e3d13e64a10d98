"""Reliability, round 3: caches that heal, a full disk in one line, inputs that are not what
they seem — each case as a user meets it, end to end on the small project of
project_factory.py (docs/reliability.md has a row for each)."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from project_factory import make_project


def run(root: Path, *args: str, env: dict | None = None, fsize: int | None = None,
        timeout: int = 300) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("OXIDIZE_LOCKED", "OXIDIZE_EXECUTOR")}
    limit = None
    if fsize is not None:
        def limit():  # ulimit -f: a write past this many bytes fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, env=full | (env or {}),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


def one_line(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("rel3") / "proj")
    proc = run(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(built, tmp_path / "proj", symlinks=True))


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def weights(root: Path) -> bytes:
    return (root / "build/a/semantic/weights.safetensors").read_bytes()


# ------------------------------------------------------------------ caches heal

def test_a_damaged_embedding_cache_is_set_aside_and_rebuilt(project: Path, built: Path):
    cache = project / "build/.cache/embeddings.sqlite"
    cut_in_half(cache)
    (project / "build/a/semantic/embeddings.npy").unlink()  # something must be embedded
    proc = run(project)
    out = one_line(proc)
    assert proc.returncode == 0, out[-3000:]
    warnings = [line for line in out.splitlines() if "was damaged" in line]
    assert len(warnings) == 1 and warnings[0].startswith("oxidize: warning: embedding cache ")
    kept = list((project / "build/.cache/damaged").iterdir())
    assert [p.name.split(".20")[0] for p in kept] == ["embeddings.sqlite"]
    assert sqlite3.connect(cache).execute("SELECT count(*) FROM embeddings").fetchone()[0] > 0
    assert weights(project) == weights(built)
    assert run(project).returncode == 0  # and it stays healed


def test_a_damaged_state_file_costs_checks_not_embedding(project: Path, built: Path):
    cut_in_half(project / "build/.doit.db")
    proc = run(project)
    out = one_line(proc)
    assert proc.returncode == 0, out[-3000:]
    assert sum("doit's state build/.doit.db was damaged" in line for line in out.splitlines()) == 1
    embedded = [line for line in out.splitlines() if "embedded" in line and "from the cache" in line]
    assert embedded and all(" embedded 0 texts" in line or " 0 embedded" in line for line in embedded), embedded
    assert weights(project) == weights(built)
    assert any(p.name.startswith(".doit.db.") for p in (project / "build/damaged").iterdir())
    again = run(project)
    assert again.returncode == 0 and "was damaged" not in again.stdout + again.stderr


def test_a_graph_damaged_in_place_is_caught_by_its_content(project: Path, built: Path):
    entries = [p for p in (project / "build/.cache/onnx").iterdir() if p.is_dir() and p.name != "damaged"]
    assert entries
    graph = entries[0] / "model.onnx"
    data = bytearray(graph.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)  # same size, other bytes
    graph.write_bytes(bytes(data))
    (project / "build/a/semantic/embeddings.npy").unlink()
    (project / "build/.cache/embeddings.sqlite").unlink()  # so the graph must embed again
    proc = run(project)
    out = one_line(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "optimised-graph cache" in out and "differs from what was written" in out
    assert (project / "build/a/semantic/embeddings.npy").read_bytes() == \
        (built / "build/a/semantic/embeddings.npy").read_bytes()


# ------------------------------------------------------------------ no room to write

@pytest.mark.parametrize("fsize", [4096, 20_000, 40_000])
def test_a_full_disk_is_one_line_and_the_next_build_recovers(project: Path, fsize: int):
    """A file size limit (ulimit -f: writes past it fail with EFBIG) stands in for a full
    disk; each limit stops the build at another write (the log's temporary files, the
    cache, the outputs, the index)."""
    for name in ("index.usearch", "base.npy", "projected.npy", "keys.npy", "index.sqlite", "embeddings.npy",
                 "weights.safetensors", "texts.jsonl"):
        (project / "build/a/semantic" / name).unlink(missing_ok=True)
    (project / "build/.cache/embeddings.sqlite").unlink()
    proc = run(project, fsize=fsize)
    out = one_line(proc)
    failed = [line for line in out.splitlines() if " failed (" in line]
    if proc.returncode == 0:
        pytest.skip(f"a limit of {fsize} bytes stopped no write of this small project")
    assert failed and "file too large (the file size limit" in failed[0], out[-2000:]
    leftovers = [p for p in (project / "build").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    proc = run(project)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    hits = json.loads(run(project, "query", "-p", "a:semantic", "--json", "-k", "2", "cache").stdout)
    assert len(hits) == 2


def test_no_room_is_named_for_every_errno(tmp_path: Path):
    import errno

    from oxidize.util.atomic import atomic_path
    from oxidize.errors import BuildError

    for code, words in ((errno.ENOSPC, "no space left"), (errno.EDQUOT, "quota"), (errno.EFBIG, "too large")):
        with pytest.raises(BuildError) as err:
            with atomic_path(tmp_path / "out.bin") as tmp:
                tmp.write_bytes(b"x")
                raise OSError(code, os.strerror(code))
        assert str(err.value).startswith(f"cannot write {tmp_path / 'out.bin'}: ") and words in str(err.value)
        assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ inputs that are not what they seem

def test_build_folders_of_the_wrong_kind_are_one_line(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    (root / "build").write_text("not a folder")
    for args in ((), ("stale",), ("query", "x")):
        proc = run(root, *args)
        assert proc.returncode == 3 and "build is a file, not a folder" in one_line(proc)
    (root / "build").unlink()
    (root / "build").mkdir()
    (root / "build/.cache").write_text("not a folder")
    proc = run(root)
    assert proc.returncode == 3 and "build/.cache is a file, not a folder" in one_line(proc)


def test_a_lock_of_random_bytes_is_one_line(project: Path):
    lock = project / "recipes/a/oxidize.lock"
    lock.write_bytes(bytes(range(128, 256)) * 3)
    for args, env in (((), {"OXIDIZE_LOCKED": "1"}), (("stale", "--locked"), {})):
        proc = run(project, *args, env=env)
        assert proc.returncode != 0
        assert "oxidize.lock: not a lock file (not UTF-8 text" in one_line(proc)


def test_a_bad_executor_is_refused_before_any_step(project: Path):
    (project / "build/a/semantic/weights.safetensors").unlink()
    proc = run(project, env={"OXIDIZE_EXECUTOR": "local:²"})
    assert proc.returncode == 3 and "$OXIDIZE_EXECUTOR is 'local:²'" in one_line(proc)
    assert ".  a:" not in proc.stdout  # nothing ran


def test_a_fifo_or_a_symlink_loop_as_the_log_is_named(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    log = root / "events.db"
    log.unlink()
    os.mkfifo(log)
    for args in ((), ("cache-key",)):
        proc = run(root, *args, timeout=60)
        assert proc.returncode == 3 and "is a FIFO (named pipe), not a file" in one_line(proc)
    log.unlink()
    log.symlink_to(root / "loop")
    (root / "loop").symlink_to(log)
    proc = run(root, timeout=60)
    assert proc.returncode == 3 and "events.db is a symlink loop" in one_line(proc)


@pytest.mark.parametrize("name", ["lock", "model"])
def test_a_projection_named_like_a_recipe_task_is_a_recipe_error(tmp_path: Path, name: str):
    root = make_project(tmp_path / "proj")
    recipe = root / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("  other:", f"  {name}:"))
    proc = run(root, "list")
    assert proc.returncode == 3
    assert f"projections.{name}: projection name '{name}' is taken by the recipe's task a:{name}" in one_line(proc)


def test_a_recipe_edited_while_training_never_reaches_the_lock(project: Path):
    recipe = project / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("epochs: 2", "epochs: 3"))
    # The edit lands after the weights were trained: the lock step runs alone (-s).
    proc = run(project, "-s", "a:lock")
    assert proc.returncode != 0
    assert "its weights were made with other keys than" in one_line(proc)
    stale = run(project, "stale", "--locked")
    assert stale.returncode != 0 and "Traceback" not in stale.stdout + stale.stderr
    assert run(project).returncode == 0  # a full build retrains, and the lock follows
    assert run(project, "stale", "--locked").returncode == 0


def test_a_jsonl_log_too_large_for_memory_is_one_line(tmp_path: Path, monkeypatch):
    from oxidize.errors import EventLogError
    from oxidize.eventlog import open_eventlog
    from oxidize.eventlog.jsonl import JsonlEventLog

    log = tmp_path / "events.jsonl"
    log.write_text('{"seq": 1, "event_type": "x", "timestamp": "t", "source_id": "s", "data": {}}\n')

    def no_memory(self, lineno, line):
        raise MemoryError

    monkeypatch.setattr(JsonlEventLog, "_parse_line", no_memory)
    with pytest.raises(EventLogError, match="does not fit in the memory this process may use"):
        open_eventlog(log)


def test_an_empty_query_argument_is_one_line(project: Path):
    proc = subprocess.run([sys.executable, "-m", "oxidize.engine.cli", "query", ""], cwd=project,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "give the text to search for" in one_line(proc)
