"""The search a build chooses on its history questions, end to end: the pairs step writes the
questions, the index step records its choice, eval reports the five searches on them, the
lock keeps the choice, and `doit query` / `doit bench` / the Python API answer with it."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from test_gitlog import FILES, commit, make_repo, run
from tiny_model import make_tiny_model

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

TOPICS = {"src/fusion.py": "reciprocal rank fusion of ranked lists", "src/rank.py": "ranking helpers sort",
          "core/store.rs": "vectors stored on disk", "core/index.rs": "nearest neighbour index search",
          "docs/guide.md": "guide how to build install", "docs/faq.md": "faq cache slow",
          "cmd/main.go": "server starts main package", "cmd/serve.go": "serving requests"}
RECIPE = """\
version: 1
embedding_model: tiny
model_dir: ../../model
eventlog: {git: ../../repo}
projections:
  temporal:
    layers: [null, 16, 8]
    epochs: 1
    batch_size: 8
    training:
      pairs: 100
      holdout: 0.5
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("choice") / "proj"
    make_repo(root / "repo")
    for k in range(48):  # commits whose subjects say what their file is for
        path = list(TOPICS)[k % len(TOPICS)]
        commit(root / "repo", {path: FILES[path] + f"# edit {k}\n"}, f"improve the {TOPICS[path]} ({k})")
    make_tiny_model(root / "model", dim=8)
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    (root / "recipes/r").mkdir(parents=True)
    (root / "recipes/r/oxidize.yaml").write_text(RECIPE)
    proc = run(root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root


def test_the_later_half_of_the_history_asks_and_the_build_measures_it(built: Path):
    out = built / "build/r/temporal"
    history = json.loads((out / "history_queries.json").read_text())
    assert len(history["queries"]) == 32  # the later half of the 64 commits
    assert history["queries"][0]["query"].startswith("improve the ")
    assert all(len(q["relevant_docs"]) == 1 and q["relevant_docs"][0] in TOPICS for q in history["queries"])
    meta = dict(sqlite3.connect(out / "index.sqlite").execute("SELECT name, value FROM meta"))
    choice = json.loads(meta["search_choice"])
    assert choice["questions"] == 32 and choice["search"] == choice["default"] == "0.5lexical+0.5raw"
    assert set(choice["scores"]) >= {"lexical", "dense", "raw", "0.5lexical+0.5raw"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"]["queries"] == 32 and metrics["history"]["search"] == "0.5lexical+0.5raw"
    assert set(metrics["history"]["results"]) == {"raw dense", "projection dense", "lexical", "hybrid raw",
                                                  "hybrid projection"}
    # the subjects name each file's topic: the words find every answer first
    assert metrics["history"]["results"]["lexical"]["mrr@10"] == 1.0
    lock = (built / "recipes/r/oxidize.lock").read_text()
    assert 'search = "0.5lexical+0.5raw"' in lock


def test_query_bench_and_the_api_answer_with_what_the_index_recorded(built: Path, tmp_path: Path):
    from oxidize.search.index import record_meta

    out = built / "build/r/temporal"
    table = out / "index.sqlite"
    saved = table.read_bytes()
    try:
        choice = json.loads(dict(sqlite3.connect(table).execute("SELECT name, value FROM meta"))["search_choice"])
        record_meta(out, "search_choice", {**choice, "search": "lexical"})
        hits = json.loads(run(built, "query", "--json", "-k", "3", "reciprocal rank fusion").stdout)
        assert {h["search"] for h in hits} == {"lexical"} and hits[0]["source_id"] == "src/fusion.py"
        assert all(h["dense_rank"] is None for h in hits)  # no dense list was searched
        mixed = json.loads(run(built, "query", "--json", "--mode", "hybrid", "-k", "3", "rank fusion").stdout)
        assert {h["search"] for h in mixed} == {"0.5lexical+0.5dense"}  # --mode overrides the choice
        sys.path.insert(0, str(built))
        from oxidize.search import open_search

        assert open_search("r:temporal", built).fusion().name == "lexical"
        questions = tmp_path / "q.json"
        questions.write_text(json.dumps({"name": "q", "queries": [
            {"id": "a", "query": "ranked lists fusion", "relevant_docs": ["src/fusion.py"]}]}))
        bench = json.loads(run(built, "bench", "--json", str(questions)).stdout)["q"]
        assert bench["auto"]["search"] == "lexical" and bench["auto"]["mrr@10"] == bench["lexical"]["mrr@10"]
        # the lock follows the recorded choice, and `stale --locked` names the change
        stale = run(built, "stale", "--locked")
        assert stale.returncode == 1 and 'semantic' not in stale.stdout
        assert 'temporal.search: committed "0.5lexical+0.5raw" vs built "lexical"' in stale.stdout
    finally:
        table.write_bytes(saved)
    assert run(built, "stale", "--locked").returncode == 0


def test_gate_base_judges_on_the_history_questions(built: Path, tmp_path: Path, capsys):
    from oxidize.search.index import record_meta

    copy = tmp_path / "proj"
    shutil.copytree(built, copy, symlinks=True)
    out = copy / "build/r/temporal"
    choice = json.loads(dict(sqlite3.connect(out / "index.sqlite").execute("SELECT name, value FROM meta"))
                        ["search_choice"])
    figures = lambda mrr: {"mrr@10": mrr, "recall@5": mrr, "recall@10": mrr, "queries": 32}  # noqa: E731
    # as if the projection ranked the history questions far below the raw embedding
    record_meta(out, "search_choice", {**choice, "scores": {**choice["scores"], "dense": figures(0.2),
                                                            "raw": figures(0.5)}})
    recipe = copy / "recipes/r/oxidize.yaml"
    recipe.write_text(RECIPE.replace("    batch_size: 8\n", "    batch_size: 8\n    gate: base\n"))
    from oxidize.engine.search_stages import build_eval

    failed = build_eval(str(recipe), "r", "temporal", str(out))  # the eval step alone, in process
    assert ("fails its gate 'base': history questions: projection dense mrr@10 0.2000 is below raw dense "
            "0.5000") in str(failed)
    assert "the projection ranks these questions below the raw embedding (0.200 vs 0.500)" in capsys.readouterr().out
