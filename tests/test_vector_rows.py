"""An index's vectors as f16 rows (no graph for the plain embeddings): written in key order,
searched exactly, re-ranked for hybrid's raw list and for the i8 graph's candidates, and read
consistently during a rewrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oxidize.search import index as ix
from oxidize.search import vector_rows as pv
from oxidize.errors import SearchError
from test_hybrid import built, search  # noqa: F401 - the module's fixtures, reused
from test_index_recall import clustered


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_written_in_key_order_as_f16_and_searched_exactly(tmp_path: Path):
    x = unit(500, 24, 0)
    keys = np.random.default_rng(1).permutation(np.arange(10, 1010, 2)).astype(np.uint64)
    pv.write(tmp_path, keys, {pv.BASE_FILE: x})
    plain = pv.open_rows(tmp_path, pv.BASE_FILE)
    assert plain.vectors.dtype == np.float16 and len(plain) == 500 and plain.ndim == 24
    assert np.all(np.diff(plain.keys.astype(np.int64)) > 0)
    by_key = dict(zip(keys.tolist(), x))
    np.testing.assert_allclose(plain.vectors[3].astype(np.float32), by_key[int(plain.keys[3])], atol=1e-3)
    for q in unit(10, 24, 2):
        found = plain.search(q, 10)
        cosines = x @ q
        truth = keys[np.argsort(-cosines)[:10]]
        # f16 rows: a near tie may swap, so compare cosines, not only keys
        got = np.array([cosines[keys.tolist().index(int(k))] for k in found.keys])
        np.testing.assert_allclose(got, np.sort(cosines)[::-1][:10], atol=2e-3)
        assert len(set(found.keys.tolist()) & set(truth.tolist())) >= 9
        np.testing.assert_allclose(1 - found.distances, got, atol=2e-3)


def test_rerank_orders_the_given_keys_by_cosine_and_skips_unknown_ones(tmp_path: Path):
    x = unit(50, 8, 3)
    keys = np.arange(100, 150, dtype=np.uint64)
    pv.write(tmp_path, keys, {pv.BASE_FILE: x})
    plain = pv.open_rows(tmp_path, pv.BASE_FILE)
    q = unit(1, 8, 4)[0]
    stored = [130, 101, 149, 120, 100, 111, 142, 135, 104, 127]
    candidates = [*stored[:2], 7, 130, *stored[2:], 10_000]  # a repeat, keys not stored
    got = plain.rerank(q, candidates, k=20)
    assert [key for key, _ in got] == sorted(stored, key=lambda key: -float(x[key - 100] @ q))
    assert all(abs(score - float(x[key - 100] @ q)) < 2e-3 for key, score in got)
    assert len(plain.rerank(q, candidates, k=2)) == 2 and plain.rerank(q, [], k=5) == []


def test_a_searcher_of_the_plain_embeddings_is_exact_and_waits_for_a_whole_pair(tmp_path: Path):
    from oxidize.search.population import Item

    n = 300
    items = [Item(i + 1, i + 1, "session.decision", f"s{i}", "2025-01-01", f"note {i}") for i in range(n)]
    base, projected = unit(n, 24, 5), unit(n, 16, 6)
    ix.write_index(tmp_path, items, base, projected, {})
    assert not (tmp_path / "base.usearch").exists()
    searcher = ix.Searcher(tmp_path, base=True)
    assert searcher.exact and searcher.dim == 24 and len(searcher) == n
    q = unit(1, 24, 7)[0]
    assert searcher.nearest(q, 1)[0][0] == int(np.argmax(base @ q)) + 1
    # the keys file of another length (a rewrite between its two renames): retried, then said
    np.save(tmp_path / pv.KEYS_FILE, np.arange(1, n, dtype=np.uint64))
    with pytest.raises(SearchError, match="differ in length"):
        ix.Searcher(tmp_path, base=True, retries=1)
    (tmp_path / pv.BASE_FILE).write_bytes(b"garbage")
    with pytest.raises(SearchError, match="not readable"):
        ix.Searcher(tmp_path, base=True)


def test_hybrid_above_the_exact_size_reranks_candidates_instead_of_scanning(search, monkeypatch):  # noqa: F811
    """Above the exact size hybrid's raw list is the raw cosine ranking of the projection's
    and the lexical list's candidates, and no exact scan of the plain embeddings runs; where
    the candidates hold every item it ranks as the exact raw list does (the tiny model
    gives many equal cosines, so the lists are compared by their cosines)."""
    from oxidize.projection import project

    def raw_list(question: str, pool: int = 20):
        vector = search.embed_query(question)
        searcher = search.searcher(False)
        future = search._background().submit(searcher.lexical, question, pool)
        raw, dense = search._raw_list(searcher, vector, project(search.weights, vector[None])[0], pool, future)
        return raw, dense

    questions = ["where did we write about the zebracorn flag?", "parser grammar", "cache eviction"]
    exact = [raw_list(q) for q in questions]
    monkeypatch.setattr(ix, "EXACT_MAX_FUSED", 0)

    real_scan = pv.KeyedRows.search

    def scan_projected_only(rows, *args, **kwargs):  # the projection's own exact search stays
        if str(getattr(rows.vectors, "filename", "")).endswith(pv.BASE_FILE):
            raise AssertionError("the plain embeddings were scanned")
        return real_scan(rows, *args, **kwargs)

    monkeypatch.setattr(pv.KeyedRows, "search", scan_projected_only)
    monkeypatch.setattr(pv, "RERANK_POOL", 10_000)  # every item a candidate
    for (raw, dense), (exact_raw, exact_dense) in zip([raw_list(q) for q in questions], exact):
        assert len(dense) == len(exact_dense) and len(raw) == len(exact_raw)
        np.testing.assert_allclose([s for _, s in dense], [s for _, s in exact_dense], atol=2e-3)
        np.testing.assert_allclose([s for _, s in raw], [s for _, s in exact_raw], atol=2e-3)
    monkeypatch.setattr(pv, "RERANK_POOL", 3)  # the projection's 3 nearest and the words' hits
    raw, dense = raw_list("zebracorn", pool=5)
    lexical = [key for key, _ in search.searcher(False).lexical("zebracorn", 5)]
    widened = [key for key, _ in search.searcher(False).nearest(
        project(search.weights, search.embed_query("zebracorn")[None])[0], 5)]
    assert {key for key, _ in raw} <= set(widened) | set(lexical) and len(dense) == 5
    assert search.query("zebracorn", k=5)[0].source_id == "s2"


def test_rows_in_any_key_order_find_their_keys_and_rerank_many_skips_unknown_ones():
    x = unit(200, 16, 8)
    keys = np.random.default_rng(9).permutation(np.arange(1000, 1200)).astype(np.uint64)
    rows = pv.KeyedRows(x, keys)
    stored, at = rows.rows_of(np.array([keys[17], 5, keys[3]], dtype=np.uint64))
    assert stored.tolist() == [True, False, True] and at[0] == 17 and at[2] == 3
    q = unit(3, 16, 10)
    candidates = np.array([[keys[0], keys[1], pv.MISSING, keys[2]],
                           [7, 8, 9, pv.MISSING],
                           [keys[5], keys[5], keys[6], keys[7]]], dtype=np.uint64)
    found = rows.rerank_many(q, candidates, 3)
    cos = lambda i, r: float(x[r] @ q[i])  # noqa: E731
    assert found.keys[0].tolist() == [int(keys[r]) for r in sorted([0, 1, 2], key=lambda r: -cos(0, r))]
    assert found.keys[1].tolist() == [pv.MISSING] * 3
    np.testing.assert_allclose(1 - found.distances[0], sorted([cos(0, r) for r in (0, 1, 2)], reverse=True), atol=1e-5)


def test_an_i8_graph_reranked_by_the_rows_finds_what_exact_search_finds():
    """The graph holds i8 vectors, whose cosines are coarse; its wider candidate list ranked
    by the exact rows gives the true nearest items, and better than the graph's own order."""
    from usearch.index import Index

    n, dim = 3000, 64
    centres = unit(60, dim, 11)
    x = centres[np.random.default_rng(12).integers(0, 60, n)] + 0.35 * unit(n, dim, 13)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    keys = np.arange(1, n + 1, dtype=np.uint64)
    graph = Index(ndim=dim, metric="cos", dtype="i8", connectivity=16, expansion_add=128)
    graph.add(keys, x, threads=1)
    graph.expansion_search = 256
    q = x[:200] + 0.5 / dim ** 0.5 * unit(200, dim, 14)
    truth = [set((keys[np.argsort(-(x @ v))[:10]]).tolist()) for v in q]
    reranked = pv.RerankedGraph(graph, pv.KeyedRows(x, keys)).search(q, 10)
    alone = graph.search(q, 10)
    recall = lambda found: np.mean([len(set(f.tolist()) & t) / 10 for f, t in zip(found, truth)])  # noqa: E731
    assert recall(reranked.keys) >= 0.99
    assert recall(reranked.keys) > recall(alone.keys)
    best = reranked.keys[:, 0].astype(np.int64) - 1
    np.testing.assert_allclose(1 - reranked.distances[:, 0], np.einsum("nd,nd->n", x[best], q / np.linalg.norm(q, axis=1, keepdims=True)), atol=1e-5)


def test_a_projected_search_above_the_exact_size_reranks_the_graph_by_exact_cosine(tmp_path: Path, monkeypatch):
    from oxidize.search.population import Item

    n = 400
    items = [Item(i + 1, i + 1, "session.decision", f"s{i}", "2025-01-01", f"note {i}") for i in range(n)]
    base, projected = unit(n, 24, 15), clustered(n, 16, 16)
    monkeypatch.setattr(ix, "EXACT_MAX", 0)  # searched in its graph and calibrated, as a large index is
    monkeypatch.setattr(ix.os, "cpu_count", lambda: 1)  # inserts on one thread: deterministic
    ix.write_index(tmp_path, items, base, projected, {})
    assert {p.name for p in tmp_path.iterdir()} >= {pv.BASE_FILE, pv.PROJECTED_FILE, pv.KEYS_FILE, ix.INDEX_FILE}
    searcher = ix.Searcher(tmp_path)
    assert not searcher.exact and searcher.graph is not None
    q = unit(1, 16, 17)[0]
    found = searcher.nearest(q, 5)
    cosines = projected @ q
    assert [key for key, _ in found] == [int(r) + 1 for r in np.argsort(-cosines)[:5]]
    np.testing.assert_allclose([s for _, s in found], np.sort(cosines)[::-1][:5], atol=2e-3)
    np.save(tmp_path / pv.PROJECTED_FILE, np.zeros((n - 1, 16), np.float16))
    with pytest.raises(SearchError, match="differ in length"):
        ix.Searcher(tmp_path, retries=1)


def test_a_graph_that_finds_fewer_than_asked_pads_with_missing_not_with_key_0():
    """USearch pads a batch's short result rows with key 0 (its counts say how many are
    real; checked on usearch 2.26); where 0 is a real key it must not be counted, nor an
    item the graph did not find."""
    from types import SimpleNamespace

    x = unit(3, 8, 18)
    keys = np.array([0, 1, 2], dtype=np.uint64)

    class ShortGraph:  # what USearch's batch search returns when it found fewer
        expansion_search = 64

        def __len__(self):
            return 3

        def search(self, queries, count):
            return SimpleNamespace(keys=np.array([[1, 0, 0], [2, 1, 0]], dtype=np.uint64),
                                   counts=np.array([1, 2]))

    found = pv.RerankedGraph(ShortGraph(), pv.KeyedRows(x, keys)).search(unit(2, 8, 19), 3)
    assert sorted(found.keys[0].tolist()) == sorted([1, pv.MISSING, pv.MISSING])
    assert sorted(found.keys[1].tolist()) == sorted([1, 2, pv.MISSING])


def test_an_index_of_the_previous_format_says_to_rebuild(tmp_path: Path):
    """An index written before the projected rows existed (format 4: ``base_keys.npy``, no
    ``projected.npy``) is named as older, with the command that rebuilds it."""
    from oxidize.search.population import Item

    n = 50
    items = [Item(i + 1, i + 1, "session.decision", f"s{i}", "2025-01-01", f"note {i}") for i in range(n)]
    ix.write_index(tmp_path, items, unit(n, 24, 20), unit(n, 16, 21), {})
    (tmp_path / pv.KEYS_FILE).rename(tmp_path / "base_keys.npy")
    (tmp_path / pv.PROJECTED_FILE).unlink()
    with pytest.raises(SearchError, match=r"written by an older oxidize \(projected.npy, keys.npy missing\); "
                                          r"rebuild it with `doit`"):
        ix.Searcher(tmp_path)
    (tmp_path / ix.INDEX_FILE).unlink()
    with pytest.raises(SearchError, match="no search index"):
        ix.Searcher(tmp_path)


def test_rows_are_mapped_from_the_file_whose_header_was_read(tmp_path: Path, monkeypatch):
    """A build renames new rows over the old while a search opens them: the header and the
    bytes come from the one file opened (``np.load`` maps the path a second time, and paired
    an old 30-row header with a new 40-row file, or the reverse: 'mmap length is greater')."""
    old, new = np.arange(30 * 4, dtype=np.float16).reshape(30, 4), np.ones((10, 4), np.float16)
    path = tmp_path / pv.PROJECTED_FILE
    np.save(path, old)
    np.save(tmp_path / "next.npy", new)
    read_magic = np.lib.format.read_magic

    def rename_after_the_header(handle):
        version = read_magic(handle)
        (tmp_path / "next.npy").replace(path)  # what atomic_path does mid-open
        return version

    monkeypatch.setattr(np.lib.format, "read_magic", rename_after_the_header)
    mapped = pv._map(path)
    assert mapped.shape == (30, 4) and np.array_equal(mapped, old)
    monkeypatch.undo()
    assert np.array_equal(pv._map(path), new)
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float16))
    assert pv._map(tmp_path / "empty.npy").shape == (0, 4)
