"""Helpers shared by the benchmark scripts: timing, machine facts, generated data.

Every benchmark prints its figures next to a baseline measured in the same run, so a figure
taken on a busy machine (other builds on the same two cores) still compares like with like:
repeat, take medians, report ratios.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_DB = REPO.parent / "shared" / "data" / "patina-dev.db"
if not DATA_DB.is_file():  # the shared folder sits beside the work tree (…/shared/data)
    DATA_DB = Path("/work/shared/data/patina-dev.db")


def median_time(func, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``func()`` over ``repeats`` runs (after ``warmup`` untimed runs)."""
    for _ in range(warmup):
        func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def interleaved(funcs: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median time of each callable, run in alternation so that load drift hits all alike."""
    for _ in range(warmup):
        for f in funcs.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in funcs}
    for _ in range(repeats):
        for name, f in funcs.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def run(cmd, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def versions() -> dict[str, str]:
    """Versions of the libraries the benchmarks exercise (those that import)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("oxidize", "doit", "numpy", "numba", "onnxruntime", "tokenizers", "torch",
                 "sentence-transformers", "scipy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                       "OMP_NUM_THREADS") if k in os.environ}
    return f"{cpu}, {os.cpu_count()} cores" + (f", {blas}" if blas else "")


def header(title: str) -> None:
    print(f"\n== {title}")
    print(f"machine: {machine()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)


# --------------------------------------------------------------------------- generated data

_SUBJECTS = ["the parser", "the cache", "the scheduler", "the importer", "the CLI", "the index",
             "the migration", "the retry loop", "the config loader", "the test suite", "the lock file",
             "the embedding step", "the trainer", "the event log reader", "the build graph", "the API client"]
_VERBS = ["failed on", "was slow with", "mishandled", "silently dropped", "now validates", "caches",
          "streams", "retries", "rejects", "sorts", "deduplicates", "logs", "batches", "normalises"]
_OBJECTS = ["empty input", "unicode file names", "very long lines", "concurrent writers", "stale entries",
            "missing keys", "large batches", "nested tables", "timeouts", "duplicate rows",
            "relative paths", "old schema versions", "partial writes", "negative numbers"]
_TAILS = ["after the last refactor", "under load", "on a fresh clone", "in CI only", "since the upgrade",
          "when the disk is full", "for the second time", "with a clear error now", "and we added a test",
          "so we moved it behind a flag", "which halves the build time", "", "", ""]


def sentence(rng: random.Random, n: int) -> str:
    """A short varied software-work sentence; ``n`` makes it unique."""
    tail = rng.choice(_TAILS)
    return (f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            f"{' ' + tail if tail else ''} (note {n}).")


def make_eventlog(path: Path, n_events: int, per_session: int = 20, seed: int = 0,
                  start_seq: int = 1, session_offset: int = 0) -> None:
    """Write (or append to) a patina-schema SQLite event log of ``n_events`` observation events.

    Events are ``session.decision|pattern|observation`` with unique short texts, grouped into
    sessions of ``per_session`` events.
    """
    rng = random.Random(seed)
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE IF NOT EXISTS eventlog (seq INTEGER PRIMARY KEY, event_type TEXT, "
                 "timestamp TEXT, source_id TEXT, source_file TEXT, data JSON)")
    types = ("session.decision", "session.pattern", "session.observation")

    def rows():
        for i in range(n_events):
            seq = start_seq + i
            session = session_offset + i // per_session
            yield (seq, types[i % 3], "2025-01-01T00:00:00Z", f"s{session:07d}", f"s{session}.md",
                   json.dumps({"content": sentence(rng, seq)}))

    with conn:
        conn.executemany("INSERT INTO eventlog VALUES (?, ?, ?, ?, ?, ?)", rows())
    conn.close()


def oxidize_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    if extra:
        env.update(extra)
    return env


def python() -> str:
    return sys.executable
