"""patina's code events, read as patina writes them: functions by file::name, calls resolved
in the same file first, then to a unique definition elsewhere, else counted and left out; and
the call_graph / function_facts tables when the log has no code events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from eventlog_factory import SCHEMA, _insert
from oxidize.eventlog import open_eventlog
from oxidize.pairs.code_graph import read_call_graph


def _fn(file, name, **extra):
    return ("code.function", f"{file}::{name}", file,
            {"file": file, "name": name, "is_public": True, "is_async": False,
             "parameters": ["&self", "x: u32"], "return_type": "Result<()>", **extra})


def _call(file, caller, callee):
    return ("code.call", f"{file}::{caller}→{callee}", file,
            {"caller": caller, "callee": callee, "file": file, "call_type": "direct", "line_number": 3})


def _log(path: Path, rows) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    _insert(conn, rows, 1)
    conn.commit()
    conn.close()
    return path


def test_functions_are_file_and_name_and_calls_resolve_same_file_first(tmp_path: Path):
    rows = [_fn("src/a.rs", "new"), _fn("src/b.rs", "new"), _fn("src/a.rs", "run"), _fn("src/b.rs", "go"),
            _fn("src/c.rs", "helper"),
            _call("src/a.rs", "run", "new"),      # same file: a.rs::new, not b.rs::new
            _call("src/b.rs", "go", "new"),       # same file: b.rs::new
            _call("src/b.rs", "go", "helper"),    # unique definition elsewhere: c.rs::helper
            _call("src/c.rs", "helper", "new"),   # two definitions elsewhere: left out, counted
            _call("src/a.rs", "run", "missing")]  # none: left out, counted
    with open_eventlog(_log(tmp_path / "p.db", rows)) as log:
        graph = read_call_graph(log)
    assert graph.edges == {("src/a.rs::new", "src/a.rs::run"), ("src/b.rs::go", "src/b.rs::new"),
                           ("src/b.rs::go", "src/c.rs::helper")}
    assert graph.calls == 5 and graph.resolved_elsewhere == 1 and graph.unresolved == 2
    assert graph.functions["src/a.rs::new"].signature == "pub fn new(&self, x: u32) -> Result<()>"


def test_pairs_and_texts_from_patinas_shape(tmp_path: Path, capsys):
    from oxidize.pairs import generate_pairs
    from oxidize.recipe import parse_recipe

    rows = [_fn(f"src/m{k}.rs", "new") for k in range(6)] + [_fn(f"src/m{k}.rs", "run") for k in range(6)]
    rows += [_call(f"src/m{k}.rs", "run", "new") for k in range(6)] + [_call("src/m0.rs", "run", "nowhere")]
    recipe = parse_recipe({"version": 1, "projections": {"dependency": {"training": {"holdout": 0}}}},
                          tmp_path / "r.yaml", "r")
    with open_eventlog(_log(tmp_path / "p.db", rows)) as log:
        pairset = generate_pairs(log, recipe.projection("dependency").training, label="r:dependency")
    assert len(pairset.texts) == 12  # six `new`s stay six functions
    assert all("in src/m" in text for text in pairset.texts)
    assert pairset.stats["callees_unresolved"] == 1
    assert "1 of 7 calls name a callee defined nowhere" in capsys.readouterr().out


def test_call_graph_and_function_facts_tables_without_events(tmp_path: Path):
    path = _log(tmp_path / "ref.db", [])
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE function_facts (file TEXT, name TEXT, is_public INTEGER, is_async INTEGER,
                                     parameters TEXT, return_type TEXT);
        CREATE TABLE call_graph (caller TEXT, callee TEXT, file TEXT, call_type TEXT, line_number INTEGER);
        INSERT INTO function_facts VALUES ('x.rs', 'new', 1, 0, '["a: u8"]', 'Self'),
                                          ('y.rs', 'new', 0, 0, '[]', NULL), ('x.rs', 'main', 1, 0, '[]', NULL);
        INSERT INTO call_graph VALUES ('main', 'new', 'x.rs', 'direct', 1), ('main', 'zzz', 'x.rs', 'direct', 2);
    """)
    conn.commit()
    conn.close()
    with open_eventlog(path) as log:
        graph = read_call_graph(log)
    assert graph.source == "call_graph and function_facts tables"
    assert graph.edges == {("x.rs::main", "x.rs::new")} and graph.unresolved == 1
    assert graph.functions["x.rs::new"].signature == "pub fn new(a: u8) -> Self"


def test_commits_and_commit_files_tables_when_the_log_has_no_commit_events(tmp_path: Path):
    """patina keeps commits in materialised tables; temporal and same_commit read them there."""
    from oxidize.pairs import generate_pairs
    from oxidize.search.population import search_population, stable_key
    from oxidize.recipe import parse_recipe

    path = _log(tmp_path / "p.db", [])
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE commits (sha TEXT PRIMARY KEY, message TEXT, author_name TEXT, timestamp TEXT);
        CREATE TABLE commit_files (sha TEXT, file_path TEXT, change_type TEXT);
        DROP TABLE co_changes;
    """)
    for c in range(12):
        sha = f"{c:040x}"
        conn.execute("INSERT INTO commits VALUES (?, ?, 'dev', ?)",
                     (sha, f"change number {c} to the cache and the model", f"2025-01-{c + 1:02d}T10:00:00Z"))
        files = ["src/a.rs", "src/b.rs"] if c % 2 else ["src/c.rs", "src/d.rs", f"src/x{c}.rs"]
        conn.executemany("INSERT INTO commit_files VALUES (?, ?, 'M')", [(sha, f) for f in files])
    conn.commit()
    conn.close()
    recipe = parse_recipe({"version": 1, "projections": {
        "temporal": {"training": {"pair_type": "co_changed", "holdout": 0.2}},
        "commits": {"training": {"pair_type": "same_commit", "holdout": 0.2}}}}, tmp_path / "r.yaml", "r")
    with open_eventlog(path) as log:
        temporal = generate_pairs(log, recipe.projection("temporal").training)
        commits = generate_pairs(log, recipe.projection("commits").training)
        items = search_population(log, recipe.projection("commits"))
        files = search_population(log, recipe.projection("temporal"))
    assert temporal.stats["source"] == "commits and commit_files tables"
    assert [f for f in ("src/a.rs", "src/b.rs", "src/c.rs", "src/d.rs") if any(f in t for t in temporal.texts)] \
        == ["src/a.rs", "src/b.rs", "src/c.rs", "src/d.rs"]
    assert len(commits.texts) == 12 and commits.stats["pair_type"] == "same_commit"
    assert [i.key for i in items] == [stable_key(f"{c:040x}") for c in range(12)]
    assert all(i.seq is None for i in items + files)
