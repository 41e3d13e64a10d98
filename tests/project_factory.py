"""A small oxidize project for end-to-end tests: a tiny ONNX model, two SQLite event logs
in patina's schema, recipe ``a`` with two projections and recipe ``b`` with one.

Used by test_build.py, test_stale.py and test_lock.py.
"""

from __future__ import annotations

from pathlib import Path

from eventlog_factory import make_sqlite_eventlog
from tiny_model import make_tiny_model

RECIPE_A = """\
version: 1
embedding_model: tiny
model_dir: ../../model
eventlog: ../../events.db
projections:
  semantic:
    layers: [null, 16, 8]
    epochs: 2
    batch_size: 16
    training:
      pairs: 200
  other:
    layers: [null, 12, 4]
    epochs: 1
    batch_size: 8
    training:
      pairs: 100
      seed: 7
"""

RECIPE_B = """\
version: 1
embedding_model: tiny
model_dir: ../model
eventlog: ../other.db
projections:
  semantic:
    layers: [null, 16, 8]
    epochs: 1
    batch_size: 16
    training:
      pairs: 100
"""


def sessions(prefix: str, n_sessions: int, per_session: int) -> dict[str, list[str]]:
    topics = ["database migration schema", "parser token grammar", "cache key eviction",
              "release build pipeline", "network retry timeout", "test fixture mock"]
    return {f"{prefix}-session-{s}": [f"decision {i} in {prefix} session {s} about the "
                                      f"{topics[s % len(topics)]} and its consequences"
                                      for i in range(per_session)]
            for s in range(n_sessions)}


def make_project(root: Path, recipe_a: str = RECIPE_A) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    make_tiny_model(root / "model", dim=8)
    make_sqlite_eventlog(root / "events.db", sessions("a", 6, 5))
    make_sqlite_eventlog(root / "other.db", sessions("b", 4, 4))
    (root / "recipes" / "a").mkdir(parents=True)
    (root / "recipes" / "a" / "oxidize.yaml").write_text(recipe_a)
    (root / "recipes" / "b.yaml").write_text(RECIPE_B)
    return root


def cached_rows(root: Path) -> int:
    """Rows in the project's embedding cache (0 while it does not exist yet), read-only."""
    import sqlite3

    path = root / "build/.cache/embeddings.sqlite"
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # not created yet
