"""The plain embeddings kept as vectors (no graph): written in key order as f16, searched
exactly, re-ranked for hybrid's raw list, and read consistently during a rewrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oxidize import index as ix
from oxidize import plain_vectors as pv
from oxidize.errors import SearchError
from test_hybrid import built, search  # noqa: F401 - the module's fixtures, reused


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_written_in_key_order_as_f16_and_searched_exactly(tmp_path: Path):
    x = unit(500, 24, 0)
    keys = np.random.default_rng(1).permutation(np.arange(10, 1010, 2)).astype(np.uint64)
    pv.write(tmp_path, keys, x)
    plain = pv.PlainVectors(tmp_path)
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
    pv.write(tmp_path, keys, x)
    plain = pv.PlainVectors(tmp_path)
    q = unit(1, 8, 4)[0]
    stored = [130, 101, 149, 120, 100, 111, 142, 135, 104, 127]
    candidates = [*stored[:2], 7, 130, *stored[2:], 10_000]  # a repeat, keys not stored
    got = plain.rerank(q, candidates, k=20)
    assert [key for key, _ in got] == sorted(stored, key=lambda key: -float(x[key - 100] @ q))
    assert all(abs(score - float(x[key - 100] @ q)) < 2e-3 for key, score in got)
    assert len(plain.rerank(q, candidates, k=2)) == 2 and plain.rerank(q, [], k=5) == []


def test_a_searcher_of_the_plain_embeddings_is_exact_and_waits_for_a_whole_pair(tmp_path: Path):
    from oxidize.population import Item

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
    (tmp_path / pv.VECTORS_FILE).write_bytes(b"garbage")
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

    def no_scan(*_args, **_kwargs):
        raise AssertionError("the plain embeddings were scanned")

    monkeypatch.setattr(pv.PlainVectors, "search", no_scan)
    monkeypatch.setattr(pv, "RERANK_POOL", 10_000)  # every item a candidate
    for (raw, dense), (exact_raw, exact_dense) in zip([raw_list(q) for q in questions], exact):
        assert dense == exact_dense and len(raw) == len(exact_raw)
        np.testing.assert_allclose([s for _, s in raw], [s for _, s in exact_raw], atol=2e-3)
    monkeypatch.setattr(pv, "RERANK_POOL", 3)  # the projection's 3 nearest and the words' hits
    raw, dense = raw_list("zebracorn", pool=5)
    lexical = [key for key, _ in search.searcher(False).lexical("zebracorn", 5)]
    widened = [key for key, _ in search.searcher(False).nearest(
        project(search.weights, search.embed_query("zebracorn")[None])[0], 5)]
    assert {key for key, _ in raw} <= set(widened) | set(lexical) and len(dense) == 5
    assert search.query("zebracorn", k=5)[0].source_id == "s2"
