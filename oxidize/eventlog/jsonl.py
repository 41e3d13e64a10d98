"""A JSON-lines event log (the shipped example's format), read and checked when opened."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from oxidize.errors import EventLogError
from oxidize.eventlog import EVENTLOG_COLUMNS, Event, EventLog, EventLogStats, canonical_row
from oxidize.eventlog.rows import LONE_SURROGATE, _unclean


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
        self.skipped = {}
        events: list[Event] = []
        held_back: list[Event] = []
        line_of_seq: dict[int, int] = {}
        try:
            # Line by line, never the whole file at once (a log of gigabytes would need it
            # three times over: bytes, text, lines). Lines end at "\n" only: U+2028 and
            # friends may appear inside JSON strings.
            with open(path, "rb") as handle:
                for lineno, raw in enumerate(handle, start=1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise EventLogError(f"{path}: line {lineno} is not UTF-8 text ({err}); expected "
                                            f"one JSON object per line") from None
                    if not line.strip():
                        continue
                    event = self._parse_line(lineno, line)
                    if _unclean(line):
                        self.skipped[event.seq] = LONE_SURROGATE
                        held_back.append(event)
                        continue
                    if event.seq in line_of_seq:
                        raise EventLogError(f"{path}: line {lineno}: seq={event.seq} already used on "
                                            f"line {line_of_seq[event.seq]}; expected unique seq numbers")
                    line_of_seq[event.seq] = lineno
                    events.append(event)
        except MemoryError:
            events.clear()
            raise EventLogError(f"event log {path} ({_size(path)}) does not fit in the memory this "
                                f"process may use; a JSON-lines log is read whole — convert it to "
                                f"patina's SQLite schema, which is read row by row") from None
        except OSError as err:
            raise EventLogError(f"cannot read event log {path}: {err}") from None
        events.sort(key=lambda e: e.seq)
        self._events: list[Event] | None = events
        self._held_back = held_back  # rows skipped as not clean Unicode: still in the digest

    def _parse_line(self, lineno: int, line: str) -> Event | None:
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

    def digest(self) -> tuple[int, int, str]:
        import hashlib

        events = sorted([*self._all(), *self._held_back], key=lambda e: e.seq)
        h = hashlib.sha256()
        for e in events:
            h.update(canonical_row(e.seq, e.event_type, e.timestamp, e.source_id, e.source_file, e.data))
        return len(events), max([e.seq for e in events] + [0]), h.hexdigest()

    def close(self) -> None:
        self._events = None


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 2**30:.1f} GB"
    except OSError:
        return "size unknown"
