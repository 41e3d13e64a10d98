"""Recall that holds: each index measures how wide its graph search must look to find 0.99 of
the true nearest neighbours, records it, and every search uses it (oxidize/search/index.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from oxidize.search import index as ix
from oxidize.search import recall as rc


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
    from oxidize.search.vector_rows import KeyedRows, RerankedGraph

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
    from oxidize.search.population import Item

    monkeypatch.setattr(ix, "EXACT_MAX", 100)  # calibrate even this small index
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
    from oxidize.search.population import Item

    monkeypatch.setattr(ix, "EXACT_MAX", 100)
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
    search._recall_notice(FakeSearcher(ix.EXACT_MAX + 1, {"recall@10": 0.71, "exact": False}))
    assert search.notices == ["the projected index of r:p finds about 0.71 of the true 10 nearest "
                              "items in its graph (measured when built; target 0.99)"]
    quiet = ProjectionSearch(SimpleNamespace(name="r"), "p", "/nowhere")
    quiet._recall_notice(FakeSearcher(ix.EXACT_MAX + 1, {"recall@10": 0.995, "exact": False}))
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
        measured.append((probe, expansion, got))
        # the second sample of items is told less than it finds until the expansion is 512
        first = measured[0][0]
        return got if probe is first or probe.moved or expansion >= 512 else 0.5

    monkeypatch.setattr(rc._RecallProbe, "recall", recall)
    got = rc.calibrate(index, x, keys)
    probes = list(dict.fromkeys(m[0] for m in measured))
    assert len(probes) == 3 and sum(p.moved for p in probes) == 1
    choosing, checking = [p for p in probes if not p.moved]
    chose = [e for p, e, _ in measured if p is choosing]
    checked = [e for p, e, _ in measured if p is checking]
    assert chose == [rc.EXPANSION_STEPS[0]]  # the easy sample clears the target at once
    assert got["needed_expansion"] == 128  # doubled (HEADROOM) to 256 before it is checked
    assert checked == [256, 384, 512] and got["expansion_search"] == 512
    recorded = [g for p, e, g in measured if p is checking][-1]
    assert got["recall@10"] == round(recorded, 4) and got["calibration_recall@10"] >= 0.993
    assert got["far_recall@10"] == round([g for p, e, g in measured if p.moved and e == 512][-1], 4)


def test_queries_far_from_every_item_hold_a_floor(monkeypatch):
    """Where the items clear the target but queries far from every item find less than
    :data:`FAR_RECALL_FLOOR`, the expansion rises until they find it."""
    x = clustered(3000)
    keys = np.arange(1, 3001, dtype=np.uint64)
    index = searched_graph(x, keys)
    real = rc._RecallProbe.recall
    asked = []

    def recall(probe, graph, expansion):
        asked.append((probe.moved, expansion))
        return 0.9 if probe.moved and expansion < 384 else real(probe, graph, expansion)

    monkeypatch.setattr(rc._RecallProbe, "recall", recall)
    got = rc.calibrate(index, x, keys)
    assert got["needed_expansion"] == 384 and got["expansion_search"] == 768
    assert got["far_recall@10"] >= rc.FAR_RECALL_FLOOR
    assert [e for moved, e in asked if moved] == [128, 192, 256, 384, 768]  # then at the expansion kept
    probe = rc._RecallProbe(x, keys, np.arange(10), noise=rc.FAR_NOISE, rng=np.random.default_rng(1))
    cosines = (probe.queries * x[:10]).sum(axis=1)
    assert probe.moved and probe.own == [None] * 10 and 0.45 < float(np.median(cosines)) < 0.75


class _ExactIndex:
    """Exact search with USearch's result shape; ``only_own`` makes it answer each query with
    the item it was drawn from and then the farthest items."""

    def __init__(self, x: np.ndarray, keys: np.ndarray, only_own: bool = False):
        self.x, self.keys, self.only_own, self.expansion_search = x, keys, only_own, 0

    def search(self, queries: np.ndarray, k: int):
        from types import SimpleNamespace

        sims = queries @ self.x.T
        order = np.argsort(-sims, axis=1)
        if self.only_own:
            order = np.concatenate([order[:, :1], order[:, ::-1][:, :k - 1]], axis=1)
        return SimpleNamespace(keys=self.keys[order[:, :k]])


def test_the_calibration_queries_are_indexed_items_and_their_own_key_is_not_an_answer():
    """A query drawn from an item is answered by its 10 nearest *other* items: exact search
    scores 1.0, and an index that finds the item itself but nothing near it scores 0 (the
    item's own key, as similar as can be, counts neither as a hit nor as one of the 10)."""
    x = clustered(500)
    keys = np.arange(7, 507, dtype=np.uint64)
    probe = rc._RecallProbe(x, keys, np.arange(0, 500, 5))
    assert np.allclose(probe.queries, x[::5])  # the items themselves, not moved
    assert probe.recall(_ExactIndex(x, keys), 128) == 1.0
    assert probe.recall(_ExactIndex(x, keys, only_own=True), 128) == 0.0
    got = rc.calibrate(_ExactIndex(x, keys), x, keys)
    assert got["recall@10"] == 1.0 and got["needed_expansion"] == rc.EXPANSION_STEPS[0]


def test_a_single_item_has_no_other_item_to_find():
    x = clustered(1)
    keys = np.array([3], dtype=np.uint64)
    assert rc.calibrate(_ExactIndex(x, keys), x, keys)["recall@10"] == 1.0


@pytest.mark.parametrize(("needed", "kept"), [(128, 256), (768, 1536), (1024, 2048), (1536, 2048), (2048, 2048), (3072, 3072)])
def test_the_expansion_needed_is_doubled_up_to_a_cap(monkeypatch, needed, kept):
    """Real queries unlike the items need up to twice the items' expansion (HEADROOM); the
    doubling stops at HEADROOM_UP_TO, where a real million's query would pass 10 ms."""
    x = clustered(600)
    keys = np.arange(1, 601, dtype=np.uint64)
    index = _ExactIndex(x, keys)
    real = rc._RecallProbe.recall

    def recall(probe, graph, expansion):  # the items clear the target at ``needed``
        return 0.5 if not probe.moved and expansion < needed else real(probe, graph, expansion)

    monkeypatch.setattr(rc._RecallProbe, "recall", recall)
    got = rc.calibrate(index, x, keys)
    assert (got["needed_expansion"], got["expansion_search"]) == (needed, kept)
    assert index.expansion_search == kept


def test_a_graph_no_search_reads_is_not_calibrated(tmp_path: Path, monkeypatch):
    """Up to EXACT_MAX items every search is exact, so the graph's expansion is not measured
    (it was most of a small index step); above, it is."""
    from oxidize.search.population import Item

    calls = []
    real = ix.calibrate
    monkeypatch.setattr(ix, "calibrate", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    n = 600
    base, projected = clustered(n, 24, 2), clustered(n, 16, 3)
    items = [Item(i + 1, i + 1, "session.decision", f"s{i // 5}", "2025-01-01", f"note {i}") for i in range(n)]
    monkeypatch.setattr(ix, "EXACT_MAX_FUSED", 100)  # the raw list's limit has no say in it
    ix.write_index(tmp_path, items, base, projected, {})
    searcher = ix.Searcher(tmp_path)
    assert calls == [] and searcher.exact and searcher.graph is not None  # built, for updates to grow
    monkeypatch.setattr(ix, "EXACT_MAX", n - 1)
    ix.write_index(tmp_path, items, base, projected, {})
    assert calls == [n] and "needed_expansion" in ix.Searcher(tmp_path).searched
