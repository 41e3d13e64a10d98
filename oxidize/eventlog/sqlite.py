"""patina's SQLite event log, read through a ``mode=ro`` connection in one read transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from oxidize.errors import EventLogError
from oxidize.eventlog import (CO_CHANGES_COLUMNS, EVENTLOG_COLUMNS, Event, EventLog, EventLogStats,
                              canonical_row)
from oxidize.eventlog.rows import (LONE_SURROGATE, NOT_UTF8, _check_columns_of_row, _decode_data,
                                   _sql_value, _unclean)


class SqliteEventLog(EventLog):
    """patina's database, read through a ``mode=ro`` connection inside one read transaction."""

    def __init__(self, path: Path):
        self.path = path
        self.skipped = {}
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
            raise EventLogError(f"cannot read event log {path}: {err}{_room(err)}") from None
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
        yield from self._events(sql, params, after=None)

    def _events(self, sql: str, params: tuple, after: int | None) -> Iterator[Event]:
        path = self.path
        if after is not None:
            sql = sql.replace(" ORDER BY seq", (" AND" if " WHERE " in sql else " WHERE") + " seq > ? ORDER BY seq")
            params = (*params, after)
        cursor = self._db().execute(sql, params)
        last = after
        while True:
            try:
                rows = cursor.fetchmany(4096)
            except sqlite3.OperationalError as err:
                if "decode" not in str(err).lower():
                    raise EventLogError(f"cannot read event log {path}: {err}{_room(err)}") from None
                # A row holds bytes that are not UTF-8: read on row by row as bytes, skip it.
                yield from self._events_from_bytes(sql, params, last)
                return
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
            doubtful = batch is None or any(_unclean(row[5]) for row in rows if type(row[5]) is str and "\\u" in row[5])
            for i, (seq, event_type, timestamp, source_id, source_file, raw, _valid) in enumerate(rows):
                last = seq
                if batch is None:
                    _check_columns_of_row(path, rows[i])  # raises: names the row and the column
                if type(raw) is bytes:  # a BLOB: JSON text if it is UTF-8
                    try:
                        raw = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        self.skipped[seq] = NOT_UTF8
                        continue
                    doubtful = True
                if doubtful and type(raw) is str and _unclean(raw):
                    self.skipped[seq] = LONE_SURROGATE
                    continue
                data = batch[i] if batch is not None else _decode_data(path, seq, raw)
                if type(data) is not dict:
                    data = _decode_data(path, seq, raw)  # raises: names the row and the problem
                yield Event(seq, event_type, timestamp, source_id, source_file, data)

    def _events_from_bytes(self, sql: str, params: tuple, after: int | None) -> Iterator[Event]:
        """The rest of a read whose rows include bytes that are not UTF-8: every text column
        comes back as bytes and is decoded here; a row that does not decode is skipped."""
        conn = self._db()
        conn.text_factory = bytes
        try:
            if after is not None:
                sql = sql.replace(" ORDER BY seq", (" AND" if " WHERE " in sql else " WHERE") + " seq > ? ORDER BY seq")
                params = (*params, after)
            rows = conn.execute(sql, params).fetchall()
        finally:
            conn.text_factory = str
        for row in rows:
            try:
                row = tuple(v.decode("utf-8") if isinstance(v, bytes) else v for v in row)
            except UnicodeDecodeError:
                self.skipped[row[0]] = NOT_UTF8
                continue
            seq, event_type, timestamp, source_id, source_file, raw, _valid = row
            _check_columns_of_row(self.path, row)
            if type(raw) is str and _unclean(raw):
                self.skipped[seq] = LONE_SURROGATE
                continue
            yield Event(seq, event_type, timestamp, source_id, source_file, _decode_data(self.path, seq, raw))

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

    def digest(self) -> tuple[int, int, str]:
        import hashlib

        conn = self._db()
        conn.text_factory = bytes  # as stored: text that is not UTF-8 is hashed, not a failure
        try:
            h, count, max_seq = hashlib.sha256(), 0, 0
            for row in conn.execute("SELECT seq, event_type, timestamp, source_id, source_file, "
                                    "data FROM eventlog ORDER BY seq"):
                h.update(canonical_row(*_as_stored(row)))
                count += 1
                if type(row[0]) is int:
                    max_seq = max(max_seq, row[0])
        except sqlite3.OperationalError as err:
            raise EventLogError(f"cannot read event log {self.path}: {err}{_room(err)}") from None
        finally:
            conn.text_factory = str
        return count, max_seq, h.hexdigest()

    def table(self, name: str) -> list[dict] | None:
        if not self._db().execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND "
                                  "name = ?", (name,)).fetchone():
            return None
        try:
            cursor = self._db().execute(f'SELECT * FROM "{name}" ORDER BY rowid')
        except sqlite3.OperationalError:  # a view has no rowid
            cursor = self._db().execute(f'SELECT * FROM "{name}"')
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor]

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


def _as_stored(row: tuple) -> list:
    """A row read with ``text_factory = bytes`` as :func:`canonical_row` takes it: text
    decoded where it is UTF-8, ``data`` as its JSON object where it is one."""
    out = []
    for value in row:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        out.append(value)
    if isinstance(out[5], str):
        try:
            data = json.loads(out[5])
            if isinstance(data, dict):
                out[5] = data
        except ValueError:
            pass
    return out


def _room(err: Exception) -> str:
    """Why SQLite's read failed when it was for want of room: it writes temporary files (a
    sort, a snapshot's shared memory) even for a read-only database."""
    import tempfile

    from oxidize.util.atomic import out_of_room

    cause = out_of_room(err, Path(tempfile.gettempdir()))
    return f" ({cause}: SQLite could not write its temporary files)" if cause else ""
