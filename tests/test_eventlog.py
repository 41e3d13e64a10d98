"""Tests of oxidize.eventlog: both backends, read-only access, one snapshot, clear errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from eventlog_factory import append_session, make_sqlite_eventlog

from oxidize.errors import EventLogError, OxidizeError
from oxidize.eventlog import Event, EventLogStats, open_eventlog

SESSIONS = {
    "s1": ["first note of session one", "second note of session one"],
    "s2": ["only note of session two — ünïcode"],
}
COMMITS = [("fix: parser", ["src/a.rs", "src/b.rs"])]


def _jsonl(path: Path, objects: list[dict]) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8")
    return path


def _as_jsonl(sqlite_path: Path, jsonl_path: Path) -> Path:
    """The same events as a JSONL file, lines shuffled (reverse order) to test sorting."""
    with open_eventlog(sqlite_path) as log:
        objects = [{"seq": e.seq, "event_type": e.event_type, "timestamp": e.timestamp,
                    "source_id": e.source_id, "source_file": e.source_file, "data": e.data}
                   for e in log.events()]
    return _jsonl(jsonl_path, objects[::-1])


@pytest.fixture(params=["sqlite", "jsonl"])
def log_path(request, tmp_path) -> Path:
    db = make_sqlite_eventlog(tmp_path / "events.db", SESSIONS, commits=COMMITS, start_seq=10)
    if request.param == "sqlite":
        return db
    return _as_jsonl(db, tmp_path / "events.jsonl")


# --- reading ---------------------------------------------------------------------------

def test_events_in_seq_order_with_fields(log_path):
    with open_eventlog(log_path) as log:
        events = list(log.events())
        assert log.path == log_path
    assert [e.seq for e in events] == [10, 11, 12, 13]
    assert all(isinstance(e, Event) for e in events)
    first = events[0]
    assert (first.event_type, first.source_id, first.source_file) == ("session.decision", "s1", "layer/sessions/s1.md")
    assert first.data == {"content": "first note of session one"}
    assert first.timestamp.startswith("20")
    assert events[2].data["content"].endswith("ünïcode")
    commit = events[3]
    assert commit.event_type == "git.commit" and commit.source_file is None
    assert commit.data["files"] == ["src/a.rs", "src/b.rs"] and commit.data["message"] == "fix: parser"


def test_events_filtered_by_type(log_path):
    with open_eventlog(log_path) as log:
        assert [e.seq for e in log.events(["git.commit"])] == [13]
        assert [e.seq for e in log.events(("session.decision", "session.pattern"))] == [10, 11, 12]
        assert list(log.events([])) == []
        assert [e.seq for e in log.events("git.commit")] == [13]
        assert list(log.events(["no.such.type"])) == []
        # A type name with SQL metacharacters is a parameter, not SQL.
        assert list(log.events(["x') OR 1=1 --"])) == []


def test_stats(log_path):
    with open_eventlog(log_path) as log:
        assert log.stats() == EventLogStats(count=4, max_seq=13)


def test_empty_logs_have_zero_stats(tmp_path):
    db = make_sqlite_eventlog(tmp_path / "empty.db", {})
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    for path in (db, tmp_path / "empty.jsonl"):
        with open_eventlog(path) as log:
            assert log.stats() == EventLogStats(0, 0)
            assert list(log.events()) == []


def test_co_changes(tmp_path):
    db = make_sqlite_eventlog(tmp_path / "e.db", SESSIONS, co_changes=[("b.rs", "c.rs", 2), ("a.rs", "b.rs", 5)])
    with open_eventlog(db) as log:
        assert log.co_changes() == [("a.rs", "b.rs", 5), ("b.rs", "c.rs", 2)]
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE co_changes")
    conn.commit()
    conn.close()
    with open_eventlog(db) as log:
        assert log.co_changes() is None
    with open_eventlog(_as_jsonl(db, tmp_path / "e.jsonl")) as log:
        assert log.co_changes() is None


def test_jsonl_source_file_optional_and_ndjson_suffix(tmp_path):
    path = _jsonl(tmp_path / "log.ndjson", [
        {"seq": 2, "event_type": "session.pattern", "timestamp": "2025-01-01T00:00:00Z",
         "source_id": "s", "data": {"content": "x"}},
    ])
    with open_eventlog(path) as log:
        (event,) = log.events()
    assert event.source_file is None and event.seq == 2


def test_path_with_uri_special_characters(tmp_path):
    folder = tmp_path / "odd ?dir#%20&"
    folder.mkdir()
    db = make_sqlite_eventlog(folder / "events.db", SESSIONS)
    with open_eventlog(db) as log:
        assert log.stats().count == 3


def test_closed_log_is_an_error(log_path):
    log = open_eventlog(log_path)
    log.close()
    log.close()  # harmless twice
    with pytest.raises(EventLogError, match="closed"):
        log.stats()


def test_light_import():
    code = ("import sys, oxidize.eventlog, oxidize.pairs; "
            "sys.exit('numpy imported' if 'numpy' in sys.modules else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- read-only and snapshot ------------------------------------------------------------

@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_never_writes_the_log(tmp_path, journal_mode):
    db = make_sqlite_eventlog(tmp_path / "e.db", SESSIONS, commits=COMMITS, journal_mode=journal_mode)
    before = db.read_bytes()
    with open_eventlog(db) as log:
        list(log.events())
        log.stats()
        log.co_changes()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            log._conn.execute("INSERT INTO eventlog (event_type, timestamp, source_id, data) "
                              "VALUES ('x', 't', 's', '{}')")
    assert db.read_bytes() == before


def test_snapshot_wal_append_is_invisible_until_reopened(tmp_path):
    db = make_sqlite_eventlog(tmp_path / "e.db", SESSIONS)
    with open_eventlog(db) as log:
        # Nothing read yet beyond open(): the snapshot must already be fixed.
        last = append_session(db, "s3", ["appended while we read", "another appended"])
        assert last == 5
        assert log.stats() == EventLogStats(3, 3)
        assert [e.source_id for e in log.events()] == ["s1", "s1", "s2"]
        append_session(db, "s4", ["appended mid-read"])
        assert log.stats() == EventLogStats(3, 3)
    with open_eventlog(db) as log:
        assert log.stats() == EventLogStats(6, 6)


def test_snapshot_rollback_journal_writer_waits(tmp_path):
    # patina's default journal mode: our read transaction holds a shared lock, so the
    # appender cannot commit (it gets "database is locked") — either way we see no change.
    db = make_sqlite_eventlog(tmp_path / "e.db", SESSIONS, journal_mode="delete")
    with open_eventlog(db) as log:
        assert log.stats().count == 3
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            append_session(db, "s3", ["blocked append"], timeout=0.05)
        assert log.stats().count == 3
    append_session(db, "s3", ["append after close"])
    with open_eventlog(db) as log:
        assert log.stats().count == 4


def test_jsonl_snapshot_is_taken_at_open(tmp_path):
    path = _as_jsonl(make_sqlite_eventlog(tmp_path / "e.db", SESSIONS), tmp_path / "e.jsonl")
    with open_eventlog(path) as log:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"seq": 99, "event_type": "session.decision", "timestamp": "t",
                                     "source_id": "s9", "data": {"content": "late"}}) + "\n")
        assert log.stats() == EventLogStats(3, 3)


# --- errors ----------------------------------------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(EventLogError) as info:
        open_eventlog(missing)
    message = str(info.value)
    assert str(missing) in message and "event log not found" in message and "`eventlog:`" in message
    assert isinstance(info.value, OxidizeError)


def test_directory_is_not_a_log(tmp_path):
    with pytest.raises(EventLogError, match="is a directory"):
        open_eventlog(tmp_path)


def test_not_a_sqlite_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is plain text, not SQLite\n" * 100)
    with pytest.raises(EventLogError) as info:
        open_eventlog(path)
    assert f"{path} is not a SQLite database" in str(info.value)


def test_no_eventlog_table_lists_tables(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x)")
    conn.execute("CREATE TABLE zettel (y)")
    conn.commit()
    conn.close()
    with pytest.raises(EventLogError) as info:
        open_eventlog(path)
    message = str(info.value)
    assert str(path) in message and "no `eventlog` table" in message and "notes, zettel" in message


def test_missing_columns(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE eventlog (seq INTEGER PRIMARY KEY, event_type TEXT, data TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(EventLogError) as info:
        open_eventlog(path)
    message = str(info.value)
    assert str(path) in message and "timestamp, source_id, source_file" in message


def _loose_db(path: Path, data: str) -> Path:
    """An eventlog table without the json_valid CHECK, holding one row with ``data``."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE eventlog (seq INTEGER PRIMARY KEY, event_type TEXT, timestamp TEXT, "
                 "source_id TEXT, source_file TEXT, data JSON)")
    conn.execute("INSERT INTO eventlog VALUES (7, 'session.decision', 't', 's', NULL, ?)", (data,))
    conn.commit()
    conn.close()
    return path


def test_row_with_invalid_json(tmp_path):
    path = _loose_db(tmp_path / "bad.db", "{not json")
    with open_eventlog(path) as log:
        assert log.stats().count == 1  # opening and counting work; reading the row fails
        with pytest.raises(EventLogError) as info:
            list(log.events())
    assert f"{path}: row seq=7: data is not valid JSON" in str(info.value)


def test_row_with_non_object_json(tmp_path):
    path = _loose_db(tmp_path / "list.db", "[1, 2]")
    with open_eventlog(path) as log, pytest.raises(EventLogError) as info:
        list(log.events())
    assert "row seq=7" in str(info.value) and "expected a JSON object" in str(info.value)


GOOD = {"seq": 1, "event_type": "session.decision", "timestamp": "t", "source_id": "s", "data": {}}


@pytest.mark.parametrize(("line", "expected"), [
    ("{oops", "line 2: not valid JSON"),
    ("[1, 2, 3]", "line 2: found a JSON list, expected an object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "source_id"} | {"seq": 2}), "line 2: missing field `source_id`"),
    (json.dumps(GOOD | {"seq": "2"}), "line 2: field `seq` is \"2\", expected an integer"),
    (json.dumps(GOOD | {"seq": True}), "line 2: field `seq` is true, expected an integer"),
    (json.dumps(GOOD | {"seq": 2, "data": "text"}), "line 2: field `data` is \"text\", expected a JSON object"),
    (json.dumps(GOOD | {"seq": 2, "source_file": 3}), "line 2: field `source_file` is 3, expected a string or null"),
    (json.dumps(GOOD), "line 2: seq=1 already used on line 1"),
])
def test_jsonl_errors_name_the_line(tmp_path, line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(EventLogError) as info:
        open_eventlog(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_jsonl_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"seq": 1, "data": "\xe9"}\n')
    with pytest.raises(EventLogError, match="not UTF-8"):
        open_eventlog(path)


def test_many_rows_across_batches_and_a_bad_row_among_them(tmp_path):
    db = make_sqlite_eventlog(tmp_path / "big.db", {"s": [f"text {i}" for i in range(5000)]})
    with open_eventlog(db) as log:
        events = list(log.events(["session.decision"]))
    assert [e.seq for e in events] == list(range(1, 5001))
    assert events[4500].data == {"content": "text 4500"}
    path = _loose_db(tmp_path / "mixed.db", '{"content": "fine"}')
    conn = sqlite3.connect(path)
    conn.executemany("INSERT INTO eventlog VALUES (?, 'session.decision', 't', 's', NULL, ?)",
                     [(seq, '{"content": "ok"}' if seq != 42 else '{"content": oops}') for seq in range(8, 100)])
    conn.commit()
    conn.close()
    seen = []
    with open_eventlog(path) as log, pytest.raises(EventLogError, match="row seq=42: data is not valid JSON"):
        for event in log.events():
            seen.append(event.seq)
    assert seen == list(range(7, 42))
