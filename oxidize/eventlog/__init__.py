"""Read-only access to the event log: patina's SQLite database, or a JSONL file.

Why this module exists: every pair generator needs the same few things from the log —
events of some types in ``seq`` order, how many rows there are, the highest ``seq`` — and
each of them must get those from **one consistent snapshot** of a file that patina may be
appending to while oxidize builds. Putting the reading in one place lets the rules below
hold everywhere:

* **Never write to the user's log.** SQLite is opened through a ``file:…?mode=ro`` URI, so
  even a bug cannot change it. ``immutable=1`` is deliberately *not* set: it would make
  SQLite skip locking and could read a half-committed page while patina writes.
* **One snapshot.** The SQLite backend opens a read transaction (``BEGIN`` plus a first
  read) when the log is opened and keeps it until :meth:`EventLog.close`. Every query —
  ``stats()``, ``events()``, ``co_changes()`` — therefore sees the same rows even while
  another process appends. In WAL mode the appender is not blocked; in rollback-journal
  mode (patina's default) it waits for our read to end, so keep an ``EventLog`` open only
  as long as a build step reads it. The JSONL backend reads the whole file once, at open.
* **Messages name the file and the row.** A broken log is a user's problem to fix; the
  :class:`~oxidize.errors.EventLogError` says which file, which row or line, and what was
  expected instead.

The JSONL backend exists so a project can ship a small, reviewable text fixture as its
example event log (``recipes/example/events.jsonl``): one JSON object per line with the
fields ``seq``, ``event_type``, ``timestamp``, ``source_id``, ``source_file`` (optional)
and ``data`` (an object). ``co_changes()`` is ``None`` for it.

No numpy here: doit imports task modules when it merely lists tasks.
"""

from __future__ import annotations

import os

import json

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oxidize.errors import EventLogError

#: Columns of patina's ``eventlog`` table that oxidize reads.
EVENTLOG_COLUMNS = ("seq", "event_type", "timestamp", "source_id", "source_file", "data")
#: Columns of the optional ``co_changes`` table.
CO_CHANGES_COLUMNS = ("file_a", "file_b", "count")
#: File name endings that select the JSONL backend; anything else is read as SQLite.
JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the event log.

    ``data`` is the decoded JSON object of the row (for session events it holds
    ``content``; for ``git.commit`` ``message`` and ``files``). Treat it as read-only.
    """

    seq: int
    event_type: str
    timestamp: str
    source_id: str
    source_file: str | None
    data: dict


@dataclass(frozen=True)
class EventLogStats:
    """Size of the snapshot: how many rows and the highest ``seq`` (0 when empty).

    ``max_seq`` is what tells a later build whether new events arrived.
    """

    count: int
    max_seq: int


class EventLog:
    """A read-only snapshot of an event log; use :func:`open_eventlog` to get one.

    It is a context manager: ``with open_eventlog(path) as log: ...`` closes it (and, for
    SQLite, ends the read transaction) on exit.
    """

    path: Path
    #: Texts of the files this log names, described from a repository's content by the build
    #: (``build/R/file_texts.sqlite``); set by the build for a patina checkout's log.
    described_files: Path | None = None

    def events(self, types: Sequence[str] | None = None) -> Iterator[Event]:
        """Yield the events in ``seq`` order, only those of ``types`` when given.

        Args:
            types: event types to keep (``["session.decision", ...]``; a single string is
                one type); ``None`` keeps all, an empty sequence keeps none.

        Raises:
            EventLogError: a row's ``data`` is not a JSON object (names the row's ``seq``).
        """
        raise NotImplementedError

    def stats(self) -> EventLogStats:
        """Count and highest ``seq`` of all rows in the snapshot (any type)."""
        raise NotImplementedError

    def co_changes(self) -> list[tuple[str, str, int]] | None:
        """The ``co_changes`` table as ``(file_a, file_b, count)`` rows, or ``None`` if absent."""
        raise NotImplementedError

    def table(self, name: str) -> list[dict] | None:
        """The rows of one of patina's derived tables (``call_graph``, ``function_facts``,
        ``commits``…) as dicts, or ``None`` where the log has no such table."""
        return None

    def close(self) -> None:
        """Release the file; further reads are an error. Closing twice is harmless."""

    def digest(self) -> tuple[int, int, str]:
        """``(rows, max_seq, sha256)`` over every row in ``seq`` order, each as canonical
        JSON (``[seq, event_type, timestamp, source_id, source_file, data]``, sorted keys,
        ASCII): the same events give the same digest in SQLite or JSONL, vacuumed or not. A
        row whose ``data`` is not a JSON object, or not clean text, is hashed as stored, so
        a row no pair type reads (or one this reader skips) never stops the lock step."""
        raise NotImplementedError

    #: Rows skipped because their text is not clean Unicode: seq → why (see :func:`_skip`).
    skipped: dict

    def warn_skipped(self) -> None:
        """One warning counting the rows skipped, naming the first few ``seq``s."""
        if getattr(self, "skipped", None):
            import warnings

            first = ", ".join(str(s) for s in sorted(self.skipped)[:5])
            reasons = sorted(set(self.skipped.values()))
            warnings.warn(EventLogWarning(
                f"{self.path}: skipped {len(self.skipped):,} row(s) whose text is not clean Unicode "
                f"({'; '.join(reasons)}): seq {first}{', …' if len(self.skipped) > 5 else ''}; "
                f"fix them in the log to use them"))
            self.skipped = {}

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.warn_skipped()
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class EventLogWarning(UserWarning):
    """Rows of the log that a build skipped (shown as one ``oxidize: warning:`` line)."""


def check_eventlog_path(path: Path) -> None:
    """Raise :class:`EventLogError` when ``path`` is not a regular file one can read: missing,
    a directory, a FIFO, socket or device (reading a FIFO would wait forever), a symlink loop
    or a dangling symlink — what can be seen before reading it, so a build refuses at load
    time rather than hanging or failing in its pairs step."""
    import errno
    import stat

    expected = "expected a SQLite database or a .jsonl file"
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise EventLogError(f"event log {path} is a symlink loop; {expected}") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise EventLogError(f"event log {path} is a symlink to {os.readlink(path)}, which does "
                                f"not exist; {expected}") from None
        if exc.errno == errno.ENOENT:
            raise EventLogError(
                f"event log not found: {path}; set `eventlog:` in the recipe to a patina database "
                f"(SQLite) or a .jsonl event log, or create patina's .patina/data/patina.db") from None
        raise EventLogError(f"event log {path}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise EventLogError(f"event log {path} is a directory; {expected}")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise EventLogError(f"event log {path} is {kind}, not a file; {expected} "
                            f"(copy the log to a file first)")


def open_eventlog(path: Path | str) -> EventLog:
    """Open the event log at ``path`` read-only, as one consistent snapshot.

    A name ending in ``.jsonl`` or ``.ndjson`` is read as JSON lines; anything else as
    patina's SQLite database. The schema is checked here, so a wrong file fails before any
    work starts.

    Raises:
        EventLogError: the file is missing, is not an event log, or lacks columns.
    """
    path = Path(path)
    check_eventlog_path(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        from oxidize.eventlog.jsonl import JsonlEventLog

        return JsonlEventLog(path)
    from oxidize.eventlog.sqlite import SqliteEventLog

    return SqliteEventLog(path)


def canonical_row(seq: Any, event_type: Any, timestamp: Any, source_id: Any, source_file: Any,
                  data: Any) -> bytes:
    """One row of :meth:`EventLog.digest`, with its newline."""
    row = [seq, event_type, timestamp, source_id, source_file, data]
    try:
        text = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(row)
    return text.encode("ascii", "backslashreplace") + b"\n"
