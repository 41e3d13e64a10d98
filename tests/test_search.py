"""Searching with a projection: the index task, `doit query`, projection.onnx.

End to end on a small project (tiny ONNX model, SQLite log in patina's schema): the index
holds the whole search population (not only the training texts), keys are the events'
`seq`, appending events embeds only the new texts, a stale index is searched with a warning,
and every bad input is one clear line. projection.onnx is checked against the NumPy forward
pass with onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eventlog_factory import append_session, make_sqlite_eventlog
from tiny_model import make_tiny_model

RECIPE = """\
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
"""
FIELDS = {"rank", "score", "event_type", "date", "source_id", "seq", "key", "snippet",
          "dense_rank", "lexical_rank", "match", "search"}


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def notes(n_sessions: int = 6, per_session: int = 5) -> dict[str, list[str]]:
    topics = ["database migration schema", "parser token grammar", "cache key eviction",
              "release build pipeline", "network retry timeout", "test fixture mock"]
    return {f"s{s}": [f"decision {i} in session {s} about the {topics[s % len(topics)]} and why"
                      for i in range(per_session)] for s in range(n_sessions)}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A built project whose log also holds session.work notes (indexed, not trained on)."""
    root = tmp_path_factory.mktemp("search") / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    make_tiny_model(root / "model", dim=8)
    make_sqlite_eventlog(root / "events.db", notes())
    make_sqlite_eventlog(root / "events.db", {"s9": ["work item on the cache key eviction code",
                                                     "short"]}, event_type="session.work")
    (root / "recipes/a").mkdir(parents=True)
    (root / "recipes/a/oxidize.yaml").write_text(RECIPE)
    run(root)
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    # A SQLite reader's -wal/-shm files come and go with its connection; copying beside one
    # can list a file that is gone a moment later. Such a copy is tried again.
    for attempt in range(3):
        try:
            return Path(shutil.copytree(built, tmp_path / "proj", symlinks=True))
        except shutil.Error:
            shutil.rmtree(tmp_path / "proj", ignore_errors=True)
            if attempt == 2:
                raise


def test_index_holds_the_search_population_keyed_by_seq(built: Path):
    table = sqlite3.connect(built / "build/a/semantic/index.sqlite")
    rows = table.execute("SELECT key, seq, event_type, text FROM items ORDER BY key").fetchall()
    log = sqlite3.connect(built / "events.db")
    expected = [(seq, seq, kind, json.loads(data)["content"]) for seq, kind, data in log.execute(
        "SELECT seq, event_type, data FROM eventlog ORDER BY seq")
        if len(json.loads(data)["content"]) > 20]
    assert rows == expected  # every note longer than min_chars, session.work included
    assert any(kind == "session.work" for _, _, kind, _ in rows)
    assert not any(text == "short" for *_, text in rows)
    from usearch.index import Index

    index = Index.restore(str(built / "build/a/semantic/index.usearch"))
    assert len(index) == len(rows) and index.ndim == 8
    assert sorted(int(k) for k in index.keys) == [r[0] for r in rows]


def test_query_json_returns_k_results_with_the_fields(built: Path):
    proc = run(built, "query", "--json", "-p", "a:semantic", "-k", "5", "cache key eviction")
    hits = json.loads(proc.stdout)
    assert len(hits) == 5 and all(set(h) == FIELDS for h in hits)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert {h["search"] for h in hits} == {"0.5lexical+0.5raw"}  # the default: no history questions
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert proc.stderr == ""  # up to date: no warning


def test_query_embeds_with_the_query_prefix_and_projects(built: Path):
    """Dense scores are cosines of the projected query and the projected items."""
    sys.path.insert(0, str(built))
    from oxidize.search import open_search
    from oxidize.projection import project

    search = open_search("a:semantic", built)
    hits = search.query("parser token grammar", k=3, mode="dense")
    vector = project(search.weights, search.embed_query("parser token grammar")[None, :])[0]
    table = sqlite3.connect(built / "build/a/semantic/index.sqlite")
    for hit in hits:
        text = table.execute("SELECT text FROM items WHERE key = ?", (hit.key,)).fetchone()[0]
        item = project(search.weights, search.encoder().encode([text])[0][None, :])[0]
        assert hit.score == pytest.approx(float(vector @ item), abs=1e-3)
    base = search.query("parser token grammar", k=3, base=True, mode="dense")
    assert len(base) == 3 and base[0].score >= base[-1].score


def test_compare_and_base_modes(built: Path):
    compared = json.loads(run(built, "query", "--compare", "--json", "-k", "4", "release build").stdout)
    assert set(compared) == {"projection", "base"} and len(compared["base"]) == 4
    text = run(built, "query", "--compare", "-k", "4", "release build").stdout
    assert "projection" in text.splitlines()[0] and "brought" in text.splitlines()[-1]
    # --compare's right side is the plain embedding's dense search
    base = json.loads(run(built, "query", "--base", "--mode", "dense", "--json", "-k", "4",
                          "release build").stdout)
    assert [h["key"] for h in base] == [h["key"] for h in compared["base"]]
    # the left side reads the projection: the default search does not (no history questions
    # chose one that does), so --compare shows `hybrid`, lexical mixed with the projection
    hybrid = json.loads(run(built, "query", "--mode", "hybrid", "--json", "-k", "4", "release build").stdout)
    assert [h["key"] for h in hybrid] == [h["key"] for h in compared["projection"]]
    assert {h["search"] for h in compared["projection"]} == {"0.5lexical+0.5dense"}


def test_appending_events_embeds_only_the_new_texts_and_a_stale_index_warns(project: Path):
    append_session(project / "events.db", "s10", ["a brand new note about the release build pipeline"])
    stale = run(project, "query", "-k", "3", "release build")
    assert stale.stderr.startswith("oxidize: warning: the index of a:semantic is stale (")
    assert "event" in stale.stderr and len(stale.stderr.splitlines()) == 1
    out = run(project).stdout
    line = next(l for l in out.splitlines() if "indexed" in l or "updated the index" in l)
    assert "1 embedded" in line and "(1 added, 0 removed" in line, line
    keys = {h["key"] for h in json.loads(run(project, "query", "--json", "-k", "40", "x").stdout)}
    assert max(keys) == sqlite3.connect(project / "events.db").execute(
        "SELECT max(seq) FROM eventlog").fetchone()[0]


@pytest.mark.parametrize("args, expected", [
    (("query",), "give the text to search for"),
    (("query", "-k", "0", "x"), "-k must be from 1 to 10,000"),
    (("query", "-p", "a:nope", "x"), "no projection 'a:nope'; the projections are: a:semantic"),
])
def test_bad_queries_are_one_line(built: Path, args, expected):
    proc = run(built, *args, check=False)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [f"ERROR: oxidize: {proc.stderr.split('oxidize: ', 1)[1].strip()}"]
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_missing_truncated_and_mismatched_indexes_are_one_line(project: Path):
    index = project / "build/a/semantic/index.usearch"
    data = index.read_bytes()
    index.write_bytes(data[: len(data) // 2])
    proc = run(project, "query", "x", check=False)
    assert proc.returncode == 3 and "index.usearch: not a readable USearch index" in proc.stderr
    assert "Traceback" not in proc.stderr
    index.write_bytes(data)
    table = sqlite3.connect(project / "build/a/semantic/index.sqlite")
    table.execute("UPDATE meta SET value = '3' WHERE name = 'count'")
    table.commit()
    table.close()
    from oxidize.errors import SearchError
    from oxidize.search.index import Searcher

    with pytest.raises(SearchError, match="holds .* vectors, index.sqlite 3 items"):
        Searcher(project / "build/a/semantic", retries=1)
    shutil.rmtree(project / "build/a/semantic")
    proc = run(project, "query", "x", check=False)
    assert proc.returncode == 3 and "has no search index yet; build it with `doit a:semantic`" in proc.stderr


def test_projection_onnx_equals_the_forward_pass(built: Path):
    import onnx
    import onnxruntime as ort

    from oxidize.projection import load_weights, project

    path = built / "build/a/semantic/projection.onnx"
    model = onnx.load(str(path))
    assert model.ir_version == 8 and model.opset_import[0].version == 17
    weights = load_weights(built / "build/a/semantic/weights.safetensors")
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    x[3] = 0.0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["projected"], {"base": x})
    assert out.shape == (50, 8) and np.isfinite(out).all()
    np.testing.assert_allclose(out, project(weights, x), atol=1e-5)


def test_onnx_export_of_zero_output_gives_zero_not_nan(tmp_path: Path):
    import onnxruntime as ort

    from oxidize.projection import export_onnx, project

    rng = np.random.default_rng(1)
    weights = {"w1": rng.normal(size=(6, 4)).astype(np.float32), "b1": np.zeros(6, np.float32),
               "w2": np.zeros((3, 6), np.float32), "b2": np.zeros(3, np.float32),
               "w0": rng.normal(size=(3, 4)).astype(np.float32)}
    export_onnx(tmp_path / "p.onnx", weights)
    x = np.vstack([np.zeros((1, 4), np.float32), rng.normal(size=(4, 4)).astype(np.float32)])
    (out,) = ort.InferenceSession(str(tmp_path / "p.onnx"),
                                  providers=["CPUExecutionProvider"]).run(None, {"base": x})
    assert (out[0] == 0).all()
    np.testing.assert_allclose(out, project(weights, x), atol=1e-5)


def test_cli_speaks_for_oxidize():
    from oxidize import __version__

    out = subprocess.run([sys.executable, "-m", "oxidize.engine.cli", "--version"],
                         capture_output=True, text=True).stdout
    assert out.startswith(f"oxidize {__version__} (doit ")
    helptext = subprocess.run([sys.executable, "-m", "oxidize.engine.cli", "--help"],
                              capture_output=True, text=True).stdout
    for command in ("list", "stale", "query", "cache-key", "info"):
        assert f"oxidize {command}" in helptext


WRITER = """
import sys, numpy as np
from pathlib import Path
from oxidize.search.index import write_index
from oxidize.search.population import Item
out, rounds = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
for r in range(rounds):
    n, first = (30, 1) if r % 2 else (40, 101)
    items = [Item(first + i, first + i, "session.decision", "s", "2025-01-01", f"text {first + i}")
             for i in range(n)]
    v = rng.normal(size=(n, 4)).astype(np.float32)
    write_index(out, items, v, v, {"round": r})
print("done")
"""


def test_a_query_during_a_rebuild_reads_the_old_or_the_new_index(tmp_path: Path):
    """A real second process rewrites the index over and over while this one searches: every
    hit is found in the table it was read with (never a half-written or mixed pair)."""
    from oxidize.errors import SearchError
    from oxidize.search.index import Searcher, write_index
    from oxidize.search.population import Item

    items = [Item(i, i, "session.decision", "s", "2025-01-01", f"text {i}") for i in range(1, 31)]
    v = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    write_index(tmp_path, items, v, v, {})
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    searched, refused = 0, []
    try:
        while writer.poll() is None:
            try:
                searcher = Searcher(tmp_path, retries=50)
            except SearchError as exc:
                refused.append(str(exc))
                continue
            hits = searcher.search(np.ones(4, np.float32), 5)
            assert hits and all(h.event_type == "session.decision" and h.snippet == f"text {h.key}"
                                for h in hits), hits
            searcher.close()
            searched += 1
    finally:
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0 and out.strip() == "done", err
    assert searched > 0 and not refused, refused


def test_a_search_held_open_can_embed_after_opening_its_index(built: Path):
    """The order a Python user takes (open the index, then query) must not crash: importing
    usearch before onnxruntime crashes the process (oxidize.search.index imports them in order)."""
    code = ("from oxidize.search import open_search; import sys; s = open_search('a:semantic', sys.argv[1]); "
            "s.searcher(); print(len(s.query('parser token grammar', k=3)))")
    proc = subprocess.run([sys.executable, "-c", code, str(built)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "3"


@pytest.mark.parametrize("command", ["query", "bench"])
def test_help_is_printed_for_a_search_command_that_is_given_help(built: Path, command: str):
    """doit's commands take no ``--help`` (``doit help query`` is doit's way), and users type
    it first: it prints the command's help, not an option-parsing error."""
    proc = run(built, command, "--help")
    assert proc.returncode == 0 and "USAGE" in proc.stdout and f"{command} [-p RECIPE:PROJECTION]" in proc.stdout
    assert "not recognized" not in proc.stderr
