"""Recall that holds: each index measures how wide its graph search must look to find 0.99 of
the true nearest neighbours, records it, and every search uses it (oxidize/index.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from oxidize import index as ix
from oxidize import index_recall as rc


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 50), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_top_reads_in_blocks_and_agrees_with_one_product():
    x = clustered(1000)
    q = clustered(7, seed=1)
    whole = np.argsort(-(q @ x.T), axis=1)[:, :10]
    blocks = rc.exact_top(x, q, 10, block=64)
    assert [sorted(b) for b in blocks] == [sorted(w.tolist()) for w in whole]


def searched_graph(x: np.ndarray, keys: np.ndarray):
    """A graph of oxidize's settings over ``x``, searched as the product does (its i8
    candidates re-ranked by the exact rows), inserted on one thread: threaded inserts are
    not deterministic."""
    from oxidize.vector_rows import KeyedRows, RerankedGraph

    index = ix.new_index(x.shape[1])
    index.add(keys, x, threads=1)
    return RerankedGraph(index, KeyedRows(x, keys))


def test_calibration_reports_the_recall_of_the_expansion_it_sets():
    x = clustered(3000)
    keys = np.arange(100, 3100, dtype=np.uint64)
    index = searched_graph(x, keys)
    got = rc.calibrate(index, x, keys)
    assert got["expansion_search"] in rc.EXPANSION_STEPS and index.expansion_search == got["expansion_search"]
    assert got["recall@10"] >= rc.RECALL_TARGET
    unreachable = rc.calibrate(index, x, keys, target=1.01)  # every step tried, the last kept
    assert unreachable["expansion_search"] == rc.EXPANSION_STEPS[-1] and unreachable["recall@10"] <= 1.0


def test_the_written_index_records_its_search_and_the_searcher_uses_it(tmp_path: Path, monkeypatch):
    from oxidize.population import Item

    monkeypatch.setattr(ix, "EXACT_MAX_FUSED", 100)  # calibrate even this small index
    n = 600
    base, projected = clustered(n, 24, 2), clustered(n, 16, 3)
    items = [Item(i + 1, i + 1, "session.decision", f"s{i // 5}", "2025-01-01", f"note {i}") for i in range(n)]
    ix.write_index(tmp_path, items, base, projected, {})
    meta = {k: json.loads(v) for k, v in sqlite3.connect(tmp_path / ix.TABLE_FILE).execute("SELECT * FROM meta")}
    searched = meta["search"][ix.INDEX_FILE]
    assert searched["recall@10"] >= rc.RECALL_TARGET
    # the graph reached the target, or (rarely: threaded inserts) it did not and the
    # index is searched exactly
    assert not searched["exact"] or searched["graph_recall@10"] < rc.RECALL_TARGET
    assert meta["search"][ix.BASE_SEARCH]["exact"]  # the plain embeddings: no graph
    # USearch forgets the expansion on restore (it came back as 64): the searcher sets it
    table = sqlite3.connect(tmp_path / ix.TABLE_FILE)
    searched = dict(meta["search"])
    searched[ix.INDEX_FILE] = {**searched[ix.INDEX_FILE], "expansion_search": 777}
    table.execute("UPDATE meta SET value = ? WHERE name = 'search'", (json.dumps(searched),))
    table.commit()
    table.close()
    assert ix.Searcher(tmp_path).graph.expansion_search == 777


def test_a_graph_short_of_the_target_is_searched_exactly(tmp_path: Path, monkeypatch):
    from oxidize.population import Item

    monkeypatch.setattr(ix, "EXACT_MAX_FUSED", 100)
    monkeypatch.setattr(ix, "RECALL_TARGET", 1.01)  # as index.py reads it  # no graph reaches it
    n = 400
    base, projected = clustered(n, 24, 4), clustered(n, 16, 5)
    items = [Item(i + 1, i + 1, "session.decision", f"s{i}", "2025-01-01", f"note {i}") for i in range(n)]
    ix.write_index(tmp_path, items, base, projected, {})
    searcher = ix.Searcher(tmp_path)
    assert searcher.exact and searcher.searched["graph_recall@10"] <= 1.0
    queries = clustered(20, 16, 6)
    for q in queries:
        truth = np.argsort(-(projected @ q))[:10] + 1
        assert [key for key, _ in searcher.nearest(q, 10)] == truth.tolist()
    monkeypatch.setattr(ix, "EXACT_FALLBACK_MAX", n - 1)  # too large to search exactly: the graph stays
    ix.write_index(tmp_path, items, base, projected, {})
    assert not ix.Searcher(tmp_path).exact


def test_a_search_says_when_the_recorded_recall_is_below_target():
    from types import SimpleNamespace

    from oxidize.search import ProjectionSearch

    class FakeSearcher:
        def __init__(self, n, searched, base=False):
            self.n, self.searched, self.base = n, searched, base

        def __len__(self):
            return self.n

    search = ProjectionSearch(SimpleNamespace(name="r"), "p", "/nowhere")
    search._recall_notice(FakeSearcher(ix.EXACT_MAX_FUSED + 1, {"recall@10": 0.71, "exact": False}))
    assert search.notices == ["the projected index of r:p finds about 0.71 of the true 10 nearest "
                              "items in its graph (measured when built; target 0.99)"]
    quiet = ProjectionSearch(SimpleNamespace(name="r"), "p", "/nowhere")
    quiet._recall_notice(FakeSearcher(ix.EXACT_MAX_FUSED + 1, {"recall@10": 0.995, "exact": False}))
    quiet._recall_notice(FakeSearcher(50, {"recall@10": 0.5, "exact": False}))  # searched exactly
    assert quiet.notices == []


def test_identical_vectors_are_not_misses_between_themselves():
    """The same text indexed many times (notes with one content) gives identical vectors:
    whichever of them the graph returns is a true nearest neighbour. Fifteen copies of each
    vector: which ten of a query's fifteen equal answers exact search lists is arbitrary, so
    counting keys would call a third of the graph's right answers misses.

    Inserted on one thread (:func:`searched_graph`)."""
    x = clustered(200)
    many = np.concatenate([x] * 15)
    keys = np.arange(1, 3001, dtype=np.uint64)
    index = searched_graph(many, keys)
    got = rc.calibrate(index, many, keys)
    assert got["recall@10"] >= rc.RECALL_TARGET and got["expansion_search"] < rc.EXPANSION_STEPS[-1]
    queries = clustered(300, seed=9)
    found = index.search(queries, 10).keys
    by_key = [len({int(k) - 1 for k in f} & set(t)) / 10 for f, t in zip(found, rc.exact_top(many, queries, 10))]
    assert np.mean(by_key) < 0.9  # what a count of keys would have said


def test_the_recorded_recall_is_measured_on_queries_that_did_not_choose_the_expansion(monkeypatch):
    """The expansion is chosen on one sample and its recall measured on another; where the
    other finds less than the target the expansion rises."""
    x = clustered(3000)
    keys = np.arange(1, 3001, dtype=np.uint64)
    index = searched_graph(x, keys)
    measured = []
    real = rc._RecallProbe.recall

    def recall(probe, graph, expansion):
        got = real(probe, graph, expansion)
        measured.append((id(probe), expansion, got))
        # the second sample is told less than it finds until the expansion is 256
        return got if len({m[0] for m in measured}) == 1 or expansion >= 256 else 0.5

    monkeypatch.setattr(rc._RecallProbe, "recall", recall)
    got = rc.calibrate(index, x, keys)
    probes = list(dict.fromkeys(m[0] for m in measured))
    assert len(probes) == 2
    chose = [e for p, e, _ in measured if p == probes[0]]
    checked = [e for p, e, _ in measured if p == probes[1]]
    assert chose == [rc.EXPANSION_STEPS[0]]  # the easy sample clears the target at once
    assert checked == [128, 192, 256] and got["expansion_search"] == 256
    assert got["recall@10"] == round(measured[-1][2], 4) and got["calibration_recall@10"] >= 0.995

