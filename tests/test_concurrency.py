"""Two builds at once, and an event log written while it is read.

* Two real ``doit`` processes on one project: the second waits for the first and says so,
  naming ``build/.lock``; it finds everything built and runs nothing. Read-only commands
  (``list``, ``info``) never wait. A holder killed with ``kill -9`` releases the lock (the
  OS drops it), and the waiting build carries on. ``doit -n 2`` (forked workers inside the
  lock) works. Afterwards the embedding cache and doit's state pass ``PRAGMA
  integrity_check`` and a following ``doit`` runs nothing.
* The event log is read as one snapshot: rows another process appends while pairs are being
  generated are not seen (WAL mode: the writer goes ahead; rollback-journal mode: the writer
  waits for the read to end), and the input file is opened read-only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from eventlog_factory import make_sqlite_eventlog
from test_errors import make_project, run, sessions
# _no_stray_processes is an autouse fixture: imported, it kills what this module's tests start
# (they append to the same _started list).
from test_interrupt import (TIMEOUT, _no_stray_processes, _started, cached_rows,  # noqa: F401
                            integrity_ok, varied_sessions)

# doit whose embedding stops after its first chunk for as long as the file named by
# $HOLD exists: the test decides when the first build may go on, so the two builds surely
# overlap without any assumption about how long anything takes.
HELD_DOIT = textwrap.dedent("""
    import os, sys, time
    import oxidize.embed.cache as embed_cache
    from oxidize.embed import encoder

    embed_cache.CHUNK = 40
    encode = encoder.Encoder.encode
    calls = []

    def held_encode(self, texts, *args, **kwargs):
        if calls:
            while os.path.exists(os.environ["HOLD"]):
                time.sleep(0.02)
        calls.append(1)
        return encode(self, texts, *args, **kwargs)

    encoder.Encoder.encode = held_encode
    from doit.doit_cmd import DoitMain
    sys.exit(DoitMain().run(sys.argv[1:]))
""")


def start(root: Path, *args: str, hold: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("OXIDIZE_MODELS", None)
    if hold is not None:
        hold.touch()
        env["HOLD"] = str(hold)
    cmd = [sys.executable, "-c", HELD_DOIT] if hold else [sys.executable, "-m", "doit"]
    # A shell running us in the background (CI may) starts us with SIGINT ignored, and a
    # child would inherit that: give it the default, as a terminal would.
    proc = subprocess.Popen([*cmd, *args], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _started.append(proc)
    return proc


def poll_until(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def lock_holder(root: Path) -> str:
    try:
        return (root / "build/.lock").read_text().strip()
    except OSError:
        return ""


def assert_consistent_and_done(root: Path) -> None:
    assert integrity_ok(root / "build/.cache/embeddings.sqlite")
    assert integrity_ok(root / "build/.doit.db")
    again = run(root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "\n.  " not in "\n" + again.stdout, again.stdout  # nothing left to run


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj", log_sessions=varied_sessions(20, 40))


def start_held_build(root: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """A build that is embedding and holds the lock until the returned file is removed."""
    hold = root.parent / "hold"
    first = start(root, *args, hold=hold)
    poll_until(lambda: cached_rows(root) > 0, "the first build to be embedding", first)
    assert lock_holder(root) == str(first.pid)
    return first, hold


def assert_waiting(proc: subprocess.Popen, holder: subprocess.Popen) -> None:
    """The process's first line on stderr says it waits, for whom, and names the lock."""
    line = proc.stderr.readline()
    assert line == (f"oxidize: waiting for another build of this project (pid {holder.pid}) to "
                    f"finish; it holds the lock build/.lock\n")


def test_second_build_waits_for_the_first_and_then_runs_nothing(project: Path):
    first, hold = start_held_build(project)
    second = start(project)
    assert_waiting(second, first)
    # read-only commands meanwhile neither wait nor take the lock
    listed = run(project, "list", "--all")
    assert listed.returncode == 0 and "a:semantic.train" in listed.stdout
    assert "waiting" not in listed.stderr
    info = run(project, "info", "a:semantic.train")  # exit 1: "not up to date"
    assert info.returncode in (0, 1) and "a:semantic.train" in info.stdout
    assert "waiting" not in info.stderr
    assert second.poll() is None  # still waiting
    hold.unlink()
    code1, out1, err1 = finish(first)
    code2, out2, err2 = finish(second)
    assert code1 == 0, out1 + err1
    assert code2 == 0, out2 + err2
    assert "oxidize: the other build has finished; continuing" in err2
    assert "\n.  " not in "\n" + out2, out2  # the first built everything
    assert "Traceback" not in err1 + err2
    assert_consistent_and_done(project)


def test_killed_holder_releases_the_lock_and_the_waiting_build_finishes(project: Path):
    first, _hold = start_held_build(project)
    done_before = cached_rows(project)
    second = start(project)
    assert_waiting(second, first)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=TIMEOUT)
    code, out, err = finish(second)
    assert code == 0, out + err
    assert ".  a:semantic.embed" in out
    assert "Traceback" not in err
    cached = int(out.split(" from the cache")[0].rsplit(", ", 1)[1].replace(",", ""))
    assert cached >= done_before > 0
    assert_consistent_and_done(project)


def test_parallel_runner_inside_the_lock(project: Path):
    """``doit -n 2`` forks workers after the lock is taken; they must not wait for it."""
    first, hold = start_held_build(project, "-n", "2")
    second = start(project, "-n", "2")
    assert_waiting(second, first)
    hold.unlink()
    code1, out1, err1 = finish(first)
    code2, out2, err2 = finish(second)
    assert (code1, code2) == (0, 0), out1 + err1 + out2 + err2
    assert "Traceback" not in err1 + err2
    assert ".  a:semantic.train" in out1
    assert "\n.  " not in "\n" + out2, out2
    assert_consistent_and_done(project)


# --------------------------------------------------------------------------- the event log


APPEND = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from eventlog_factory import append_session
    append_session(sys.argv[1], "late-session", [f"late note {i} about the cache key and the build"
                                                 for i in range(5)], timeout=float(sys.argv[2]))
""")


class AppendWhileReading:
    """An event log that, once the first event has been read, has another process append."""

    def __init__(self, log, path: Path, wait_for_append: bool):
        self.log, self.path, self.wait = log, path, wait_for_append
        self.appender: subprocess.Popen | None = None

    def __getattr__(self, name):
        return getattr(self.log, name)

    def events(self, types=None):
        for i, event in enumerate(self.log.events(types)):
            if i == 0 and self.appender is None:
                tests = str(Path(__file__).parent)
                self.appender = subprocess.Popen([sys.executable, "-c", APPEND, str(self.path),
                                                  "60", tests])
                if self.wait:  # WAL: the writer is not blocked by our read; let it commit
                    assert self.appender.wait(timeout=TIMEOUT) == 0
            yield event


def _training():
    from oxidize.recipe import parse_recipe

    recipe = parse_recipe({"version": 1, "projections": {"semantic": {"training": {"pairs": 200}}}},
                          Path("x.yaml"), "x")
    return recipe.projection("semantic").training


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_pairs_come_from_one_snapshot_while_another_process_appends(tmp_path: Path, journal_mode: str):
    from oxidize.eventlog import open_eventlog
    from oxidize.pairs import generate_pairs

    path = make_sqlite_eventlog(tmp_path / "events.db", sessions(8, 6), journal_mode=journal_mode)
    before = shutil.copy(path, tmp_path / "before.db")
    with open_eventlog(before) as log:
        expected = generate_pairs(log, _training())

    with open_eventlog(path) as log:
        wrapped = AppendWhileReading(log, path, wait_for_append=journal_mode == "wal")
        got = generate_pairs(wrapped, _training())
        if journal_mode == "delete":  # the writer waits for our read transaction
            assert wrapped.appender.poll() is None
    assert wrapped.appender.wait(timeout=TIMEOUT) == 0  # and then goes ahead

    assert got.texts == expected.texts
    assert not any("late note" in t for t in got.texts)
    np.testing.assert_array_equal(got.triplets, expected.triplets)
    assert got.stats == expected.stats
    with open_eventlog(path) as log:  # the append did land, for the next build
        assert log.stats().max_seq == expected.stats["max_seq"] + 5


def test_eventlog_is_opened_read_only(tmp_path: Path):
    from oxidize.eventlog import open_eventlog

    path = make_sqlite_eventlog(tmp_path / "events.db", sessions(2, 3), journal_mode="delete")
    with open_eventlog(path) as log:
        import sqlite3

        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            log._db().execute("DELETE FROM eventlog")
    os.chmod(path, 0o444)  # a log the user cannot write is fine too
    try:
        with open_eventlog(path) as log:
            assert log.stats().count == 6
    finally:
        os.chmod(path, 0o644)


def test_ctrl_c_while_waiting_is_a_plain_message(tmp_path: Path):
    import fcntl

    root = make_project(tmp_path / "proj")
    (root / "build").mkdir()
    fd = os.open(root / "build/.lock", os.O_RDWR | os.O_CREAT)  # this test holds the lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = start(root)
        assert "waiting for another build" in waiting.stderr.readline()
        waiting.send_signal(signal.SIGINT)
        code, out, err = finish(waiting)
    finally:
        os.close(fd)
    assert code == 3
    assert err == "ERROR: oxidize: interrupted while waiting for the lock build/.lock; nothing was built\n"
    assert not (root / "build/a").exists()
