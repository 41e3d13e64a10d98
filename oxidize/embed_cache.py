"""A content-addressed embedding cache: no text is ever embedded twice by the same model.

Embedding is the slow step of a build. Different recipes and projections share most of
their texts, and a rebuild after new events adds only a few, so vectors are cached by
*what they are a function of*: the model fingerprint (files + pooling/prefix settings, see
:mod:`oxidize.models`), the kind (``passage``/``query``, which selects the prefix) and the
sha256 of the exact text. Paths, recipe names and times are not part of the key, so a
vector computed for one recipe serves every other.

On disk it is one SQLite file (``build/.cache/embeddings.sqlite``)::

    embeddings(model TEXT, kind TEXT, text_sha256 BLOB(32), dim INTEGER, vector BLOB)
        PRIMARY KEY (model, kind, text_sha256)    -- vector: dim little-endian float32

Why these choices are safe:

* **Two builds at once.** WAL mode lets readers run beside a writer, and a 60 s busy
  timeout makes a second writer wait rather than fail. Writes are ``INSERT OR REPLACE``
  of a deterministic value, so two processes embedding the same text cannot disagree.
* **Kill-safe.** Each :meth:`EmbeddingCache.store` is one transaction, and
  :func:`embed_with_cache` stores every chunk as soon as it is embedded: a killed build
  keeps all the work done before the kill and the next run starts from there.
* **Validated on read.** An entry whose blob length is not ``dim * 4`` or that holds a
  NaN/inf is deleted, reported with a :class:`CacheWarning` and embedded again.
* **Only a cache.** A file that is not a database is a :class:`~oxidize.errors.CacheError`
  saying the file may be deleted: nothing is lost but time.
"""

from __future__ import annotations

import hashlib
import sqlite3
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from oxidize.errors import CacheError, ModelError
from oxidize.progress import Progress

if TYPE_CHECKING:  # the encoder (onnxruntime) is loaded only when something must be embedded
    from oxidize.encoder import Encoder

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
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


class CacheWarning(UserWarning):
    """A cache entry was unusable and has been dropped; its text is embedded again."""


def text_key(text: str) -> bytes:
    """sha256 of the exact text (UTF-8; lone surrogates kept as-is rather than failing)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Vectors of one model (fingerprint ``model_fp``) and one ``kind`` in a SQLite file.

    Args:
        path: the SQLite file; created with its parent directory if missing.
        model_fp: the model fingerprint (:func:`oxidize.models.fingerprint`).
        dim: the model's embedding dimension; entries of another length are invalid.
        kind: ``"passage"`` or ``"query"`` — the same text gets another prefix, so another vector.

    Raises:
        CacheError: the file is not a usable SQLite database (the message says it can be deleted).
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
        with self._guard("open"):
            self._conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
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

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Cached vectors for ``texts``: ``(float32 [n, dim], missing indices)``.

        Rows listed in ``missing`` are zero. Invalid entries count as missing; they are deleted
        and reported once per call with a :class:`CacheWarning`.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        bad: list[bytes] = []
        conn = self._connection()
        with self._guard("read"):
            for start in range(0, len(keys), _SQL_VARS):
                part = list(dict.fromkeys(keys[start:start + _SQL_VARS]))
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    f"SELECT text_sha256, dim, vector FROM embeddings "
                    f"WHERE model = ? AND kind = ? AND text_sha256 IN ({marks})",
                    [self.model_fp, self.kind, *part])
                for key, dim, blob in rows:
                    vec = self._decode(dim, blob)
                    if vec is None:
                        bad.append(bytes(key))
                    else:
                        found[bytes(key)] = vec
        if bad:
            self._drop(bad)
            warnings.warn(f"embedding cache {self.path}: {len(bad)} corrupt entr"
                          f"{'y' if len(bad) == 1 else 'ies'} dropped; embedding again",
                          CacheWarning, stacklevel=2)
        missing = []
        for i, key in enumerate(keys):
            vec = found.get(key)
            if vec is None:
                missing.append(i)
            else:
                out[i] = vec
        return out, missing

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
                conn.execute("ROLLBACK")
                raise

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

    def _decode(self, dim: int, blob: bytes) -> np.ndarray | None:
        if dim != self.dim or not isinstance(blob, bytes) or len(blob) != self.dim * 4:
            return None
        vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return vec if np.isfinite(vec).all() else None

    def _drop(self, keys: list[bytes]) -> None:
        conn = self._connection()
        with self._guard("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("DELETE FROM embeddings WHERE model = ? AND kind = ? AND text_sha256 = ?",
                                 [(self.model_fp, self.kind, k) for k in keys])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _delete_hint(self) -> str:
        return (f"it is only a cache and can be deleted safely (rm {self.path}); "
                f"the texts will be embedded again")

    def _guard(self, what: str):
        return _SqliteGuard(self, what)


class _SqliteGuard:
    """Turn sqlite3 errors into a CacheError that names the file and says it may be deleted."""

    def __init__(self, cache: EmbeddingCache, what: str):
        self.cache, self.what = cache, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, sqlite3.Error):
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                detail = (f"it stayed locked by another process for {BUSY_TIMEOUT_S:.0f} s; "
                          f"retry when the other build has finished, or")
                raise CacheError(f"embedding cache {self.cache.path}: cannot {self.what}: {exc}; "
                                 f"{detail} {self.cache._delete_hint()}") from exc
            raise CacheError(f"embedding cache {self.cache.path} is not a usable SQLite database "
                             f"({self.what}: {exc}); {self.cache._delete_hint()}") from exc
        return False


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


def embed_with_cache(texts: list[str], cache: EmbeddingCache, encoder_factory: Callable[[], Encoder],
                     progress_label: str = "") -> tuple[np.ndarray, EmbedStats]:
    """Embed ``texts`` through ``cache``: each distinct text not yet cached is embedded once.

    Args:
        texts: the texts, in the order of the result's rows; duplicates are allowed.
        cache: the open cache of the model (its ``kind`` selects the encoder's prefix).
        encoder_factory: makes an :class:`oxidize.encoder.Encoder`; called only if some text
            is missing, so a fully cached rebuild never loads the model.
        progress_label: label of the progress line on stderr.

    Returns:
        ``float32 [len(texts), dim]`` in input order, and the :class:`EmbedStats`.

    Raises:
        ModelError: the encoder returns vectors of another dimension or non-finite values.
    """
    unique = list(dict.fromkeys(texts))
    matrix, missing = cache.lookup(unique)
    if missing:
        # Chunks of similar length: the encoder pads per batch, so this wastes less on padding.
        missing.sort(key=lambda i: len(unique[i]))
        encoder = encoder_factory()
        progress = Progress(len(missing), progress_label or "embed", unit="texts")
        for start in range(0, len(missing), CHUNK):
            rows = missing[start:start + CHUNK]
            chunk = [unique[i] for i in rows]
            vectors = np.asarray(encoder.encode(chunk, kind=cache.kind, progress=_Offset(progress, start)),
                                 dtype=np.float32)
            if vectors.shape != (len(chunk), cache.dim):
                raise ModelError(f"the encoder returned vectors of shape {vectors.shape} for "
                                 f"{len(chunk)} texts; the cache expects dimension {cache.dim}")
            if not np.isfinite(vectors).all():
                bad = int((~np.isfinite(vectors).all(axis=1)).sum())
                raise ModelError(f"the model produced NaN or infinite embeddings for {bad} text(s); "
                                 f"is the model file intact?")
            cache.store(chunk, vectors)  # stored now: a kill after this keeps the chunk
            matrix[rows] = vectors
            progress.update(start + len(chunk))
    index = {text: i for i, text in enumerate(unique)}
    result = matrix[[index[t] for t in texts]] if texts else np.zeros((0, cache.dim), np.float32)
    stats = EmbedStats(total=len(texts), unique=len(unique), cached=len(unique) - len(missing),
                       embedded=len(missing))
    return result, stats
