"""One row's columns and text: type checks that name the row, and the policy for text that
is not clean Unicode (skip the row; :meth:`oxidize.eventlog.EventLog.warn_skipped` counts
them in one warning).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oxidize.errors import EventLogError

#: Columns of a row before ``data``: (name, accepted types, what was expected).
ROW_COLUMNS: tuple[tuple[str, tuple[type, ...], str], ...] = (
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
    for (name, kinds, expected), value in zip(ROW_COLUMNS, row):
        if type(value) not in kinds:
            raise EventLogError(f"{path}: {where}: column `{name}` is {_sql_value(value)}, "
                                f"expected {expected}")


#: The policy for text that is not clean Unicode (docs/reliability.md): the row is skipped,
#: and one warning per read counts such rows and names the first few seqs. A user's log is
#: theirs to fix; a build that cannot start is worse.
NOT_UTF8 = "bytes that are not UTF-8"
LONE_SURROGATE = "a \\uD800–\\uDFFF escape without its pair"


def _unclean(raw: str) -> bool:
    """True when the JSON text ``raw`` decodes to a string that is not valid Unicode (a lone
    UTF-16 surrogate escape such as ``"\\ud800"``): the tokenizer cannot take it."""
    if "\\u" not in raw or not any(m in raw.lower() for m in ("\\ud8", "\\ud9", "\\uda", "\\udb",
                                                             "\\udc", "\\udd", "\\ude", "\\udf")):
        return False
    try:
        json.dumps(json.loads(raw), ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return True
    return False


def _decode_data(path: Path, seq: int, raw: Any) -> dict:
    """Decode one row's ``data`` column; it must be a JSON object."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise EventLogError(f"{path}: row seq={seq}: data is not valid JSON: not UTF-8 ({err})") from None
    if not isinstance(raw, str):
        kind = "the number" if isinstance(raw, (int, float)) else "SQL"
        raise EventLogError(f"{path}: row seq={seq}: data is {kind} {_sql_value(raw)}, expected "
                            f"text holding a JSON object such as {{\"content\": \"...\"}}")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise EventLogError(f"{path}: row seq={seq}: data is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise EventLogError(f"{path}: row seq={seq}: data is a JSON {type(data).__name__}, "
                            f"expected a JSON object such as {{\"content\": \"...\"}}")
    return data
