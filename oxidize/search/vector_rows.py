"""An index's vectors as f16 rows in key order: exact search, and exact re-ranking of a graph's
candidates.

Three files sit beside each projection's graph (oxidize/search/index.py):

* ``base.npy`` — the plain embeddings (hybrid search's raw list, ``--base``, ``--compare``,
  ``doit bench``'s raw lines). They have no graph (a second graph was the larger half of
  every index step); they are searched exactly (USearch's brute force
  over the memory-mapped f16 rows: about 10 ms at 100k items of 384 dimensions, 75–100 ms at
  a million on 2 cores), and hybrid search above :data:`~oxidize.search.index.EXACT_MAX_FUSED`
  items ranks only the candidates the other two lists found (:data:`RERANK_POOL` + the
  lexical pool), which read the same MRR@10 as the full raw list on oxidize's question sets.
* ``projected.npy`` — the projected vectors. The graph (``index.usearch``) holds them
  quantised to i8, which builds it 1.3–2.1× faster than f16; the graph's
  :data:`RERANK_EXTRA` more candidates are ranked by their exact cosine here
  (:class:`RerankedGraph`), which finds what an f16 graph finds (docs/benchmarks.md).
* ``keys.npy`` — the keys, ascending (a key's row is a binary search away).

Rows are unit vectors stored as f16: a cosine keeps three decimals.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from oxidize.errors import SearchError

if TYPE_CHECKING:
    import numpy as np

BASE_FILE = "base.npy"
PROJECTED_FILE = "projected.npy"
KEYS_FILE = "keys.npy"
#: How many of the projection's nearest items are candidates for hybrid's raw list (with the
#: lexical list's): measured on oxidize's question sets, 100 lost one file question
#: (temporal 0.730 against 0.758 with the full raw list), 300 and 1,000 lost none.
RERANK_POOL = 300
#: A graph of i8 vectors is asked for this many more candidates than the ``k`` wanted, and
#: they are ranked by exact cosine: on 200,000 real projected notes, 40 candidates for the
#: 10 nearest gave about the recall an f16 graph gives at each search expansion (0.992 /
#: 0.997 / 0.999 at 256 / 512 / 1024, f16 0.994 / 0.998 / 0.999), 10 alone 0.947–0.953
#: whatever the expansion; at 400,000, 100 candidates found no more than 40.
RERANK_EXTRA = 30
#: Rows converted and written at a time (bounded memory for a million-row population).
_BLOCK = 65_536


def write(out_dir: Path, keys: np.ndarray, vectors: dict[str, np.ndarray]) -> None:
    """Write each of ``vectors`` (file name → array; row ``i`` is stored under ``keys[i]``) as
    f16 rows in ascending key order, then the keys, each file atomically, in blocks (no
    full-size copy of an array is made)."""
    import numpy as np

    from oxidize.util.atomic import atomic_path

    order = np.argsort(keys, kind="stable")
    for name, array in vectors.items():
        with atomic_path(out_dir / name) as tmp, open(tmp, "wb") as handle:
            # Written block by block through the file, not a writable memory map, whose dirty
            # pages count in the build's resident memory (a million rows: 768 MB more at peak).
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                      "fortran_order": False, "shape": tuple(array.shape)}
            np.lib.format.write_array_header_1_0(handle, header)
            for lo in range(0, len(order), _BLOCK):
                handle.write(np.ascontiguousarray(array[order[lo:lo + _BLOCK]], dtype=np.float16).tobytes())
    with atomic_path(out_dir / KEYS_FILE) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(keys[order], dtype=np.uint64))


def differs(out_dir: Path, keys: np.ndarray, vectors: dict[str, np.ndarray]) -> str | None:
    """Which of the files :func:`write` would write from ``keys`` and ``vectors`` holds other
    bytes on disk (a file cut short, bytes flipped), and how; ``None`` when each holds exactly
    those rows. Compared block by block, as written."""
    import numpy as np

    order = np.argsort(keys, kind="stable")
    name = KEYS_FILE
    try:
        stored = _map(out_dir / KEYS_FILE)
        if stored.shape != (len(keys),) or not np.array_equal(stored, keys[order]):
            return f"{KEYS_FILE} holds other keys than the index's items"
        for name, array in vectors.items():
            rows = _map(out_dir / name)
            if rows.shape != tuple(array.shape) or rows.dtype != np.float16:
                return f"{name} holds {rows.shape[0] if rows.ndim else 0:,} rows of {rows.dtype}, " \
                       f"not {len(array):,} of float16"
            for lo in range(0, len(order), _BLOCK):
                want = np.ascontiguousarray(array[order[lo:lo + _BLOCK]], dtype=np.float16)
                if not np.array_equal(rows[lo:lo + _BLOCK].view(np.uint16), want.view(np.uint16)):
                    return f"{name} holds other values than the index's items (rows {lo:,} on)"
    except (OSError, ValueError) as exc:
        return f"{name} cannot be read ({exc})"
    return None


class Matches(NamedTuple):
    """What a search found, shaped as USearch's results (``keys``, ``distances``)."""

    keys: np.ndarray
    distances: np.ndarray


class KeyedRows:
    """Vectors with a key per row: ``vectors[i]`` is stored under ``keys[i]`` (in any order,
    or ascending with ``ascending=True``, as the files are). Exact search and re-ranking."""

    def __init__(self, vectors: np.ndarray, keys: np.ndarray, ascending: bool = False):
        import numpy as np

        self.vectors, self.keys = vectors, keys
        self.ndim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        self._order = None if ascending else np.argsort(keys, kind="stable")
        self._sorted = keys if ascending else keys[self._order]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def consistent(self) -> bool:
        """As many keys as rows (not so for a moment between two renames)."""
        return len(self.keys) == len(self)

    def rows_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``keys``: whether it is stored, and its row (0 where it is not)."""
        import numpy as np

        keys = np.asarray(keys, dtype=np.uint64)
        if not len(self):
            return np.zeros(keys.shape, bool), np.zeros(keys.shape, np.int64)
        at = np.minimum(np.searchsorted(self._sorted, keys), len(self) - 1)
        stored = np.asarray(self._sorted[at]) == keys
        rows = at if self._order is None else self._order[at]
        return stored, np.where(stored, rows, 0).astype(np.int64)

    def search(self, vector: np.ndarray, k: int) -> Matches:
        """The ``k`` nearest rows to ``vector`` by cosine, exactly (USearch's brute force over
        the rows, SIMD), as keys."""
        import numpy as np

        from oxidize.search.usearch_import import usearch_index

        k = min(k, len(self))
        query = np.asarray(vector, dtype=self.vectors.dtype).reshape(-1)
        found = usearch_index().search(self.vectors, query, k, "cos", exact=True, threads=0)
        rows = np.asarray(found.keys, dtype=np.int64)
        return Matches(np.asarray(self.keys[rows], dtype=np.uint64), np.asarray(found.distances))

    def rerank(self, vector: np.ndarray, keys: list[int], k: int) -> list[tuple[int, float]]:
        """``keys`` (those stored) ranked by cosine to ``vector``, best first, at most ``k``,
        as ``(key, cosine)``; equal cosines keep the order of ``keys``."""
        import numpy as np

        unique = np.fromiter(dict.fromkeys(int(key) for key in keys), dtype=np.uint64)
        stored, rows = self.rows_of(unique)
        unique, rows = unique[stored], rows[stored]
        if not len(unique):
            return []
        cosines = _cosines(np.asarray(self.vectors[rows], dtype=np.float32),
                           np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        order = np.argsort(-cosines, kind="stable")[:k]
        return [(int(unique[i]), round(float(cosines[i]), 4)) for i in order]

    def rerank_many(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> Matches:
        """Each query's ``candidates`` (a row of keys; unknown keys and :data:`MISSING` are
        skipped) ranked by exact cosine, the best ``k`` kept (:data:`MISSING` where fewer
        were known)."""
        import numpy as np

        stored, rows = self.rows_of(candidates)
        vectors = np.asarray(self.vectors[rows.ravel()], dtype=np.float32).reshape(*rows.shape, -1)
        norms = np.maximum(np.linalg.norm(vectors, axis=2), 1e-12)
        queries = np.asarray(queries, dtype=np.float32)
        q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        cosines = np.where(stored, np.einsum("nkd,nd->nk", vectors, q) / norms, -np.inf)
        order = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(cosines, order, axis=1)
        keys = np.where(np.isfinite(best), np.take_along_axis(np.asarray(candidates, np.uint64), order, axis=1),
                        np.uint64(MISSING))
        return Matches(keys, 1.0 - best)


#: The key of "no item" (a result row shorter than ``k``). USearch pads a batch's short rows
#: with key 0, which may be a real key, so :class:`RerankedGraph` marks them with this.
MISSING = 2 ** 64 - 1


def _cosines(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    qn = np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    return (queries @ vectors.T) / (qn * norms)


def open_rows(directory: Path, name: str) -> KeyedRows:
    """The rows of ``directory / name`` and their keys, memory-mapped."""
    import numpy as np

    paths = (directory / name, directory / KEYS_FILE)
    try:
        vectors, keys = _map(paths[0]), _map(paths[1])
    except (OSError, ValueError) as exc:
        raise SearchError(f"{directory}: the vectors ({name}, {KEYS_FILE}) are not readable ({exc}); "
                          f"delete them and run `doit`") from None
    if vectors.ndim != 2 or vectors.dtype != np.float16 or keys.ndim != 1:
        raise SearchError(f"{paths[0]}: holds {vectors.dtype} of shape {vectors.shape}, "
                          f"expected f16 rows; delete it and run `doit`")
    return KeyedRows(vectors, keys, ascending=True)


def _map(path: Path) -> np.ndarray:
    """The ``.npy`` array at ``path``, memory-mapped read-only from the one file that was
    opened: ``np.load(mmap_mode=...)`` reads the header and then maps the path again, so a
    build that renames a new file in between pairs one file's header with the other's bytes."""
    import numpy as np

    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version} is not one oxidize writes")
        shape, fortran, dtype = read_header(handle)
        if not shape or 0 in shape:  # numpy cannot map an empty file region
            return np.zeros(shape, dtype=dtype)
        return np.memmap(handle, dtype=dtype, mode="r", offset=handle.tell(), shape=shape,
                         order="F" if fortran else "C")


class RerankedGraph:
    """A graph of quantised vectors searched :data:`RERANK_EXTRA` wider, its candidates ranked
    by the exact ``rows``: what :func:`oxidize.search.recall.calibrate` measures and
    :class:`~oxidize.search.index.Searcher` searches (``expansion_search``, ``search``)."""

    def __init__(self, graph, rows: KeyedRows):
        self.graph, self.rows = graph, rows

    @property
    def expansion_search(self) -> int:
        return self.graph.expansion_search

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        self.graph.expansion_search = value

    def search(self, queries: np.ndarray, k: int) -> Matches:
        import numpy as np

        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        found = self.graph.search(queries, min(k + RERANK_EXTRA, len(self.graph)))
        candidates = np.array(np.atleast_2d(found.keys), dtype=np.uint64)
        counts = getattr(found, "counts", None)  # a batch pads short rows with key 0
        if counts is not None:
            candidates[np.arange(candidates.shape[1])[None, :] >= np.asarray(counts)[:, None]] = MISSING
        return self.rows.rerank_many(queries, candidates, k)
