"""A build killed with ``kill -9`` loses nothing that was finished, and leaves nothing false.

A real ``doit`` process is started on a tmp project and killed with SIGKILL while it is
embedding (once the embedding cache holds some rows) or training (once it printed an epoch
line). Then:

* every file that exists under a target's name loads (no half-written target is accepted);
* the next ``doit`` finishes the build and exits 0, taking every text embedded before the
  kill from the cache ("N from the cache" > 0) and re-running no task that had finished;
* temporary files (``.<target>.tmp-*``) are never targets, and the next build removes them.

To make the window wide enough to hit without timing assumptions, the killed process is
doit driven by a small script that slows the work down (small embedding chunks and a pause
per chunk; a pause per training epoch). The test waits for an observable condition (rows in
the cache, an epoch line) — never for a fixed time — and the follow-up build is plain doit.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from project_factory import cached_rows
from test_errors import make_project, run
from tiny_model import WORDS

RECIPE = """\
version: 1
embedding_model: tiny
model_dir: ../../model
eventlog: ../../data/events.db
projections:
  semantic:
    layers: [null, 16, 8]
    epochs: 40
    batch_size: 64
    training:
      pairs: 500
      patience: null
"""

# doit, with the embedding (small chunks, a pause of $SLOW_EMBED s per chunk) and the training
# (a pause of $SLOW_EPOCH s per epoch) slowed down; the actions run in this process.
SLOW_DOIT = textwrap.dedent("""
    import os, sys, time
    import oxidize.embed.cache as embed_cache
    from oxidize.embed import encoder

    embed_cache.CHUNK = 40
    encode = encoder.Encoder.encode

    def slow_encode(self, texts, *args, **kwargs):
        time.sleep(float(os.environ["SLOW_EMBED"]))
        return encode(self, texts, *args, **kwargs)

    encoder.Encoder.encode = slow_encode

    from oxidize.train import kernels
    train_epoch = kernels.train_epoch

    def slow_epoch(*args):
        time.sleep(float(os.environ["SLOW_EPOCH"]))
        return train_epoch(*args)

    kernels.train_epoch = slow_epoch

    from doit.doit_cmd import DoitMain
    sys.exit(DoitMain().run(sys.argv[1:]))
""")

TIMEOUT = 120.0


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """A failing assertion must not leave a slowed or held build running: kill what this test
    started (test_concurrency.py imports this fixture and list too)."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def start_slow_doit(root: Path, embed_pause: float = 0.1, epoch_pause: float = 0.3) -> subprocess.Popen:
    env = dict(os.environ, SLOW_EMBED=str(embed_pause), SLOW_EPOCH=str(epoch_pause))
    env.pop("OXIDIZE_MODELS", None)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DOIT], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _started.append(proc)
    return proc


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    """Poll ``condition()`` until true; fail if the process ends first or TIMEOUT passes."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"doit ended (exit {proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> str:
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    return out


def assert_every_target_loads(root: Path) -> list[Path]:
    """Each file under a target's name is complete; returns the temporary files found."""
    from safetensors.numpy import load_file

    out = root / "build/a/semantic"
    temporaries = []
    for path in sorted(out.iterdir()) if out.exists() else []:
        if path.name.startswith(".") and ".tmp-" in path.name:
            temporaries.append(path)
        elif path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)  # a truncated file would not load
            # related.npy is empty for same_session (its groups are in groups.npy), and
            # validation.npy when the held-out sessions all share one moment
            assert array.size > 0 or path.name in ("related.npy", "validation.npy"), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            assert all(isinstance(json.loads(line), str) for line in path.read_text().splitlines())
        elif path.suffix == ".safetensors":
            assert "w1" in load_file(str(path)), path
    if (out / "embeddings.npy").exists():
        texts = (out / "texts.jsonl").read_text().splitlines()
        assert np.load(out / "embeddings.npy").shape == (len(texts), 8)
    return temporaries


def integrity_ok(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def varied_sessions(n_sessions: int, per_session: int) -> dict[str, list[str]]:
    """Distinct texts in the tiny model's vocabulary, so that their embeddings differ too."""
    rng = np.random.default_rng(0)
    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    for s in range(n_sessions):
        texts = out.setdefault(f"s{s}", [])
        while len(texts) < per_session:
            text = " ".join(rng.choice(WORDS, size=12))
            if text not in seen:
                seen.add(text)
                texts.append(text)
    return out


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    # 1,200 texts: 24 sessions × 50
    return make_project(tmp_path / "proj", RECIPE, varied_sessions(24, 50))


def test_kill_during_embedding_keeps_what_was_embedded(project: Path):
    proc = start_slow_doit(project)
    wait_for(lambda: cached_rows(project) >= 80, proc, "the first embeddings are cached")
    kill9(proc)
    done_before = cached_rows(project)
    assert 80 <= done_before < 1200, "the kill was meant to land mid-embedding"
    assert not (project / "build/a/semantic/embeddings.npy").exists()
    assert_every_target_loads(project)
    assert integrity_ok(project / "build/.cache/embeddings.sqlite")

    again = run(project)
    assert again.returncode == 0, again.stdout + again.stderr
    # the pairs task finished before the kill and its record was committed then
    assert "-- a:semantic.pairs" in again.stdout
    embed = json.loads((project / "build/a/semantic/embed.json").read_text())
    assert embed["cached"] >= done_before > 0
    assert embed["cached"] + embed["embedded"] == 1200
    assert f"{embed['cached']:,} from the cache" in again.stdout
    assert assert_every_target_loads(project) == []
    assert integrity_ok(project / "build/.cache/embeddings.sqlite")
    assert integrity_ok(project / "build/.doit.db")
    assert "\n.  " not in "\n" + run(project).stdout  # and then nothing is left to do


def test_kill_during_training_rebuilds_only_the_weights(project: Path):
    proc = start_slow_doit(project, embed_pause=0)
    lines: list[str] = []

    def epoch_line() -> bool:
        line = proc.stdout.readline()  # blocks for at most one line; the process is running
        lines.append(line)
        return "train: epoch 2/40" in line

    wait_for(epoch_line, proc, "training to reach its second epoch")
    kill9(proc)
    assert not (project / "build/a/semantic/weights.safetensors").exists()
    assert_every_target_loads(project)

    again = run(project)
    assert again.returncode == 0, again.stdout + again.stderr
    # pairs and embeddings had finished: only the training runs again
    assert "-- a:semantic.pairs" in again.stdout and "-- a:semantic.embed" in again.stdout
    assert ".  a:semantic.train" in again.stdout
    assert assert_every_target_loads(project) == []
    assert integrity_ok(project / "build/.doit.db")


def test_temporary_files_of_a_killed_build_are_not_targets_and_are_removed(tmp_path: Path):
    project = make_project(tmp_path / "proj")
    assert run(project).returncode == 0
    out = project / "build/a/semantic"
    # what kill -9 in the middle of atomic writes leaves: temporaries beside the targets,
    # and a target that was never renamed into place
    (out / ".weights.safetensors.tmp-abc123").write_bytes(b"half a file")
    (out / ".embeddings.npy.tmp-def456.npy").write_bytes(b"\x93NUMPY")
    (out / "weights.safetensors").unlink()
    proc = run(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ".  a:semantic.train" in proc.stdout  # the missing target is rebuilt
    assert assert_every_target_loads(project) == []  # and the temporaries are gone
    # a read-only command takes no lock and leaves other files alone
    (out / ".pairs.json.tmp-xyz").write_text("{")
    assert run(project, "list").returncode == 0
    assert (out / ".pairs.json.tmp-xyz").exists()
