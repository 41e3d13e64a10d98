"""A projection's plain embeddings, kept as vectors and searched exactly (no graph).

The raw embedding is searched for three things: ``doit query --base`` and ``--compare``
(the projection judged against it), ``doit bench``'s raw lines, and hybrid search's third
list beside the projection's. Up to session 7 each projection built an HNSW graph of them
too, and it was the larger half of every index step (384 or 768 dimensions against 256):
at a million items about half of 1,560 s. Now they are two files beside the index:

* ``base.npy`` — the vectors as f16 rows (unit rows: f16 keeps three decimals of a cosine),
  in ascending key order;
* ``base_keys.npy`` — the keys, ascending (so a key's row is a binary search away).

Both are memory-mapped when searched, and searched exactly with USearch's brute-force
search (SIMD over f16: about 10 ms at 100k items of 384 dimensions, 75–100 ms at a million, on 2
cores — docs/benchmarks.md, session 8). Hybrid search above :data:`~oxidize.index.EXACT_MAX_FUSED`
items does not scan them: its raw list is the raw cosine ranking of the candidates the
projection's graph and the lexical index found (:data:`RERANK_POOL` + the lexical pool),
which read the same MRR@10 as the full raw list on oxidize's question sets (oxidize/search.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from oxidize.errors import SearchError

if TYPE_CHECKING:
    import numpy as np

VECTORS_FILE = "base.npy"
KEYS_FILE = "base_keys.npy"
#: How many of the projection's nearest items are candidates for hybrid's raw list (with the
#: lexical list's): measured on oxidize's question sets, 100 lost one file question
#: (temporal 0.730 against 0.758 with the full raw list), 300 and 1,000 lost none.
RERANK_POOL = 300
#: Rows converted and written at a time (bounded memory for a million-row population).
_BLOCK = 65_536


def write(out_dir: Path, keys: np.ndarray, vectors: np.ndarray) -> None:
    """Write ``vectors`` (row ``i`` stored under ``keys[i]``) as f16 rows in ascending key
    order, each file atomically, in blocks (no full-size copy of ``vectors`` is made)."""
    import numpy as np

    from oxidize.atomic import atomic_path

    order = np.argsort(keys, kind="stable")
    with atomic_path(out_dir / VECTORS_FILE) as tmp, open(tmp, "wb") as handle:
        # Written block by block through the file, not a writable memory map, whose dirty
        # pages count in the build's resident memory (a million rows: 768 MB more at peak).
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                      "fortran_order": False, "shape": tuple(vectors.shape)})
        for lo in range(0, len(order), _BLOCK):
            handle.write(np.ascontiguousarray(vectors[order[lo:lo + _BLOCK]], dtype=np.float16).tobytes())
    with atomic_path(out_dir / KEYS_FILE) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(keys[order], dtype=np.uint64))


class Matches(NamedTuple):
    """What a search found, shaped as USearch's results (``keys``, ``distances``)."""

    keys: np.ndarray
    distances: np.ndarray


class PlainVectors:
    """The plain embeddings of ``directory``, memory-mapped; the part of USearch's ``Index``
    that :class:`~oxidize.index.Searcher` uses (``ndim``, ``len``, ``search``), exact."""

    #: Not used (the search is exact); kept so a searcher can set it as on a graph.
    expansion_search = 0

    def __init__(self, directory: Path):
        import numpy as np

        paths = (directory / VECTORS_FILE, directory / KEYS_FILE)
        try:
            self.vectors = np.load(paths[0], mmap_mode="r")
            self.keys = np.load(paths[1], mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise SearchError(f"{directory}: the plain embeddings ({VECTORS_FILE}, {KEYS_FILE}) are "
                              f"not readable ({exc}); delete them and run `doit`") from None
        if self.vectors.ndim != 2 or self.vectors.dtype != np.float16 or self.keys.ndim != 1:
            raise SearchError(f"{paths[0]}: holds {self.vectors.dtype} of shape {self.vectors.shape}, "
                              f"expected f16 rows; delete it and run `doit`")
        self.ndim = int(self.vectors.shape[1])

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def consistent(self) -> bool:
        """Both files hold the same number of rows (not so for a moment between two renames)."""
        return len(self.keys) == len(self)

    def search(self, vector: np.ndarray, k: int, exact: bool = True) -> Matches:
        """The ``k`` nearest rows to ``vector`` by cosine (always exact), as keys."""
        import numpy as np

        from oxidize.usearch_import import usearch_index

        k = min(k, len(self))
        found = usearch_index().search(self.vectors, np.asarray(vector, dtype=np.float16).reshape(-1), k, "cos",
                       exact=True, threads=0)
        rows = np.asarray(found.keys, dtype=np.int64)
        return Matches(np.asarray(self.keys[rows], dtype=np.uint64), np.asarray(found.distances))

    def rerank(self, vector: np.ndarray, keys: list[int], k: int) -> list[tuple[int, float]]:
        """``keys`` (those stored) ranked by cosine to ``vector``, best first, at most ``k``,
        as ``(key, cosine)``; equal cosines keep the order of ``keys``."""
        import numpy as np

        unique = np.fromiter(dict.fromkeys(keys), dtype=np.uint64)
        if not len(unique) or not len(self):
            return []
        rows = np.searchsorted(self.keys, unique)
        rows = np.minimum(rows, len(self) - 1)
        stored = np.asarray(self.keys[rows]) == unique
        unique, rows = unique[stored], rows[stored]
        vectors = np.asarray(self.vectors[rows], dtype=np.float32)
        norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        cosines = vectors @ query / (norms * max(float(np.linalg.norm(query)), 1e-12))
        order = np.argsort(-cosines, kind="stable")[:k]
        return [(int(unique[i]), round(float(cosines[i]), 4)) for i in order]
