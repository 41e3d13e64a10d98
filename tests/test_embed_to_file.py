"""embed_to_file: the embed step's streaming writer (the matrix is never held in memory)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

import oxidize.embed.cache as ec
from oxidize.embed.cache import EmbeddingCache, EmbedStats, embed_to_file, embed_with_cache
from tests.test_embed_cache import DIM, Factory, expected


@pytest.fixture(autouse=True)
def small_stream(monkeypatch):
    monkeypatch.setattr(ec, "STREAM_ROWS", 3)  # several write steps even for a few texts


def test_file_equals_embed_with_cache(tmp_path):
    texts = ["alpha", "beta", "gamma", "beta", "delta", "alpha", "eps"]
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        factory = Factory()
        stats = embed_to_file(texts, cache, factory, tmp_path / "e.npy")
        assert stats == EmbedStats(total=7, unique=5, cached=0, embedded=5)
        assert sorted(factory.encoder.embedded) == sorted(set(texts))
    loaded = np.load(tmp_path / "e.npy", mmap_mode="r")
    assert loaded.dtype == np.float32 and loaded.shape == (7, DIM)
    np.testing.assert_array_equal(loaded, expected(texts))
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        factory = Factory()
        matrix, _ = embed_with_cache(texts, cache, factory)
        assert factory.made == 0
        np.testing.assert_array_equal(loaded, matrix)


def test_incremental_embeds_only_new_texts(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        embed_to_file(["a", "b", "c"], cache, Factory(), tmp_path / "e.npy")
        factory = Factory()
        stats = embed_to_file(["a", "b", "c", "d"], cache, factory, tmp_path / "e.npy")
        assert factory.encoder.embedded == ["d"] and stats.cached == 3 and stats.embedded == 1
        factory = Factory()
        embed_to_file(["c", "a"], cache, factory, tmp_path / "e.npy")
        assert factory.made == 0, "a fully cached run must not create the encoder"
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), expected(["c", "a"]))


def test_empty_and_corrupt_entries(tmp_path):
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path, "fp", DIM) as cache:
        embed_to_file([], cache, Factory(), tmp_path / "e.npy")
        assert np.load(tmp_path / "e.npy").shape == (0, DIM)
        embed_to_file(["x", "y"], cache, Factory(), tmp_path / "e.npy")
    nan = np.full(DIM, np.nan, "<f4").tobytes()
    with sqlite3.connect(path) as conn:  # right size, so only the second pass sees it
        conn.execute("UPDATE embeddings SET vector = ?", (nan,))
    with EmbeddingCache(path, "fp", DIM) as cache:
        factory = Factory()
        with pytest.warns(ec.CacheWarning):
            stats = embed_to_file(["x", "y", "x"], cache, factory, tmp_path / "e.npy")
        assert sorted(factory.encoder.embedded) == ["x", "y"] and stats.embedded == 2
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), expected(["x", "y", "x"]))
