"""The content-addressed embedding cache and embed_with_cache."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3

import numpy as np
import pytest

from oxidize.embed.cache import CacheWarning, EmbeddingCache, EmbedStats, embed_with_cache
from oxidize.errors import CacheError, ModelError

DIM = 6


def fake_vector(text: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeEncoder:
    """Deterministic vectors per text; records what it was asked to embed."""

    def __init__(self, dim: int = DIM):
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, texts, kind="passage", progress=None):
        self.calls.append(list(texts))
        if progress is not None:
            progress.update(len(texts))
        return np.stack([fake_vector(kind + text, self.dim) for text in texts]) if texts else \
            np.zeros((0, self.dim), np.float32)

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]


class Factory:
    def __init__(self, dim: int = DIM):
        self.made = 0
        self.encoder = FakeEncoder(dim)

    def __call__(self):
        self.made += 1
        return self.encoder


def expected(texts, kind="passage"):
    return np.stack([fake_vector(kind + t) for t in texts])


def test_lookup_store_roundtrip(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        vecs, missing = cache.lookup(["a", "b"])
        assert missing == [0, 1] and vecs.shape == (2, DIM) and vecs.dtype == np.float32
        cache.store(["a"], expected(["a"]))
        vecs, missing = cache.lookup(["b", "a", "a"])
        assert missing == [0]
        np.testing.assert_array_equal(vecs[1], expected(["a"])[0])
        np.testing.assert_array_equal(vecs[2], expected(["a"])[0])


def test_store_rejects_bad_vectors(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        with pytest.raises(ValueError, match="shape"):
            cache.store(["a"], np.zeros((1, DIM + 1), np.float32))
        with pytest.raises(ValueError, match="non-finite"):
            cache.store(["a"], np.full((1, DIM), np.nan, np.float32))


def test_cached_texts_are_not_embedded_again(tmp_path):
    path = tmp_path / "cache" / "embeddings.sqlite"
    texts = ["alpha", "beta", "gamma", "beta", "alpha"]
    with EmbeddingCache(path, "fp", DIM) as cache:
        factory = Factory()
        out, stats = embed_with_cache(texts, cache, factory)
        assert stats == EmbedStats(total=5, unique=3, cached=0, embedded=3)
        assert sorted(factory.encoder.embedded) == ["alpha", "beta", "gamma"]  # duplicates once
        np.testing.assert_array_equal(out, expected(texts))

    with EmbeddingCache(path, "fp", DIM) as cache:  # a later build, another process
        factory = Factory()
        out2, stats = embed_with_cache(["gamma", "delta", "alpha"], cache, factory)
        assert stats == EmbedStats(total=3, unique=3, cached=2, embedded=1)
        assert factory.encoder.embedded == ["delta"]
        np.testing.assert_array_equal(out2, expected(["gamma", "delta", "alpha"]))

        factory = Factory()
        out3, stats = embed_with_cache(texts, cache, factory)
        assert factory.made == 0, "a fully cached run must not create the encoder"
        assert stats.embedded == 0 and stats.cached == 3
        np.testing.assert_array_equal(out3, out)


def test_empty_input(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        factory = Factory()
        out, stats = embed_with_cache([], cache, factory)
        assert out.shape == (0, DIM) and factory.made == 0
        assert stats == EmbedStats(0, 0, 0, 0)


def test_chunks_are_stored_as_they_finish(tmp_path, monkeypatch):
    """A run killed in the middle keeps every chunk embedded before the kill."""
    import oxidize.embed.cache as ec
    monkeypatch.setattr(ec, "CHUNK", 4)

    class Dies(FakeEncoder):
        def encode(self, texts, kind="passage", progress=None):
            if len(self.calls) == 2:
                raise KeyboardInterrupt
            return super().encode(texts, kind, progress)

    texts = [f"text {i}" for i in range(10)]
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path, "fp", DIM) as cache:
        with pytest.raises(KeyboardInterrupt):
            embed_with_cache(texts, cache, Dies)
    with EmbeddingCache(path, "fp", DIM) as cache:
        factory = Factory()
        out, stats = embed_with_cache(texts, cache, factory)
        assert stats.cached == 8 and factory.encoder.embedded == ["text 8", "text 9"]
        np.testing.assert_array_equal(out, expected(texts))


def test_progress_line_is_shown(tmp_path, capsys):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        embed_with_cache(["a", "b"], cache, Factory(), progress_label="r:p embed")
    assert "r:p embed: 2/2 texts" in capsys.readouterr().err


class Silent(FakeEncoder):
    """An encoder that never reports progress."""

    def encode(self, texts, kind="passage", progress=None):
        return super().encode(texts, kind, None)


@pytest.mark.parametrize("encoder", [FakeEncoder, Silent])
def test_final_progress_line_is_printed_once(tmp_path, capsys, encoder):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        embed_with_cache(["a", "b", "c"], cache, encoder, progress_label="r:p embed")
    lines = [line for line in capsys.readouterr().err.splitlines() if "r:p embed" in line]
    assert [line for line in lines if "3/3 texts (100%)" in line] == lines[-1:], lines


def test_two_fingerprints_and_kinds_do_not_collide(tmp_path):
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path, "fp-one", DIM) as one:
        one.store(["same text"], expected(["x"]))
    with EmbeddingCache(path, "fp-two", DIM) as two:
        assert two.lookup(["same text"])[1] == [0]
        two.store(["same text"], expected(["y"]))
    with EmbeddingCache(path, "fp-one", DIM, kind="query") as query:
        assert query.lookup(["same text"])[1] == [0]
    with EmbeddingCache(path, "fp-one", DIM) as one:
        np.testing.assert_array_equal(one.lookup(["same text"])[0][0], expected(["x"])[0])
    with EmbeddingCache(path, "fp-two", DIM) as two:
        np.testing.assert_array_equal(two.lookup(["same text"])[0][0], expected(["y"])[0])


def test_query_kind_reaches_the_encoder(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM, kind="query") as cache:
        out, _ = embed_with_cache(["a"], cache, Factory())
    np.testing.assert_array_equal(out, expected(["a"], kind="query"))


@pytest.mark.parametrize("corrupt", [b"\x00" * 5, np.full(DIM, np.nan, np.float32).tobytes(),
                                     np.ones(DIM + 1, np.float32).tobytes()])
def test_corrupt_entry_is_dropped_and_embedded_again(tmp_path, corrupt):
    path = tmp_path / "c.sqlite"
    texts = ["good", "bad"]
    with EmbeddingCache(path, "fp", DIM) as cache:
        embed_with_cache(texts, cache, Factory())
    con = sqlite3.connect(path)
    key = hashlib.sha256(b"bad").digest()
    assert con.execute("UPDATE embeddings SET vector = ? WHERE text_sha256 = ?",
                       (corrupt, key)).rowcount == 1
    con.commit()
    con.close()
    with EmbeddingCache(path, "fp", DIM) as cache:
        factory = Factory()
        with pytest.warns(CacheWarning, match="1 corrupt entry"):
            out, stats = embed_with_cache(texts, cache, factory)
        assert factory.encoder.embedded == ["bad"] and stats.cached == 1
        np.testing.assert_array_equal(out, expected(texts))
        assert cache.lookup(texts)[1] == []  # repaired


def test_wrong_dim_entry_is_invalid(tmp_path):
    path = tmp_path / "c.sqlite"
    with EmbeddingCache(path, "fp", DIM) as cache:
        cache.store(["a"], expected(["a"]))
    with EmbeddingCache(path, "fp", DIM + 2) as other:
        with pytest.warns(CacheWarning):
            assert other.lookup(["a"])[1] == [0]


def test_not_a_database_is_set_aside_and_the_cache_heals(tmp_path):
    """Only a cache: a file that is not a database is moved to damaged/ (kept to look at),
    one warning names it, and a new cache works (issue: caches heal)."""
    path = tmp_path / "embeddings.sqlite"
    junk = b"this is certainly not sqlite " * 100
    path.write_bytes(junk)
    with pytest.warns(CacheWarning, match=r"embeddings.sqlite was damaged .*moved it to .*damaged"):
        cache = EmbeddingCache(path, "fp", DIM)
    with cache:
        cache.store(["a"], np.ones((1, DIM), np.float32))
        assert cache.count() == 1
    (kept,) = (tmp_path / "damaged").iterdir()
    assert kept.read_bytes() == junk


def test_foreign_schema_version_is_an_error(tmp_path):
    path = tmp_path / "c.sqlite"
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(CacheError, match="can be deleted safely"):
        EmbeddingCache(path, "fp", DIM)


def test_encoder_returning_wrong_dim_is_a_model_error(tmp_path):
    with EmbeddingCache(tmp_path / "c.sqlite", "fp", DIM) as cache:
        with pytest.raises(ModelError, match="dimension 6"):
            embed_with_cache(["a"], cache, Factory(dim=DIM + 1))


def test_uses_wal_mode(tmp_path):
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path, "fp", DIM).close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def _writer(path: str, worker: int, rounds: int) -> None:
    """Store overlapping texts in many small transactions (runs in a child process)."""
    with EmbeddingCache(path, "fp", DIM) as cache:
        for r in range(rounds):
            texts = [f"text {(r * 7 + i) % 150}" for i in range(10)] + [f"w{worker} r{r}"]
            missing = cache.lookup(texts)[1]
            chosen = [texts[i] for i in missing] or texts[:1]
            cache.store(chosen, expected(chosen))


def _creator(paths: list[str], barrier, worker: int) -> None:
    """Open (and so create) each new cache at the same moment as the other process."""
    for path in paths:
        barrier.wait(timeout=60)
        with EmbeddingCache(path, "fp", DIM) as cache:
            cache.store([f"w{worker}"], expected([f"w{worker}"]))


def test_two_builds_creating_one_new_cache_both_succeed(tmp_path):
    """Both processes switch a brand-new file to WAL at once: SQLite then fails one of them
    with "database is locked" without waiting (52 of 300 opens before the retry)."""
    paths = [str(tmp_path / f"c{i}.sqlite") for i in range(40)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_creator, args=(paths, barrier, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    for path in paths:
        with EmbeddingCache(path, "fp", DIM) as cache:
            assert cache.count() == 2


def test_concurrent_writers_leave_a_consistent_cache(tmp_path):
    path = tmp_path / "c.sqlite"
    rounds = 60
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, rounds)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    texts = sorted({f"text {(r * 7 + i) % 150}" for r in range(rounds) for i in range(10)}
                   | {f"w{w} r{r}" for w in range(2) for r in range(rounds)})
    with EmbeddingCache(path, "fp", DIM) as cache:
        vecs, missing = cache.lookup(texts)
        assert missing == []
        np.testing.assert_array_equal(vecs, expected(texts))
        assert cache.count() == len(texts)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
