"""Search that answers questions: the lexical index, hybrid fusion, snippets, query sets
(`doit bench`, `eval.queries`), and a search that keeps the index's own weights.

End to end on a small project (tiny ONNX model, SQLite log in patina's schema), as in
test_search.py; the pure parts (query terms, fusion, snippets, the query-set rules) are
checked directly, the never-fails promise of the lexical side with hypothesis.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlog_factory import make_sqlite_eventlog
from test_search import run  # doit in a subprocess, the same way
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
    eval:
      queries: [questions.json]
"""
TOPICS = ["database migration schema", "parser token grammar", "cache key eviction",
          "release build pipeline", "network retry timeout", "test fixture mock"]
LEAD_IN = ("Quick summary for whoever reads these notes next, based on what we saw while pairing "
           "today and on what the reviewers asked about: ")
QUESTIONS = {"name": "tiny-questions", "queries": [
    {"id": "zebra", "query": "where did we write about the zebracorn flag?", "relevant_docs": ["s2"]},
    {"id": "parser", "query": "what happened to the parser grammar?", "relevant_docs": ["s1", "s7"]},
    {"id": "cache", "query": "cache eviction", "relevant": ["s2"]},
]}


def notes() -> dict[str, list[str]]:
    out = {f"s{s}": [f"{LEAD_IN}decision {i} in session {s} about the {TOPICS[s % len(TOPICS)]} and why"
                     for i in range(5)] for s in range(8)}
    out["s2"].append(f"{LEAD_IN}the zebracorn flag turns the eviction off while we measure")
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hybrid") / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    make_tiny_model(root / "model", dim=8)
    make_sqlite_eventlog(root / "events.db", notes())
    (root / "recipes/a").mkdir(parents=True)
    (root / "recipes/a/oxidize.yaml").write_text(RECIPE)
    (root / "recipes/a/questions.json").write_text(json.dumps(QUESTIONS))
    run(root)
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "proj", symlinks=True))


@pytest.fixture(scope="module")
def search(built: Path):
    from oxidize.search import open_search

    return open_search("a:semantic", built)


# ------------------------------------------------------------------ the lexical side

def test_query_terms_are_plain_words_without_the_question_frame():
    from oxidize.search.lexical import MAX_TERMS, match_expression, query_terms

    assert query_terms('How do we "store" embeddings -- NEAR(a b) AND c* OR d:e?') == \
        ["store", "embeddings", "near"]  # "and", "or" are stop words, "a" too short
    assert match_expression(["store", 'x"y']) == '"store" OR "x""y"'
    assert match_expression(query_terms("where is the? 🦀🦀")) is None
    many = query_terms(" ".join(f"word{i}" for i in range(500)))
    assert len(many) == MAX_TERMS and many[0] == "word0"


def test_the_lexical_index_is_in_the_table_and_finds_a_rare_word(built: Path, search):
    table = sqlite3.connect(built / "build/a/semantic/index.sqlite")
    assert table.execute("SELECT count(*) FROM lexical").fetchone()[0] == \
        table.execute("SELECT count(*) FROM items").fetchone()[0]
    hits = search.query("zebracorn", k=3, mode="lexical")
    assert hits[0].source_id == "s2" and "zebracorn" in hits[0].snippet
    assert hits[0].lexical_rank == 1 and hits[0].dense_rank is None
    # porter stems: "evicting" finds "eviction"
    assert search.query("evicting", k=1, mode="lexical")[0].source_id == "s2"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=200).filter(str.strip))
def test_any_text_searches_and_never_fails(search, text):
    hits = search.searcher(False).lexical(text, 5)
    assert isinstance(hits, list)


@pytest.mark.parametrize("text", ['"unbalanced', "a - b", "*", "c:d", "NEAR(x y, 2)", "AND OR NOT",
                                  "zebracorn^ OR", "🦀 emoji 🦀", "x" * 100_000])
def test_fts5_syntax_in_a_query_is_just_words(built: Path, text):
    proc = run(built, "query", "-k", "3", "--json", text)
    assert proc.returncode == 0 and isinstance(json.loads(proc.stdout), list)


def test_a_100_kb_query_of_words_searches(built: Path):
    # (lexical alone: the tiny test model has 64 positions, fewer than the encoder's 512)
    text = " ".join(["zebracorn eviction"] * 5_000)
    hits = json.loads(run(built, "query", "-k", "3", "--json", "--mode", "lexical", text).stdout)
    assert hits[0]["source_id"] == "s2"


# ------------------------------------------------------------------ fusion

def test_fusion_ranks_agreement_first_and_reports_each_rank():
    from oxidize.search.fusion import fuse

    fused = fuse([([1, 2, 3], 1.0), ([3, 4, 1], 1.0)], k=10, rrf_k=60)
    keys = [key for key, *_ in fused]
    assert keys[:2] == [1, 3]  # in both lists; 1 ranks better in the first
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    assert dict((key, ranks) for key, _, ranks in fused)[4] == [None, 2]
    assert len(fuse([([1, 2, 3], 1.0)], k=2)) == 2
    # a weight of 0.5 on the second list lets the first list's order win
    assert [k for k, *_ in fuse([([1, 2], 1.0), ([2, 1], 0.5)], k=2)] == [1, 2]


def test_hybrid_finds_what_only_the_words_find(search):
    hits = search.query("zebracorn", k=5)
    assert hits[0].source_id == "s2" and hits[0].lexical_rank == 1
    assert all(h.dense_rank is not None or h.lexical_rank is not None for h in hits)
    dense = search.query("zebracorn", k=5, mode="dense")
    assert all(h.lexical_rank is None for h in dense)


def test_json_has_both_ranks_and_a_bad_mode_is_one_line(built: Path):
    hits = json.loads(run(built, "query", "--json", "-k", "3", "zebracorn eviction").stdout)
    assert {"dense_rank", "lexical_rank"} <= set(hits[0])
    proc = run(built, "query", "--mode", "fuzzy", "x", check=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr and "fuzzy" in proc.stderr


# ------------------------------------------------------------------ snippets

def test_snippet_shows_the_matching_sentence_not_the_lead_in():
    from oxidize.search.snippets import best_snippet, mark

    text = LEAD_IN + "We keep embeddings in a content-addressed cache keyed by the model. Then we left."
    snippet = best_snippet(text, "how do we store embeddings", width=80)
    assert snippet.startswith("…We keep embeddings") and len(snippet) <= 80
    assert best_snippet("short text", "anything") == "short text"
    # no shared word: the caller's nearest sentence is shown
    assert best_snippet(text, "zzz", width=80, nearest=lambda s: len(s) - 1).startswith("…Then we left")
    assert mark("we stored the keys", "store key", "[", "]") == "we [stored] the [keys]"


def test_cli_snippets_skip_the_lead_in_and_plain_output_has_no_escape_codes(built: Path):
    out = run(built, "query", "-k", "3", "zebracorn flag").stdout
    first = out.splitlines()[0]
    assert "zebracorn" in first and "Quick summary" not in first and "\033[" not in out


def test_marking_is_bold_on_a_terminal(built: Path):
    from oxidize.engine.cmd_query import _marker

    class Tty:
        def isatty(self):
            return True

    assert _marker(Tty(), "zebracorn")("the zebracorn flag") == "the \033[1mzebracorn\033[0m flag"


# ------------------------------------------------------------------ query sets

def test_the_bench_rule_matches_ids_either_way_and_counts_recall():
    from oxidize.search.queryset import BenchQuery

    q = BenchQuery("q", "x", ("src/a.rs", "3f2a9c1"), ())
    assert q.answers("src/a.rs") and q.answers("3f2a9c1d0e") and not q.answers("src/b.rs")
    assert not q.answers("")
    assert q.reciprocal_rank(["x", "src/a.rs"]) == 0.5
    assert q.reciprocal_rank(["x"] * 10 + ["src/a.rs"]) == 0.0
    assert q.recall(["src/a.rs", "3f2a9c1dd", "y"], 5) == 1.0 and q.recall(["src/a.rs"], 5) == 0.5
    legacy = BenchQuery("k", "x", (), ("CACHE",))
    assert legacy.answers("src/cache.rs") and not legacy.answers("src/main.rs")


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not JSON"),
    ('{"name": "x", "queries": []}', "no queries"),
    ('{"queries": [{"id": "q7", "query": "why?"}]}', "query 'q7': no ground truth"),
    ('{"queries": [{"id": "q1", "query": "", "relevant_docs": ["a"]}]}', "query 'q1': no query text"),
    ('{"queries": [{"query": "why", "relevant_docs": ["a"]}]}', "query #1: no 'id'"),
    ('{"queries": [{"id": "a", "query": "w", "relevant_docs": "s1"}]}', "'relevant_docs' must be a list"),
])
def test_a_bad_query_set_is_one_line_naming_the_file_and_query(tmp_path: Path, content, expected):
    from oxidize.search.queryset import QuerySetError, load_query_set

    path = tmp_path / "set.json"
    path.write_text(content)
    with pytest.raises(QuerySetError) as err:
        load_query_set(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_bench_prints_five_searches_and_json(built: Path):
    out = run(built, "bench", "recipes/a/questions.json").stdout
    for name in ("raw dense", "projection dense", "lexical", "hybrid raw", "hybrid projection", "auto: "):
        assert name in out
    data = json.loads(run(built, "bench", "--json", "-p", "a:semantic", "recipes/a/questions.json").stdout)
    result = data["tiny-questions"]
    assert set(result) == {"raw dense", "projection dense", "lexical", "hybrid raw", "hybrid projection", "auto"}
    for name, r in result.items():
        assert set(r) == {"mrr@10", "recall@5", "recall@10", "queries", "p50_ms", "p95_ms"} | (
            {"search"} if name == "auto" else set())
        assert 0 <= r["mrr@10"] <= 1 and r["p95_ms"] >= r["p50_ms"] > 0 and r["queries"] == 3
    assert result["lexical"]["mrr@10"] > 0  # "zebracorn" is found by its word
    # auto is what the build chose (here, with no history questions, the default: lexical and
    # the raw embedding half and half, "hybrid raw")
    assert result["auto"]["search"] == "0.5lexical+0.5raw"
    assert result["auto"]["mrr@10"] == result["hybrid raw"]["mrr@10"]


def test_bench_with_a_bad_set_is_one_line(built: Path, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"queries": [{"id": "q3", "query": "why?"}]}')
    proc = run(built, "bench", str(bad), check=False)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert f"{bad}: query 'q3': no ground truth" in proc.stderr


def test_eval_scores_the_query_sets_into_metrics(built: Path, search):
    from oxidize.search.queryset import load_query_set, score

    metrics = json.loads((built / "build/a/semantic/metrics.json").read_text())
    (entry,) = metrics["query_sets"]
    assert entry["name"] == "tiny-questions" and entry["queries"] == 3
    expected = score(search, load_query_set(built / "recipes/a/questions.json"), timed=False)
    assert entry["results"] == expected


def test_a_changed_query_set_is_stale_and_named(project: Path):
    path = project / "recipes/a/questions.json"
    data = json.loads(path.read_text())
    data["queries"].append({"id": "new", "query": "network retry", "relevant_docs": ["s4"]})
    path.write_text(json.dumps(data))
    out = run(project, "stale", check=False).stdout
    assert "a:semantic.eval" in out and "questions.json" in out
    built_out = run(project).stdout
    assert "query set tiny-questions (4 queries)" in built_out
    ran = [line[3:] for line in built_out.splitlines() if line.startswith(".  ")]
    assert ran == ["a:semantic.eval", "a:lock"]  # only eval (and the lock) re-ran


def test_gate_base_compares_dense_with_dense_and_hybrid_with_hybrid(project: Path):
    from oxidize.engine.search_stages import _below_raw

    r = {"raw dense": {"mrr@10": 0.5}, "projection dense": {"mrr@10": 0.4},
         "hybrid raw": {"mrr@10": 0.6}, "hybrid projection": {"mrr@10": 0.6}}
    assert _below_raw(r) == ["projection dense mrr@10 0.4000 is below raw dense 0.5000"]
    recipe = project / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text() + "    gate: base\n")
    proc = run(project, check=False)
    metrics = json.loads((project / "build/a/semantic/metrics.json").read_text())
    below = _below_raw(metrics["query_sets"][0]["results"])
    heldout_below = metrics["projection"]["mrr@10"] < metrics["base"]["mrr@10"]
    assert (proc.returncode != 0) == bool(below or heldout_below)
    for what in below:
        assert what in proc.stdout + proc.stderr


def test_eval_queries_must_be_a_list_of_paths(tmp_path: Path):
    from oxidize.errors import RecipeError
    from oxidize.recipe import parse_recipe

    with pytest.raises(RecipeError, match=r"projections\.p\.eval\.queries: expected a list of query set"):
        parse_recipe({"version": 1, "projections": {"p": {"eval": {"queries": [3]}}}}, tmp_path / "r.yaml", "r")
    with pytest.raises(RecipeError, match=r"projections\.p\.eval\.query: unknown key 'query'; did you mean 'queries'"):
        parse_recipe({"version": 1, "projections": {"p": {"eval": {"query": []}}}}, tmp_path / "r.yaml", "r")


# ------------------------------------------------------------------ the index keeps its weights

def test_a_stale_index_is_searched_with_the_weights_it_was_built_with(project: Path):
    from oxidize.projection import load_weights
    from oxidize.search import open_search

    before = open_search("a:semantic", project).query("parser grammar", k=5, mode="dense")
    recipe = project / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("epochs: 2", "epochs: 3").replace("pairs: 200", "pairs: 150")
                      .replace("batch_size: 16", "batch_size: 8"))
    run(project, "a:semantic.train")  # new weights, the index not rebuilt
    search = open_search("a:semantic", project)
    new = load_weights(project / "build/a/semantic/weights.safetensors")
    assert any((search.weights[k] != new[k]).any() for k in new)  # the index's own weights
    after = search.query("parser grammar", k=5, mode="dense")
    assert [(h.key, h.score) for h in after] == [(h.key, h.score) for h in before]
    proc = run(project, "query", "parser grammar")
    assert "is stale" in proc.stderr


def test_an_index_without_a_lexical_part_searches_dense_with_a_notice(project: Path):
    table = sqlite3.connect(project / "build/a/semantic/index.sqlite")
    table.execute("DROP TABLE lexical")
    table.commit()
    table.close()
    proc = run(project, "query", "-k", "2", "zebracorn")
    assert "no lexical part" in proc.stderr and len(proc.stdout.splitlines()) == 2
    proc = run(project, "query", "--mode", "lexical", "zebracorn", check=False)
    assert proc.returncode == 3 and "no lexical index" in proc.stderr and "Traceback" not in proc.stderr
