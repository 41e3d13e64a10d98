"""Build small event logs in patina's exact SQLite schema, for tests.

Why a helper: the pairs and integration tests need real SQLite files that behave like
patina's (``AUTOINCREMENT`` seq, ``CHECK(json_valid(data))``, a ``co_changes`` table) but
must never depend on the development database. The schema below is copied from what
patina's ``scrape`` writes. Databases are created in WAL mode so a test can append from
another connection while oxidize holds its read snapshot (pass ``journal_mode="delete"``
for patina's default rollback journal).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS eventlog (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_type TEXT NOT NULL,
        timestamp TEXT NOT NULL, source_id TEXT NOT NULL, source_file TEXT, data JSON NOT NULL, CHECK(json_valid(data)));
CREATE INDEX IF NOT EXISTS idx_eventlog_type ON eventlog(event_type);
CREATE INDEX IF NOT EXISTS idx_eventlog_source ON eventlog(source_id);
CREATE TABLE IF NOT EXISTS co_changes (file_a TEXT, file_b TEXT, count INTEGER, PRIMARY KEY (file_a, file_b));
"""

_EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=timezone.utc)


def _timestamp(seq: int) -> str:
    """A deterministic ISO timestamp that increases with ``seq`` (one minute apart)."""
    return (_EPOCH + timedelta(minutes=seq)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _insert(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str | None, dict]], start_seq: int) -> int:
    """Insert ``(event_type, source_id, source_file, data)`` rows; return the last seq (0 if none)."""
    current = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM eventlog").fetchone()[0]
    seq = max(start_seq, current + 1)
    last = 0
    for event_type, source_id, source_file, data in rows:
        conn.execute(
            "INSERT INTO eventlog (seq, event_type, timestamp, source_id, source_file, data) VALUES (?, ?, ?, ?, ?, ?)",
            (seq, event_type, _timestamp(seq), source_id, source_file, json.dumps(data)))
        last = seq
        seq += 1
    return last


def _commit_row(index: int, commit: Any) -> tuple[str, str, str | None, dict]:
    if isinstance(commit, Mapping):
        message, files = commit["message"], list(commit.get("files", ()))
        sha = commit.get("sha") or f"{index + 1:040x}"
    else:
        message, files = commit
        files, sha = list(files), f"{index + 1:040x}"
    return ("git.commit", sha, None, {"message": message, "author": "test", "files": files})


def make_sqlite_eventlog(path: Path | str, sessions: Mapping[str, Sequence[str]], *,
                         event_type: str = "session.decision", commits: Iterable[Any] = (),
                         start_seq: int = 1, co_changes: Iterable[tuple[str, str, int]] = (),
                         journal_mode: str = "wal") -> Path:
    """Create (or extend) a patina-schema event log at ``path``.

    Args:
        path: the database file; created with its tables if missing, appended to otherwise.
        sessions: session id → texts; each text becomes one ``event_type`` event with
            ``data.content``, ``source_id`` = the session id, in dict order.
        event_type: the type of every session event.
        commits: ``git.commit`` events after the sessions, each a ``(message, files)`` tuple
            or a mapping with ``message``, ``files`` and optionally ``sha``.
        start_seq: seq of the first new row (or the next free seq, if higher).
        co_changes: rows for the ``co_changes`` table.
        journal_mode: ``"wal"`` (default) or ``"delete"``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA journal_mode={'wal' if journal_mode == 'wal' else 'delete'}")
        conn.executescript(SCHEMA)
        rows = [(event_type, sid, f"layer/sessions/{sid}.md", {"content": text})
                for sid, texts in sessions.items() for text in texts]
        rows += [_commit_row(i, c) for i, c in enumerate(commits)]
        _insert(conn, rows, start_seq)
        conn.executemany("INSERT OR REPLACE INTO co_changes (file_a, file_b, count) VALUES (?, ?, ?)",
                         list(co_changes))
        conn.commit()
    finally:
        conn.close()
    return path


def append_session(path: Path | str, session_id: str, texts: Sequence[str], *,
                   event_type: str = "session.decision", timeout: float = 0.2) -> int:
    """Append one session's texts to an existing log, as patina would; return the last seq.

    Raises:
        sqlite3.OperationalError: the database is locked (e.g. a rollback-journal database
            while a reader holds its snapshot) for longer than ``timeout`` seconds.
    """
    conn = sqlite3.connect(Path(path), timeout=timeout)
    try:
        last = _insert(conn, [(event_type, session_id, f"layer/sessions/{session_id}.md", {"content": t})
                              for t in texts], 1)
        conn.commit()
    finally:
        conn.close()
    return last
