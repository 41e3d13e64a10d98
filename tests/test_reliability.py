"""Reliability, round 2: real logs, real terminals, real mistakes (docs/reliability.md).

Each case runs real ``doit`` processes on a small project (test_errors.py's factory) and
checks what the user sees: one clear line, no traceback, the log unchanged, and a good build
right after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_errors import GOOD_RECIPE, LOG, RECIPE, assert_good_build, make_project, run, snapshot


def _sql(root: Path, statement: str, *args) -> None:
    conn = sqlite3.connect(root / LOG)
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def _add_row(root: Path, event_type: str, data, seq: int = 900, source: str = "s-extra") -> None:
    _sql(root, "INSERT INTO eventlog (seq, event_type, timestamp, source_id, source_file, data) "
               "VALUES (?, ?, '2025-06-01T00:00:00Z', ?, NULL, ?)", seq, event_type, source, data)


def test_a_row_no_projection_reads_never_fails_the_build(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    _add_row(root, "git.commit", 7)  # a number where JSON text belongs, in a type nothing reads
    proc = run(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "oxidize.lock written" in proc.stdout
    # read by a projection, the row is named with plain words, once
    _add_row(root, "session.decision", 7, seq=901)
    proc = run(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out
    assert out.count("row seq=901: data is the number 7, expected text holding a JSON object") == 1


def test_lock_step_says_the_real_cause(tmp_path: Path):
    """A writer holding the log (BEGIN EXCLUSIVE on a rollback-journal database) is named."""
    from oxidize.engine.lockfile import compute_lock
    from oxidize.errors import BuildError
    from oxidize.recipe import load_recipe

    root = make_project(tmp_path / "proj")
    writer = sqlite3.connect(root / LOG, timeout=0)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        recipe = load_recipe(root / RECIPE, "a")
        with pytest.raises(BuildError, match="a:lock: cannot read the event log: .*database is locked"):
            compute_lock(recipe, root)
    finally:
        writer.rollback()
        writer.close()


def test_a_snapshot_mismatch_at_the_lock_step_does_not_leave_the_build_stuck(tmp_path: Path):
    from oxidize.engine.lockfile import _check_same_snapshot
    from oxidize.errors import BuildError
    from oxidize.recipe import load_recipe

    root = make_project(tmp_path / "proj")
    assert_good_build(root)
    pairs_json = root / "build/a/semantic/pairs.json"
    recipe = load_recipe(root / RECIPE, "a")
    stats = json.loads(pairs_json.read_text())
    with pytest.raises(BuildError, match="the event log changed during the build"):
        _check_same_snapshot({"eventlog": {"events": stats["event_count"] + 1,
                                           "max_seq": stats["max_seq"] + 1}}, recipe, root)
    assert not pairs_json.exists()  # so the next `doit` rebuilds the pairs
    proc = run(root)
    assert proc.returncode == 0 and "a:semantic.pairs" in proc.stdout


@pytest.mark.parametrize("bad", ["surrogate", "blob", "text"])
def test_text_that_is_not_clean_unicode_is_skipped_with_one_warning(tmp_path: Path, bad: str):
    root = make_project(tmp_path / "proj")
    if bad == "surrogate":
        _add_row(root, "session.decision", '{"content": "a decision about \\ud800 the cache key"}',
                 source="s0")
    elif bad == "blob":
        _add_row(root, "session.decision", b'{"content": "caf\xe9 \xff about the cache key"}', source="s0")
    else:  # TEXT whose bytes are not UTF-8: what sqlite3 refuses to decode
        _sql(root, "INSERT INTO eventlog (seq, event_type, timestamp, source_id, source_file, data) "
                   "VALUES (900, 'session.decision', '2025-06-01T00:00:00Z', 's0', NULL, "
                   "CAST(X'7B22636F6E74656E74223A2022636166E920FF2061626F757420746865206361636865227D' AS TEXT))")
    before = snapshot(root / "data")
    proc = run(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    warnings = [line for line in out.splitlines() if "not clean Unicode" in line]
    assert warnings and all(w.startswith("oxidize: warning: data/events.db: skipped 1 row(s)") for w in warnings)
    assert "seq 900" in warnings[0] and "Traceback" not in out
    assert run(root, "stale", "--locked").returncode == 0
    assert snapshot(root / "data") == before


def test_notes_without_text_are_counted(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    _add_row(root, "session.decision", '{"content": null}', seq=900, source="s0")
    _add_row(root, "session.decision", '{"content": 12}', seq=901, source="s0")
    proc = run(root)
    assert proc.returncode == 0
    assert ("oxidize: warning: data/events.db: skipped 2 note(s) whose data.content is null or not a "
            "string: seq 900, 901") in proc.stderr


def _same_size_other_log(root: Path) -> Path:
    """A copy of the log with one note changed in place (same length: same file size)."""
    other = root / "data/other.db"
    shutil.copy2(root / LOG, other)
    conn = sqlite3.connect(other)
    conn.execute("UPDATE eventlog SET data = replace(data, 'decision 0', 'DECISION 0') WHERE seq = 1")
    conn.commit()
    conn.close()
    assert other.stat().st_size == (root / LOG).stat().st_size
    return other


def test_a_log_replaced_with_the_same_size_and_time_is_noticed(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    assert_good_build(root)
    other = _same_size_other_log(root)
    st = (root / LOG).stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    subprocess.run(["cp", "-p", str(other), str(root / LOG)], check=True)  # same size, same mtime
    stale = run(root, "stale")
    assert "the event log data/events.db was replaced by a file with other content" in stale.stdout
    proc = run(root)
    assert "a:semantic.pairs" in proc.stdout and proc.returncode == 0
    assert run(root, "stale", "--check").returncode == 0
    # The same file touched: doit's own checker kept the replaced file's old digest (it saw the
    # same mtime), so at most the steps that read the log run again; nothing downstream does.
    os.utime(root / LOG)
    ran = {line[3:] for line in run(root).stdout.splitlines() if line.startswith(".  ")}
    assert ran <= {"a:semantic.pairs", "a:semantic.index", "a:lock"}
    assert run(root, "stale", "--check").returncode == 0


def test_yaml_alias_bomb_is_refused_at_load(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    levels = ['x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"x{i}: &x{i} [{','.join(f'*x{i - 1}' for _ in range(9))}]" for i in range(1, 9)]
    (root / RECIPE).write_text(GOOD_RECIPE + "extra:\n" + "".join(f"  {line}\n" for line in levels))
    start = time.monotonic()
    proc = run(root, "list", timeout=60)
    assert proc.returncode == 3 and time.monotonic() - start < 30
    assert "expands to" in proc.stderr and "YAML aliases" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_during_training_is_one_line_and_exit_130(tmp_path: Path):
    root = make_project(tmp_path / "proj", recipe=GOOD_RECIPE.replace("epochs: 2", "epochs: 200000")
                        .replace("pairs: 100", "pairs: 100\n      patience: null"))
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "train: epoch 2/" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.count("oxidize: interrupted; nothing half-written") == 1
    (root / RECIPE).write_text(GOOD_RECIPE)
    assert_good_build(root)


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    folder = root / "build/a/semantic"
    folder.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        proc = run(root)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out and "PermissionError" not in out
    assert "cannot write in build/a/semantic: permission denied" in out
    assert_good_build(root)


def test_atomic_write_into_a_read_only_folder_names_it(tmp_path: Path, monkeypatch):
    import tempfile

    from oxidize.util.atomic import write_text
    from oxidize.errors import BuildError

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(BuildError, match=f"cannot write in {tmp_path}: permission denied"):
        write_text(tmp_path / "x.json", "{}")


def test_batch_buffers_count_in_the_memory_check(monkeypatch):
    from oxidize.recipe import schema as recipe_mod
    from oxidize.errors import RecipeError

    monkeypatch.setattr(recipe_mod, "physical_memory", lambda: 10 * 2**30)
    data = {"version": 1, "projections": {"semantic": {"layers": [384, 8192, 256], "batch_size": 100000}}}
    with pytest.raises(RecipeError) as info:
        recipe_mod.parse_recipe(data, Path("r.yaml"), "r")
    assert info.value.key == "projections.semantic.batch_size"
    need = recipe_mod.batch_memory(384, 8192, 256, 100000, in_batch=True)  # the default loss
    assert need == 300000 * (384 + 2 * 8192 + 4 * 256 + 1) * 4 + 2 * 100000 ** 2 * 4
    assert f"{need / 2**30:.1f} GiB of minibatch buffers" in str(info.value)
    data["projections"]["semantic"]["training"] = {"loss": "triplet"}  # no B × 2B similarities
    with pytest.raises(RecipeError) as info:
        recipe_mod.parse_recipe(data, Path("r.yaml"), "r")
    need = recipe_mod.batch_memory(384, 8192, 256, 100000)
    assert need == 300000 * (384 + 2 * 8192 + 4 * 256 + 1) * 4
    assert f"{need / 2**30:.1f} GiB of minibatch buffers" in str(info.value)
    data["projections"]["semantic"]["batch_size"] = 32
    recipe_mod.parse_recipe(data, Path("r.yaml"), "r")


def test_training_prints_an_estimated_time(tmp_path: Path):
    root = make_project(tmp_path / "proj", recipe=GOOD_RECIPE.replace("pairs: 100", "pairs: 3000"))
    proc = run(root)
    assert proc.returncode == 0
    assert "a:semantic train: about " in proc.stderr and "per epoch, so up to" in proc.stderr


def test_cache_key_refuses_a_missing_log(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    (root / LOG).rename(root / "data/aside.db")
    proc = run(root, "cache-key")
    assert proc.returncode == 3 and proc.stdout == ""
    assert "recipe a: event log not found: data/events.db" in proc.stderr
