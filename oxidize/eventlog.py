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

import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

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

    def close(self) -> None:
        """Release the file; further reads are an error. Closing twice is harmless."""

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


def check_eventlog_path(path: Path) -> None:
    """Raise :class:`EventLogError` when ``path`` is missing or a directory: what can be seen
    before reading it, so a build can refuse at load time rather than in its pairs step."""
    if not path.exists():
        raise EventLogError(
            f"event log not found: {path}; set `eventlog:` in the recipe to a patina database "
            f"(SQLite) or a .jsonl event log, or create patina's .patina/data/patina.db")
    if path.is_dir():
        raise EventLogError(f"event log {path} is a directory; expected a SQLite database or a .jsonl file")


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
        return JsonlEventLog(path)
    return SqliteEventLog(path)


#: Columns of a row before ``data``: (name, accepted types, what was expected).
_ROW_COLUMNS: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("seq", (int,), "an integer"),
    ("event_type", (str,), "text such as 'session.decision'"),
    ("timestamp", (str,), "text (an ISO 8601 time)"),
    ("source_id", (str,), "text (the session id or commit sha)"),
    ("source_file", (str, type(None)), "text or NULL"),
)


def _sql_value(value: Any) -> str:
    """A column value as SQL shows it: NULL, 12, 'text' (shortened), a BLOB of n bytes."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"a BLOB of {len(value)} bytes"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_columns_of_row(path: Path, row: Sequence[Any]) -> None:
    """Raise an EventLogError naming the row and column whose value has the wrong type."""
    where = f"row seq={row[0]}" if type(row[0]) is int else f"a row with seq {_sql_value(row[0])}"
    for (name, kinds, expected), value in zip(_ROW_COLUMNS, row):
        if type(value) not in kinds:
            raise EventLogError(f"{path}: {where}: column `{name}` is {_sql_value(value)}, "
                                f"expected {expected}")


def _decode_data(path: Path, seq: int, raw: Any) -> dict:
    """Decode one row's ``data`` column; it must be a JSON object."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise EventLogError(f"{path}: row seq={seq}: data is not valid JSON: not UTF-8 ({err})") from None
    if not isinstance(raw, str):
        raise EventLogError(f"{path}: row seq={seq}: data is not valid JSON: "
                            f"found a {type(raw).__name__} value {raw!r}, expected a JSON object")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise EventLogError(f"{path}: row seq={seq}: data is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise EventLogError(f"{path}: row seq={seq}: data is a JSON {type(data).__name__}, "
                            f"expected a JSON object such as {{\"content\": \"...\"}}")
    return data


class SqliteEventLog(EventLog):
    """patina's database, read through a ``mode=ro`` connection inside one read transaction."""

    def __init__(self, path: Path):
        self.path = path
        uri = "file:" + quote(str(path.resolve()), safe="/") + "?mode=ro"
        try:
            # isolation_level=None: we issue BEGIN ourselves and hold it for the log's life.
            self._conn: sqlite3.Connection | None = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as err:
            raise EventLogError(f"cannot open event log {path} read-only: {err}") from None
        try:
            self._conn.execute("BEGIN")
            # The first read starts the read transaction: from here on, one snapshot.
            tables = [row[0] for row in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")]
        except sqlite3.DatabaseError as err:
            self.close()
            if "not a database" in str(err) or "malformed" in str(err):
                raise EventLogError(f"{path} is not a SQLite database ({err}); an event log is "
                                    f"patina's SQLite database or a .jsonl file") from None
            raise EventLogError(f"cannot read event log {path}: {err}") from None
        if "eventlog" not in tables:
            self.close()
            found = ", ".join(tables) if tables else "none"
            raise EventLogError(f"{path} has no `eventlog` table (tables found: {found}); "
                                f"expected patina's schema eventlog({', '.join(EVENTLOG_COLUMNS)})")
        self._check_columns("eventlog", EVENTLOG_COLUMNS)
        self._has_co_changes = "co_changes" in tables

    def _check_columns(self, table: str, expected: Sequence[str]) -> None:
        found = [row[0] for row in self._db().execute("SELECT name FROM pragma_table_info(?)", (table,))]
        missing = [name for name in expected if name not in found]
        if missing:
            self.close()
            raise EventLogError(f"{self.path}: table `{table}` lacks column(s) {', '.join(missing)} "
                                f"(found: {', '.join(found)}); expected {table}({', '.join(expected)})")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise EventLogError(f"event log {self.path} is already closed")
        return self._conn

    def events(self, types: Sequence[str] | None = None) -> Iterator[Event]:
        # json_valid() lets SQLite (in C) vouch for each row, so a whole batch of valid rows
        # can be decoded by one json.loads of "[row,row,…]" — about twice as fast as one call
        # per row on a million events. A batch with any doubtful row is decoded row by row,
        # which is where the error naming the bad row's seq comes from.
        # The last column also vouches for the other columns' types (patina's schema makes
        # them so; another tool's table may not), so the fast path needs no per-row checks.
        sql = ("SELECT seq, event_type, timestamp, source_id, source_file, data, json_valid(data) "
               "AND typeof(seq) = 'integer' AND typeof(event_type) = 'text' AND typeof(timestamp) = "
               "'text' AND typeof(source_id) = 'text' AND typeof(source_file) IN ('text', 'null') "
               "FROM eventlog")
        params: tuple[str, ...] = ()
        if types is not None:
            params = (types,) if isinstance(types, str) else tuple(types)
            if not params:
                return
            # `+event_type` keeps SQLite off idx_eventlog_type: walking the table in rowid
            # (= seq) order needs no sort, and session events are most of a log; through the
            # index SQLite would sort every match by seq in a temporary B-tree (~2x slower).
            sql += " WHERE +event_type IN (" + ", ".join("?" * len(params)) + ")"
        sql += " ORDER BY seq"
        cursor = self._db().execute(sql, params)
        path = self.path
        while True:
            rows = cursor.fetchmany(4096)
            if not rows:
                break
            batch = None
            if all(row[6] == 1 and type(row[5]) is str for row in rows):
                try:
                    batch = json.loads("[" + ",".join([row[5] for row in rows]) + "]")
                except ValueError:  # SQLite and Python disagree on some edge of JSON
                    batch = None
                if batch is not None and len(batch) != len(rows):
                    batch = None
            for i, (seq, event_type, timestamp, source_id, source_file, raw, _valid) in enumerate(rows):
                if batch is None:
                    _check_columns_of_row(path, rows[i])  # raises: names the row and the column
                data = batch[i] if batch is not None else _decode_data(path, seq, raw)
                if type(data) is not dict:
                    data = _decode_data(path, seq, raw)  # raises: names the row and the problem
                yield Event(seq, event_type, timestamp, source_id, source_file, data)

    def stats(self) -> EventLogStats:
        count, max_seq, bad = self._db().execute(
            "SELECT COUNT(*), COALESCE(MAX(seq), 0), COALESCE(SUM(typeof(seq) != 'integer'), 0) "
            "FROM eventlog").fetchone()
        if bad:
            (example,) = self._db().execute(
                "SELECT seq FROM eventlog WHERE typeof(seq) != 'integer' LIMIT 1").fetchone()
            raise EventLogError(f"{self.path}: {bad} row(s) of `eventlog` have a seq that is not an "
                                f"integer (e.g. {_sql_value(example)}); expected patina's "
                                f"`seq INTEGER PRIMARY KEY`")
        return EventLogStats(int(count), int(max_seq))

    def co_changes(self) -> list[tuple[str, str, int]] | None:
        if not self._has_co_changes:
            return None
        self._check_columns("co_changes", CO_CHANGES_COLUMNS)
        rows = self._db().execute("SELECT file_a, file_b, count FROM co_changes ORDER BY file_a, file_b")
        out = []
        for a, b, n in rows:
            if type(a) is not str or type(b) is not str or type(n) is not int:
                raise EventLogError(f"{self.path}: table `co_changes`: row ({_sql_value(a)}, "
                                    f"{_sql_value(b)}, {_sql_value(n)}): expected (file_a text, "
                                    f"file_b text, count integer)")
            out.append((a, b, n))
        return out

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # ends the read transaction (a read-only one has nothing to commit)


#: JSONL fields: name → (required, accepted types, what to say when wrong).
_JSONL_FIELDS: dict[str, tuple[bool, tuple[type, ...], str]] = {
    "seq": (True, (int,), "an integer"),
    "event_type": (True, (str,), "a string such as \"session.decision\""),
    "timestamp": (True, (str,), "an ISO 8601 string"),
    "source_id": (True, (str,), "a string (the session id or commit sha)"),
    "source_file": (False, (str, type(None)), "a string or null"),
    "data": (True, (dict,), "a JSON object such as {\"content\": \"...\"}"),
}


class JsonlEventLog(EventLog):
    """A JSON-lines event log, read and checked completely when opened (that is its snapshot)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise EventLogError(f"{path} is not UTF-8 text ({err}); expected one JSON object per line") from None
        except OSError as err:
            raise EventLogError(f"cannot read event log {path}: {err}") from None
        events: list[Event] = []
        line_of_seq: dict[int, int] = {}
        # split("\n"), not splitlines(): U+2028 and friends may appear inside JSON strings.
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            event = self._parse_line(lineno, line)
            if event.seq in line_of_seq:
                raise EventLogError(f"{path}: line {lineno}: seq={event.seq} already used on line "
                                    f"{line_of_seq[event.seq]}; expected unique seq numbers")
            line_of_seq[event.seq] = lineno
            events.append(event)
        events.sort(key=lambda e: e.seq)
        self._events: list[Event] | None = events

    def _parse_line(self, lineno: int, line: str) -> Event:
        where = f"{self.path}: line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise EventLogError(f"{where}: not valid JSON ({err}); expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise EventLogError(f"{where}: found a JSON {type(obj).__name__}, expected an object with "
                                f"fields {', '.join(EVENTLOG_COLUMNS)}")
        for name, (required, kinds, expected) in _JSONL_FIELDS.items():
            if name not in obj:
                if required:
                    raise EventLogError(f"{where}: missing field `{name}`, expected {expected}")
                continue
            value = obj[name]
            if not isinstance(value, kinds) or (name == "seq" and isinstance(value, bool)):
                raise EventLogError(f"{where}: field `{name}` is {json.dumps(value)[:80]}, expected {expected}")
        return Event(obj["seq"], obj["event_type"], obj["timestamp"], obj["source_id"],
                     obj.get("source_file"), obj["data"])

    def _all(self) -> list[Event]:
        if self._events is None:
            raise EventLogError(f"event log {self.path} is already closed")
        return self._events

    def events(self, types: Sequence[str] | None = None) -> Iterator[Event]:
        events = self._all()
        if types is None:
            yield from events
            return
        wanted = frozenset((types,) if isinstance(types, str) else types)
        for event in events:
            if event.event_type in wanted:
                yield event

    def stats(self) -> EventLogStats:
        events = self._all()
        return EventLogStats(len(events), events[-1].seq if events else 0)

    def co_changes(self) -> list[tuple[str, str, int]] | None:
        self._all()
        return None

    def close(self) -> None:
        self._events = None
