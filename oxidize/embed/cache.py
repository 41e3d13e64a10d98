"""A content-addressed embedding cache: no text is ever embedded twice by the same model.

Embedding is the slow step of a build. Different recipes and projections share most of
their texts, and a rebuild after new events adds only a few, so vectors are cached by
*what they are a function of*: the model fingerprint (files + pooling/prefix settings, see
:mod:`oxidize.embed.models`), the kind (``passage``/``query``, which selects the prefix) and the
sha256 of the exact text. Paths, recipe names and times are not part of the key, so a
vector computed for one recipe serves every other.

On disk it is one SQLite file (``build/.cache/embeddings.sqlite``)::

    embeddings(model TEXT, kind TEXT, text_sha256 BLOB(32), dim INTEGER, vector BLOB)
        PRIMARY KEY (model, kind, text_sha256)    -- vector: dim little-endian float32

Why these choices are safe:

* **Two builds at once.** WAL mode lets readers run beside a writer, and a 60 s busy
  timeout makes a second writer wait rather than fail. Writes are ``INSERT OR REPLACE``
  of a deterministic value, so two processes embedding the same text cannot disagree.
* **Kill-safe.** Each :meth:`EmbeddingCache.store` is one transaction, made as soon as a chunk
  (or a cluster's shard) is embedded: a killed build keeps all the work done before the kill.
* **Validated on read.** An entry whose blob length is not ``dim * 4`` or that holds a
  NaN/inf is deleted, reported with a :class:`CacheWarning` and embedded again.
* **Only a cache, so it heals.** A damaged file (SQLite's "malformed", "not a database") is
  moved to ``damaged/`` beside it with one warning and a new cache starts (cache_guard.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oxidize.errors import CacheError, CacheWarning, ModelError  # noqa: F401 - CacheWarning: public here
from oxidize.util.progress import Progress
from oxidize.embed.cache_guard import BUSY_TIMEOUT_S, SqliteGuard, _heals, _inode, heal, is_damage  # noqa: F401

if TYPE_CHECKING:  # the encoder (onnxruntime) is loaded only when something must be embedded
    from oxidize.embed.encoder import Encoder

SCHEMA_VERSION = 1
#: Texts embedded (and then stored) per step of :func:`embed_with_cache`.
CHUNK = 1024
_SQL_VARS = 500  # keys per SELECT ... IN (...), well below SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, kind, text_sha256)
) WITHOUT ROWID
"""


def text_key(text: str) -> bytes:
    """sha256 of the exact text (UTF-8; lone surrogates kept as-is rather than failing)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Vectors of one model (fingerprint ``model_fp``) and one ``kind`` in a SQLite file.

    Args:
        path: the SQLite file; created with its parent directory if missing.
        model_fp: the model fingerprint (:func:`oxidize.embed.models.fingerprint`).
        dim: the model's embedding dimension; entries of another length are invalid.
        kind: ``"passage"`` or ``"query"`` — the same text gets another prefix, so another vector.

    A damaged file (SQLite: "malformed", "not a database") heals itself: it is moved to
    ``damaged/`` beside it, one :class:`CacheWarning` names it, and a new cache starts.

    Raises:
        CacheError: the file cannot be used and is not damaged (busy past the timeout, an
            unknown schema version, not writable); the message says it can be deleted.
    """

    def __init__(self, path: Path | str, model_fp: str, dim: int, kind: str = "passage"):
        self.path = Path(path)
        self.model_fp = model_fp
        self.dim = int(dim)
        self.kind = kind
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        # Two builds creating the same new cache at once (``doit -n 2``, two recipes): the
        # switch to WAL and the first schema write can fail with "database is locked" at
        # once, without SQLite's busy handler ever waiting (seen in 52 of 300 simultaneous
        # opens). Such a failure is retried, with short sleeps, for up to BUSY_TIMEOUT_S.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.01
        healed = False
        while True:
            try:
                with self._guard("open"):
                    self._open_once()
                return
            except CacheError as err:
                if is_damage(err) and not healed:
                    healed = True
                    self._heal(err, reopen=False)
                    continue
                locked = isinstance(err.__cause__, sqlite3.OperationalError) \
                    and "locked" in str(err.__cause__)
                if not locked or time.monotonic() + delay > deadline:
                    raise
                self.close()
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _open_once(self) -> None:
        self._conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._inode = _inode(self.path)
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise CacheError(f"embedding cache {self.path} has schema version {version}, this "
                             f"oxidize writes {SCHEMA_VERSION}; {self._delete_hint()}")
        self._conn.execute(_SCHEMA)
        if version == 0:
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # --- public API ----------------------------------------------------------------------

    @_heals
    def lookup(self, texts: Sequence[str], out: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
        """Cached vectors for ``texts``: ``(float32 [n, dim], missing indices)``.

        Rows listed in ``missing`` are zero. Invalid entries count as missing; they are deleted
        and reported once per call with a :class:`CacheWarning`. Vectors are decoded
        ``_SQL_VARS`` keys at a time, each step as one block copied into its rows of ``out``
        (allocated when ``None``): besides ``out``, at most one step's vectors are held.
        """
        if out is None:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
        elif out.shape != (len(texts), self.dim):
            raise ValueError(f"out has shape {out.shape}, expected {(len(texts), self.dim)}")
        else:
            out[...] = 0
        filled = np.zeros(len(texts), dtype=bool)
        bad: list[bytes] = []
        size = self.dim * 4
        conn = self._connection()
        with self._guard("read"):
            for rows_of, marks in _key_batches(texts):
                cursor = conn.execute(
                    f"SELECT text_sha256, dim, vector FROM embeddings "
                    f"WHERE model = ? AND kind = ? AND text_sha256 IN ({marks})",
                    [self.model_fp, self.kind, *rows_of])
                keys, blobs = [], []
                for key, dim, blob in cursor:
                    if dim != self.dim or not isinstance(blob, bytes) or len(blob) != size:
                        bad.append(bytes(key))
                    else:
                        keys.append(bytes(key))
                        blobs.append(blob)
                if not blobs:
                    continue
                # One decode and one finiteness check per step, not one per vector.
                block = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), self.dim)
                del blobs
                finite = np.isfinite(block).all(axis=1)
                dest, src = [], []
                for j, key in enumerate(keys):
                    if not finite[j]:
                        bad.append(key)
                        continue
                    for row in rows_of[key]:
                        dest.append(row)
                        src.append(j)
                out[dest] = block[src]
                filled[dest] = True
        if bad:
            self._drop(bad)
            warnings.warn(f"embedding cache {self.path}: {len(bad)} corrupt entr"
                          f"{'y' if len(bad) == 1 else 'ies'} dropped; embedding again",
                          CacheWarning, stacklevel=2)
        return out, np.flatnonzero(~filled).tolist()

    @_heals
    def missing(self, texts: Sequence[str]) -> list[int]:
        """Indices of ``texts`` with no entry of the right size (vectors are not decoded).

        A cheap first pass for :func:`embed_to_file`; an entry that later turns out to hold
        a NaN is still caught by :meth:`lookup`.
        """
        present = np.zeros(len(texts), dtype=bool)
        bad = 0
        conn = self._connection()
        with self._guard("read"):
            for rows_of, marks in _key_batches(texts):
                cursor = conn.execute(
                    f"SELECT text_sha256, dim = ? AND length(vector) = ? FROM embeddings "
                    f"WHERE model = ? AND kind = ? AND text_sha256 IN ({marks})",
                    [self.dim, self.dim * 4, self.model_fp, self.kind, *rows_of])
                for key, right_size in cursor:
                    if right_size:
                        present[rows_of[bytes(key)]] = True
                    else:
                        bad += 1  # overwritten when its text is stored again
        if bad:
            warnings.warn(f"embedding cache {self.path}: {bad} corrupt entr"
                          f"{'y' if bad == 1 else 'ies'} found; embedding again",
                          CacheWarning, stacklevel=2)
        return np.flatnonzero(~present).tolist()

    @_heals
    def store(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` for ``texts[i]``, all in one transaction.

        Raises:
            ValueError: the shapes disagree or a vector is not finite (never cached).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(texts), self.dim):
            raise ValueError(f"expected vectors of shape {(len(texts), self.dim)}, got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to cache non-finite embeddings")
        little = vectors.astype("<f4", copy=False)
        rows = [(self.model_fp, self.kind, text_key(t), self.dim, little[i].tobytes())
                for i, t in enumerate(texts)]
        conn = self._connection()
        with self._guard("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO embeddings "
                                 "(model, kind, text_sha256, dim, vector) VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # not a second error over the first
                    conn.execute("ROLLBACK")
                raise

    @_heals
    def count(self) -> int:
        """How many entries this model and kind have in the cache."""
        with self._guard("read"):
            return self._connection().execute(
                "SELECT COUNT(*) FROM embeddings WHERE model = ? AND kind = ?",
                (self.model_fp, self.kind)).fetchone()[0]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CacheError(f"embedding cache {self.path} is closed")
        return self._conn

    def _drop(self, keys: list[bytes]) -> None:
        conn = self._connection()
        with self._guard("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("DELETE FROM embeddings WHERE model = ? AND kind = ? AND text_sha256 = ?",
                                 [(self.model_fp, self.kind, k) for k in keys])
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # not a second error over the first
                    conn.execute("ROLLBACK")
                raise

    def _delete_hint(self) -> str:
        return (f"it is only a cache and can be deleted safely (rm {self.path}); "
                f"the texts will be embedded again")

    def _guard(self, what: str):
        return SqliteGuard(self, what)

    def _heal(self, err: CacheError, reopen: bool = True) -> None:
        heal(self, err, reopen)


@dataclass(frozen=True)
class EmbedStats:
    """What :func:`embed_with_cache` did: texts given, distinct, found cached, newly embedded."""

    total: int
    unique: int
    cached: int
    embedded: int


class _Offset:
    """Forward ``update(done)`` of one chunk to the whole run's progress."""

    def __init__(self, progress: Progress, base: int):
        self.progress, self.base = progress, base

    def update(self, done: int, extra: str = "") -> None:
        self.progress.update(self.base + done, extra)


def store_checked(vectors, chunk: list[str], cache: EmbeddingCache) -> np.ndarray:
    """Check an encoder's vectors for ``chunk`` (shape, finiteness) and store them in the cache."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(chunk), cache.dim):
        raise ModelError(f"the encoder returned vectors of shape {vectors.shape} for "
                         f"{len(chunk)} texts; the cache expects dimension {cache.dim}")
    if not np.isfinite(vectors).all():
        bad = int((~np.isfinite(vectors).all(axis=1)).sum())
        raise ModelError(f"the model produced NaN or infinite embeddings for {bad} text(s); "
                         f"is the model file intact?")
    cache.store(chunk, vectors)  # stored now: a kill after this keeps the chunk
    return vectors


def _embed_missing(unique: list[str], missing: list[int], cache: EmbeddingCache,
                   encoder_factory: Callable[[], Encoder], progress_label: str,
                   matrix: np.ndarray | None = None) -> None:
    """Embed ``unique[i]`` for every ``i`` in ``missing`` into the cache (and ``matrix[i]``)."""
    if not missing:
        return
    # Chunks of similar length: the encoder pads per batch, so this wastes less on padding.
    missing = sorted(missing, key=lambda i: len(unique[i]))
    encoder = encoder_factory()
    progress = Progress(len(missing), progress_label or "embed", unit="texts")
    if hasattr(encoder, "fill"):  # a cluster: shards stored as they complete (embed/dask_executor.py)
        return encoder.fill(unique, missing, cache, matrix, progress)
    for start in range(0, len(missing), CHUNK):
        rows = missing[start:start + CHUNK]
        chunk = [unique[i] for i in rows]
        vectors = store_checked(encoder.encode(chunk, kind=cache.kind, progress=_Offset(progress, start)),
                                chunk, cache)
        if matrix is not None:
            matrix[rows] = vectors
        if progress.done < start + len(chunk):  # an encoder that does not report progress
            progress.update(start + len(chunk))


def embed_with_cache(texts: list[str], cache: EmbeddingCache, encoder_factory: Callable[[], Encoder],
                     progress_label: str = "") -> tuple[np.ndarray, EmbedStats]:
    """Embed ``texts`` through ``cache``: each distinct text not yet cached is embedded once.

    Args:
        texts: the texts, in the order of the result's rows; duplicates are allowed.
        cache: the open cache of the model (its ``kind`` selects the encoder's prefix).
        encoder_factory: makes an :class:`oxidize.embed.encoder.Encoder`; called only if some text
            is missing, so a fully cached rebuild never loads the model.
        progress_label: label of the progress line on stderr.

    Returns:
        ``float32 [len(texts), dim]`` in input order, and the :class:`EmbedStats`.
        (To write a large result to disk, :func:`embed_to_file` streams it instead.)

    Raises:
        ModelError: the encoder returns vectors of another dimension or non-finite values.
    """
    unique = list(dict.fromkeys(texts))
    matrix, missing = cache.lookup(unique)
    _embed_missing(unique, missing, cache, encoder_factory, progress_label, matrix)
    if not texts:
        result = np.zeros((0, cache.dim), np.float32)
    elif len(unique) == len(texts):
        result = matrix  # no duplicates: ``unique`` is ``texts``, no copy needed
    else:
        index = {text: i for i, text in enumerate(unique)}
        result = matrix[[index[t] for t in texts]]
    stats = EmbedStats(total=len(texts), unique=len(unique), cached=len(unique) - len(missing),
                       embedded=len(missing))
    return result, stats


#: Rows read back from the cache and written out per step of :func:`embed_to_file`.
STREAM_ROWS = 4096


def embed_to_file(texts: list[str], cache: EmbeddingCache, encoder_factory: Callable[[], Encoder],
                  out_path: Path | str, progress_label: str = "") -> EmbedStats:
    """Like :func:`embed_with_cache`, but write the ``float32 [len(texts), dim]`` matrix to
    the ``.npy`` file ``out_path`` (atomically) without ever holding it in memory.

    Two passes: first the texts missing from the cache are found (keys only), sorted by
    length and embedded into the cache, chunk by chunk; then the rows are read back from the
    cache in input order, :data:`STREAM_ROWS` at a time, and appended to the file. Peak
    memory is the texts plus a few thousand rows, whatever the size of the matrix: a million
    384-dimensional vectors (1.5 GB) are written with about 6 MB of vectors in memory.
    A text found missing in the second pass (a corrupt entry, or one deleted meanwhile) is
    embedded there.

    Raises:
        ModelError: the encoder returns vectors of another dimension or non-finite values.
    """
    from oxidize.util.atomic import atomic_path

    unique = list(dict.fromkeys(texts))
    n_unique = len(unique)
    missing = cache.missing(unique)
    _embed_missing(unique, missing, cache, encoder_factory, progress_label)
    del unique
    embedded = len(missing)
    header = {"descr": "<f4", "fortran_order": False, "shape": (len(texts), cache.dim)}
    buffer = np.empty((min(STREAM_ROWS, max(len(texts), 1)), cache.dim), dtype=np.float32)
    with atomic_path(out_path, suffix=".npy") as tmp:
        with open(tmp, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for start in range(0, len(texts), STREAM_ROWS):
                chunk = texts[start:start + STREAM_ROWS]
                vectors, late = cache.lookup(chunk, out=buffer[:len(chunk)])
                if late:
                    late_texts = list(dict.fromkeys(chunk[i] for i in late))
                    fresh = store_checked(encoder_factory().encode(late_texts, kind=cache.kind), late_texts, cache)
                    embedded += len(late_texts)
                    row_of = {t: r for r, t in enumerate(late_texts)}
                    vectors[late] = fresh[[row_of[chunk[i]] for i in late]]
                handle.write(vectors.astype("<f4", copy=False).tobytes())
    embedded = min(embedded, n_unique)
    return EmbedStats(total=len(texts), unique=n_unique, cached=n_unique - embedded, embedded=embedded)


def _key_batches(texts: Sequence[str]):
    """Yield ``({sha256 key: [row indices]}, "?,?,…")`` for at most ``_SQL_VARS`` texts at a
    time: one ``IN (…)`` query per batch, and duplicate texts share their key's rows."""
    for start in range(0, len(texts), _SQL_VARS):
        rows_of: dict[bytes, list[int]] = {}
        for i in range(start, min(start + _SQL_VARS, len(texts))):
            rows_of.setdefault(text_key(texts[i]), []).append(i)
        yield rows_of, ",".join("?" * len(rows_of))
