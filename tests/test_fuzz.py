"""Property tests: whatever an event log holds, oxidize gives a result or its own error.

A user's event log is outside oxidize's control: an old patina schema, rows written by
another tool, a file that is not a database at all. For arbitrary SQLite content (random
tables, random column sets and declared types, rows of wrong types, NULLs, invalid JSON,
JSON that is not an object, huge and empty strings, blobs) and arbitrary JSONL text, reading
the log — and drawing every pair type from it — must either work or raise
:class:`~oxidize.errors.OxidizeError`, never another exception (which doit would show as a
traceback). The recipe loader has its own properties in test_recipe.py.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oxidize.errors import OxidizeError
from oxidize.eventlog import Event, open_eventlog

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EVENT_TYPES = ["session.decision", "session.observation", "session.pattern", "session.started",
               "git.commit", "code.call", "other"]

# --- values a column may hold -----------------------------------------------------------------

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                          st.floats(allow_nan=False), st.text(max_size=30))
_json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
_contents = st.one_of(st.text(min_size=0, max_size=80),
                      st.sampled_from(["", " " * 30, "a note about the cache key and the build " * 3]),
                      st.just("x" * 100_000), _json_values)
_data_objects = st.fixed_dictionaries({}, optional={
    "content": _contents, "message": _contents,
    "files": st.one_of(st.lists(st.text(max_size=12), max_size=5), _json_values),
    "callee": _json_values, "caller": _json_values, "file": _json_values})


def _data_text(obj) -> str:
    return json.dumps(obj)


_good_data = st.one_of(_data_objects.map(_data_text),             # the usual case
                      _data_objects.map(_data_text).map(str.encode))  # JSON as a blob
_data_column = st.one_of(
    _good_data,
    _json_values.map(json.dumps),                        # JSON, but not an object
    st.text(max_size=40),                                # mostly not JSON at all
    st.binary(max_size=40),
    st.none(), st.integers(), st.floats(),
    st.just('{"content": "unterminated'), st.just("{}"), st.just("[]"), st.just("null"),
    st.just('{"content": "\\ud800 lone surrogate and more text here"}'),
)
_any_value = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=40),
                       st.binary(max_size=20), st.sampled_from(EVENT_TYPES))
_seq = st.one_of(st.integers(-5, 60), st.integers(-2**63, 2**63 - 1), st.none(), st.text(max_size=4),
                 st.floats())
def _row(data: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({**_ROW, "data": data})


_ROW = {
    "seq": _seq,
    "event_type": st.one_of(st.sampled_from(EVENT_TYPES), _any_value),
    "timestamp": st.one_of(st.sampled_from(["2025-01-01T00:00:00Z", "2025-01-02T10:00:00Z"]), _any_value),
    "source_id": st.one_of(st.sampled_from(["s1", "s2", "s3", "abc123"]), _any_value),
    "source_file": st.one_of(st.none(), st.sampled_from(["src/a.rs", "src/b.rs"]), _any_value),
}
COLUMNS = ["seq", "event_type", "timestamp", "source_id", "source_file", "data"]

# Well-formed rows with a little variety, so that the pair generators get past "too few
# events" and their own code runs on odd but valid content.
_TEXTS = [f"{w} note about the cache key, the build and the model" for w in
          ("first", "second", "third", "fourth", "fifth", "sixth")] + ["", "short", "ünïcode ✓ " * 5]
_FILES = ["src/a.rs", "src/b.rs", "src/c.rs", "README.md"]
_FUNCS = ["m::a", "m::b", "n::c", "n::d"]
_good_objects = st.one_of(
    st.fixed_dictionaries({"content": st.sampled_from(_TEXTS)}),
    st.fixed_dictionaries({"message": st.sampled_from(_TEXTS),
                           "files": st.lists(st.sampled_from(_FILES), max_size=4)}),
    st.fixed_dictionaries({"caller": st.sampled_from(_FUNCS), "callee": st.sampled_from(_FUNCS)},
                          optional={"file": st.sampled_from(_FILES)}),
    _data_objects)
_clean_row = st.fixed_dictionaries({
    "seq": st.integers(1, 200),
    "event_type": st.sampled_from(EVENT_TYPES[:3] * 3 + ["git.commit", "code.call", "code.function"]),
    "timestamp": st.sampled_from(["2025-01-01T00:00:00Z", "2025-01-02T10:00:00Z", "2025-02-01T00:00:00Z"]),
    "source_id": st.sampled_from(["s1", "s2", "s3", "s4", "abc123"]),
    "source_file": st.one_of(st.none(), st.sampled_from(_FILES)),
    "data": _good_objects.map(_data_text),
})


@st.composite
def sqlite_logs(draw) -> dict:
    """A description of a database: tables, their columns and declared types, rows."""
    kind = draw(st.sampled_from(["patina", "patina", "eventlog", "eventlog", "other-tables", "garbage",
                                 "empty-file"]))
    if kind == "garbage":
        return {"kind": kind, "bytes": draw(st.binary(max_size=2000))}
    if kind == "empty-file":
        return {"kind": kind}
    if kind == "other-tables":
        return {"kind": kind, "tables": draw(st.lists(st.sampled_from(["foo", "events", "co_changes", "log"]),
                                                        max_size=3, unique=True))}
    if kind == "patina":  # patina's schema, odd but well-typed rows: the pair generators run
        columns = COLUMNS
        types = {"seq": "INTEGER", "event_type": "TEXT", "timestamp": "TEXT", "source_id": "TEXT",
                 "source_file": "TEXT", "data": "JSON"}
        pk = True
        rows = draw(st.lists(_clean_row, min_size=12, max_size=60))
    else:
        full = draw(st.booleans())
        columns = COLUMNS if full else draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6,
                                                     unique=True))
        types = {c: draw(st.sampled_from(["", "TEXT", "INTEGER", "JSON", "BLOB", "REAL"])) for c in columns}
        pk = "seq" in columns and draw(st.booleans())
        # Rows whose every `data` is a JSON object, or anything at all (then the first bad
        # row ends the read, with an error naming it).
        row = draw(st.sampled_from([_clean_row, _row(_good_data), _row(_data_column)]))
        rows = draw(st.lists(row, max_size=40))
    co = draw(st.one_of(st.none(), st.lists(st.tuples(_any_value, _any_value, _any_value), max_size=6),
                        st.lists(st.tuples(st.sampled_from(_FILES), st.sampled_from(_FILES),
                                           st.integers(-3, 50)), max_size=8)))
    co_columns = draw(st.sampled_from([["file_a", "file_b", "count"]] * 4
                                      + [["file_a", "count"], ["a", "b", "c"]]))
    view = draw(st.booleans())
    return {"kind": kind, "columns": columns, "types": types, "pk": pk, "rows": rows,
            "co_changes": co, "co_columns": co_columns, "as_view": view}


def _write_sqlite(path: Path, spec: dict) -> None:
    if spec["kind"] == "garbage":
        path.write_bytes(spec["bytes"])
        return
    if spec["kind"] == "empty-file":
        path.write_bytes(b"")
        return
    conn = sqlite3.connect(path)
    try:
        if spec["kind"] == "other-tables":
            for table in spec["tables"]:
                conn.execute(f"CREATE TABLE {table} (x)")
            conn.commit()
            return
        cols = []
        for c in spec["columns"]:
            decl = f"{c} {spec['types'][c]}".strip()
            if c == "seq" and spec["pk"]:
                decl = "seq INTEGER PRIMARY KEY"
            cols.append(decl)
        table = "eventlog_raw" if spec["as_view"] else "eventlog"
        conn.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
        marks = ", ".join("?" * len(spec["columns"]))
        used: set = set()
        for row in spec["rows"]:
            values = [row[c] for c in spec["columns"]]
            if spec["pk"]:
                seq = row["seq"]
                if not isinstance(seq, int) or seq in used or not -2**63 <= seq < 2**63:
                    continue
                used.add(seq)
            try:
                conn.execute(f"INSERT INTO {table} ({', '.join(spec['columns'])}) VALUES ({marks})", values)
            except (sqlite3.Error, OverflowError):
                continue  # a value SQLite itself refuses (e.g. an integer out of range)
        if spec["as_view"]:
            conn.execute("CREATE VIEW eventlog AS SELECT * FROM eventlog_raw")
        if spec["co_changes"] is not None:
            conn.execute(f"CREATE TABLE co_changes ({', '.join(spec['co_columns'])})")
            marks = ", ".join("?" * len(spec["co_columns"]))
            for row in spec["co_changes"]:
                try:
                    conn.execute(f"INSERT INTO co_changes VALUES ({marks})", row[:len(spec["co_columns"])])
                except (sqlite3.Error, OverflowError):
                    continue
        conn.commit()
    finally:
        conn.close()


def _training(pair_type: str):
    from oxidize.recipe import parse_recipe

    recipe = parse_recipe({"version": 1, "projections": {"p": {
        "layers": [8, 8, 4], "training": {"pair_type": pair_type, "pairs": 50, "min_chars": 2,
                                          "event_types": EVENT_TYPES}}}}, Path("fuzz.yaml"), "fuzz")
    return recipe.projection("p").training


def _exercise(path: Path) -> None:
    """Everything a build reads from a log; each call may only raise OxidizeError."""
    from oxidize.pairs import PAIR_TYPES, generate_pairs

    try:
        with open_eventlog(path) as log:
            events = list(log.events())
            assert all(isinstance(e, Event) and isinstance(e.data, dict) for e in events)
            list(log.events(["session.decision", "git.commit"]))
            list(log.events([]))
            log.stats()
            log.co_changes()
    except OxidizeError:
        return
    for pair_type in PAIR_TYPES:
        try:
            with open_eventlog(path) as log:
                pairset = generate_pairs(log, _training(pair_type), label="fuzz")
        except OxidizeError:
            continue
        n = len(pairset.texts)
        assert all(isinstance(t, str) for t in pairset.texts)
        if len(pairset.triplets):
            assert pairset.triplets.min() >= 0 and pairset.triplets.max() < n


@FUZZ
@given(sqlite_logs())
def test_any_sqlite_file_reads_or_raises_oxidize_error(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.db"
        _write_sqlite(path, spec)
        before = path.read_bytes()
        _exercise(path)
        assert path.read_bytes() == before  # read-only, whatever happened


_jsonl_objects = st.fixed_dictionaries({}, optional={
    "seq": _seq, "event_type": st.one_of(st.sampled_from(EVENT_TYPES), _json_values),
    "timestamp": st.one_of(st.just("2025-01-01T00:00:00Z"), _json_values),
    "source_id": st.one_of(st.sampled_from(["s1", "s2"]), _json_values),
    "source_file": _json_values, "data": st.one_of(_data_objects, _json_values)})
_jsonl_lines = st.one_of(_jsonl_objects.map(lambda o: json.dumps(o, allow_nan=True)),
                         _json_values.map(json.dumps), st.text(max_size=60), st.just(""), st.just("   "))


@FUZZ
@given(st.one_of(st.lists(_jsonl_lines, max_size=20).map("\n".join), st.text(max_size=300)),
       st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_any_jsonl_text_reads_or_raises_oxidize_error(text, encoding):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(text.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace"))
        _exercise(path)


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes_as_jsonl_reads_or_raises_oxidize_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.ndjson"
        path.write_bytes(data)
        _exercise(path)


RECIPE_TEXT = "version: 1\nprojections:\n  semantic:\n    layers: [8, 16, 4]\n"


@FUZZ
@given(st.one_of(st.text(max_size=80), _json_values.map(json.dumps),
                 st.just('{"version": 1, "projections": {"semantic": null}}')))
def test_damaged_parsed_recipe_cache_entry_gives_a_recipe_or_recipe_error(value):
    """``build/.cache/recipes.json`` maps a recipe text's sha256 to its parsed JSON; a damaged
    value under the right key is parsed again or validated like any recipe, never a crash."""
    import hashlib

    from oxidize.recipe import schema as recipe_module
    from oxidize.errors import RecipeError

    key = hashlib.sha256(RECIPE_TEXT.encode("utf-8")).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oxidize.yaml"
        path.write_text(RECIPE_TEXT)
        saved = dict(recipe_module.PARSED)
        recipe_module.PARSED[key] = value
        try:
            recipe = recipe_module.load_recipe(path, "fuzz")
            assert recipe.projections
        except RecipeError:
            pass
        finally:
            recipe_module.PARSED.clear()
            recipe_module.PARSED.update(saved)
