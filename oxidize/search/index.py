"""A projection's search index: the population's vectors in USearch, and a table to read hits.

Files in ``build/R/P/`` (each written to a temporary name and renamed into place):

* ``index.usearch`` — an HNSW graph of the projected vectors (USearch, cosine, vectors
  quantised to i8, u64 keys: the stable keys of :mod:`oxidize.search.population`);
* ``projected.npy``, ``base.npy``, ``keys.npy`` — the projected vectors and the plain
  embeddings of the same items as f16 rows in key order (:mod:`oxidize.search.vector_rows`): the
  exact cosines that rank the graph's candidates, and the plain embeddings searched without
  a graph (hybrid search's raw list, ``--base``, ``--compare``);
* ``index.sqlite`` — ``items(key, seq, event_type, source_id, timestamp, text)``, a
  ``meta`` table (item count, dimensions, model fingerprint, the weights' sha256), the
  lexical index ``lexical`` (FTS5 over ``items.text``, :mod:`oxidize.search.lexical`) and
  ``weights`` (the bytes of the ``weights.safetensors`` the vectors were projected with: a
  query is projected with the same weights as the items, even when the projection was
  retrained since and the index is stale).

The table is renamed into place last, and a :class:`Searcher` checks that each file holds
as many vectors as the table says: a search during a rebuild reads the old or the new files,
and a mismatch (the moment between two renames) is retried, then reported, never mixed.

Search of the projected vectors: exact (brute force over the f16 rows) up to
:data:`EXACT_MAX` items, where it is both exact and as fast as the graph; above it, USearch's
HNSW graph, searched as wide as :func:`oxidize.search.recall.calibrate` measured it must be
to find :data:`~oxidize.search.recall.RECALL_TARGET` of the true 10 nearest (recorded in
``meta``, used by every search), its candidates ranked by exact cosine
(:class:`~oxidize.search.vector_rows.RerankedGraph`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxidize.errors import SearchError
from oxidize.search.recall import RECALL_TARGET, calibrate

if TYPE_CHECKING:
    import numpy as np

    from oxidize.search.population import Item

#: What the index files hold; a new format makes every index stale (the index task's inputs).
#: 2: the lexical index and the weights in index.sqlite. 3: f16 storage, expansion_add 64.
#: 4: the plain embeddings as vectors searched exactly (no second graph); graphs built at
#: expansion 128. 5: the graph's vectors in i8, re-ranked by the projected vectors' f16 rows.
#: 6: ``meta.search_choice``, the search chosen on the history questions.
INDEX_FORMAT = 6
INDEX_FILE = "index.usearch"
TABLE_FILE = "index.sqlite"
#: HNSW graph settings, chosen by measurement (docs/benchmarks.md, "Index settings":
#: ``python -m benchmarks.bench_index_settings`` on stand-ins, ``bench_real_index`` on real
#: projected notes). 16 links at every size: on 200k real vectors 14 links needed expansion
#: 1024 (5.3–5.8 ms a query) where 16 needed 512 (2.8–3.4 ms) for the same build time. Built
#: at expansion 128: a graph built at 64 needed search expansion 1536 (5 ms) on 100k real
#: notes, one built at 128 only 256 (0.9 ms). The graph stores i8 vectors and ranks its
#: candidates by exact cosine from the f16 rows (:class:`~oxidize.search.vector_rows.
#: RerankedGraph`): an i8 cosine alone keeps about 8 of 127 levels per unit-vector component
#: (0.91–0.95 recall whatever the expansion), but the true 10 nearest are among its 40
#: nearest; re-ranked, i8 finds what f16 finds (200k real: 0.992/0.999 at expansion
#: 256/1024) and builds 1.3–2× faster (36 s against 58 s).
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 128
#: How a graph of oxidize's own indexes stores its vectors (patina's export stays ``f32``):
#: i8, its candidates re-ranked by the f16 rows of :mod:`oxidize.search.vector_rows` (above).
#: USearch quantises a component ``c`` as ``round(127 c)``; newer releases normalise the row
#: first, older ones (2.12) do not and wrap above 1.0 — projected vectors are unit rows
#: (:func:`oxidize.projection.project` normalises), so both store the same levels.
STORAGE = "i8"
#: patina's export is built as densely as oxidize's indexes were before (patina searches it
#: at an expansion oxidize does not choose).
PATINA_EXPANSION_ADD = 128
#: Up to this many items a search is exact (brute force over the stored vectors). Above, the
#: graph at its calibrated expansion: at 100k stand-in items exact search took 7.6 ms a query,
#: the graph 0.6 ms at recall 1.000 (docs/benchmarks.md, "Index per size"). Graphs of up to
#: this many items are built (an update in place may grow them past it) but not calibrated:
#: no search reads them, and calibrating one cost most of the dev build's incremental index
#: step (4,635 items: 1.0 s of 1.3 s).
EXACT_MAX = 20_000
#: A list that only feeds a fusion (hybrid's raw embedding list beside the projection's) is
#: an exact search only up to this many items; above, the raw cosine ranking of the other
#: lists' candidates (oxidize/search/vector_rows.py): exact, it took as long as the rest of a
#: hybrid query (docs/benchmarks.md, "Hybrid search").
EXACT_MAX_FUSED = 2_000
#: A graph whose calibrated search stays below :data:`RECALL_TARGET` even at the widest
#: expansion (it happens: USearch's threaded inserts now and then leave a few nodes hard to
#: reach, 2 of 40 builds of 600 clustered items here) is searched exactly instead, up to this
#: many items (exact search: 7.6 ms a query at 100k); above it the graph is kept and
#: ``doit query`` says its measured recall.
EXACT_FALLBACK_MAX = 200_000


@dataclass(frozen=True)
class Hit:
    """One search result (``--json`` prints exactly these fields)."""

    rank: int
    score: float
    event_type: str
    date: str
    source_id: str
    seq: int | None
    key: int
    snippet: str
    #: Where the item ranked in the dense list and in the lexical (BM25) list; ``None``
    #: where it is not in that list (or the mode did not search it).
    dense_rank: int | None = None
    lexical_rank: int | None = None
    #: In a file search, the definition that matched (``{source_id, event_type, snippet}``:
    #: the file ranks by its best item), ``None`` when the file itself did.
    match: dict | None = None


def write_index(out_dir: Path, items: list[Item], base: np.ndarray, projected: np.ndarray,
                meta: dict[str, Any], weights_file: Path | None = None) -> None:
    """Write the vector rows, the projected graph and the table for ``items`` (row ``i`` of
    ``base`` and ``projected`` is ``items[i]``), each atomically, the table (with the lexical
    index and the bytes of ``weights_file``) last."""
    import numpy as np

    from oxidize.search import lexical, vector_rows
    from oxidize.util.atomic import atomic_path

    keys = np.fromiter((item.key for item in items), dtype=np.uint64, count=len(items))
    vector_rows.write(out_dir, keys, {vector_rows.BASE_FILE: base, vector_rows.PROJECTED_FILE: projected})
    for old in ("base.usearch", "base_keys.npy"):  # files of formats 3 and 4
        (out_dir / old).unlink(missing_ok=True)
    index = new_index(projected.shape[1])
    projected = np.ascontiguousarray(projected, dtype=np.float32)
    if len(items):
        index.add(keys, projected, threads=os.cpu_count() or 1)
    searched = {INDEX_FILE: search_settings(index, projected, keys), BASE_SEARCH: EXACT_SEARCH}
    with atomic_path(out_dir / INDEX_FILE) as tmp:
        index.save(str(tmp))
    del index
    with atomic_path(out_dir / TABLE_FILE) as tmp:
        db = sqlite3.connect(tmp)
        try:
            db.execute("CREATE TABLE items (key INTEGER PRIMARY KEY, seq INTEGER, event_type TEXT, "
                       "source_id TEXT, timestamp TEXT, text TEXT)")
            db.executemany(INSERT_ITEM, map(item_row, items))
            db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
            meta = {**meta, **index_meta(items, base, projected), "search": searched}
            db.executemany("INSERT INTO meta VALUES (?, ?)", ((k, json.dumps(v)) for k, v in meta.items()))
            lexical.create(db)
            if weights_file is not None:
                store_weights(db, Path(weights_file).read_bytes(), create=True)
            db.commit()
        finally:
            db.close()


#: ``meta`` entry: the sha256 of the weights stored in the table (damage shows against it).
STORED_WEIGHTS = "stored_weights_sha256"


def store_weights(db: sqlite3.Connection, data: bytes, create: bool = False) -> None:
    """Keep the weights' bytes in the table being written, and their sha256 in ``meta``."""
    import hashlib

    if create:
        db.execute("CREATE TABLE weights (data BLOB)")
    db.execute("DELETE FROM weights")
    db.execute("INSERT INTO weights VALUES (?)", (data,))
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (STORED_WEIGHTS, json.dumps(hashlib.sha256(data).hexdigest())))


def record_meta(directory: Path, name: str, value: Any) -> None:
    """Set one ``meta`` entry in place, in one transaction (what the index step measured on
    the index it wrote: the search it chose); an unchanged value leaves the file's bytes."""
    db = sqlite3.connect(Path(directory) / TABLE_FILE, timeout=30)
    try:
        text = json.dumps(value)
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None or row[0] != text:
            with db:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, text))
    finally:
        db.close()


#: One row of the ``items`` table, written by :func:`write_index` and by an update in place.
INSERT_ITEM = "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)"


def item_row(item: Item) -> tuple:
    """``items(key, seq, event_type, source_id, timestamp, text)`` for one item."""
    return (item.key, item.seq, item.event_type, item.source_id, item.timestamp, item.text)


def index_meta(items: list[Item], base: np.ndarray, projected: np.ndarray) -> dict[str, Any]:
    """What ``meta`` records of the index's shape (beside the caller's own keys)."""
    return {"count": len(items), "dim": int(projected.shape[1]), "base_dim": int(base.shape[1]),
            "format": INDEX_FORMAT, "storage": STORAGE}


#: ``meta.search``'s entry for the plain embeddings (always searched exactly).
BASE_SEARCH = "base"
EXACT_SEARCH = {"expansion_search": EXPANSION_SEARCH, "recall@10": 1.0, "exact": True}


def search_settings(graph, vectors: np.ndarray, keys: np.ndarray) -> dict[str, Any]:
    """How ``graph`` (of ``vectors``, row ``i`` under ``keys[i]``) is to be searched: exactly
    when it is small, or when it cannot reach the recall target and exact search is still
    affordable; else at the expansion calibrated for its re-ranked search."""
    from oxidize.search.vector_rows import KeyedRows, RerankedGraph

    if len(keys) <= EXACT_MAX:  # Searcher.nearest never searches this graph: nothing to measure
        return dict(EXACT_SEARCH)
    measured = calibrate(RerankedGraph(graph, KeyedRows(vectors, keys)), vectors, keys)
    if measured["recall@10"] < RECALL_TARGET and len(keys) <= EXACT_FALLBACK_MAX:
        return {**measured, "graph_recall@10": measured["recall@10"], "recall@10": 1.0, "exact": True}
    return measured


def new_index(ndim: int, dtype: str = STORAGE, expansion_add: int = EXPANSION_ADD,
              connectivity: int = CONNECTIVITY):
    """An empty USearch index of oxidize's settings: cosine, u64 keys, the HNSW graph above,
    vectors stored as ``dtype`` (:data:`STORAGE`; patina's export asks for ``f32``), built with
    ``connectivity`` links at ``expansion_add`` (the measured settings above)."""
    from oxidize.search.usearch_import import usearch_index

    Index = usearch_index().Index
    return Index(ndim=ndim, metric="cos", dtype=dtype, connectivity=connectivity,
                 expansion_add=expansion_add, expansion_search=EXPANSION_SEARCH)


class Searcher:
    """An open index, held by a Python user or the query command: ``search(vector, k)``.

    Args:
        directory: the projection's build folder (``build/R/P``).
        base: search the plain embeddings (:mod:`oxidize.search.vector_rows`, exactly) instead
            of the projection.
    """

    def __init__(self, directory: Path | str, base: bool = False, retries: int = 20):
        self.directory = Path(directory)
        self.base = base
        for attempt in range(retries + 1):
            try:
                self._open()
                return
            except _Mismatch as mismatch:
                if attempt == retries:
                    raise SearchError(f"{self.directory}: {mismatch}; is a build rewriting it? "
                                      f"Run `doit` and search again") from None
                time.sleep(0.1)

    def _open(self) -> None:
        from oxidize.search import vector_rows as vr

        table = self.directory / TABLE_FILE
        rows = vr.BASE_FILE if self.base else vr.PROJECTED_FILE
        files = [TABLE_FILE, rows, vr.KEYS_FILE] + ([] if self.base else [INDEX_FILE])
        missing = [name for name in files if not (self.directory / name).is_file()]
        if missing:
            why = "written by an older oxidize" if table.is_file() and INDEX_FILE not in missing else "no search index"
            raise SearchError(f"{self.directory}: {why} ({', '.join(missing)} missing); rebuild it "
                              f"with `doit`")
        try:
            self.db = sqlite3.connect(f"file:{table}?mode=ro", uri=True, check_same_thread=False)
            self.meta = {k: json.loads(v) for k, v in self.db.execute("SELECT name, value FROM meta")}
        except (sqlite3.Error, ValueError) as exc:
            raise SearchError(f"{table}: not a readable index table ({exc}); delete it and run "
                              f"`doit`") from None
        self.rows = vr.open_rows(self.directory, rows)
        if not self.rows.consistent:
            raise _Mismatch(f"{rows} and {vr.KEYS_FILE} differ in length")
        self.graph = None if self.base else self._restore_graph(self.directory / INDEX_FILE)
        self.searched = (self.meta.get("search") or {}).get(BASE_SEARCH if self.base else INDEX_FILE) or {}
        dim = self.meta.get("base_dim" if self.base else "dim")
        for name, held in [(rows, self.rows)] + ([] if self.graph is None else [(INDEX_FILE, self.graph)]):
            if held.ndim != dim:
                raise SearchError(f"{self.directory / name}: holds {held.ndim}-dimensional vectors but "
                                  f"the table says {dim}; delete it and run `doit`")
            if len(held) != self.meta.get("count"):
                raise _Mismatch(f"{name} holds {len(held):,} vectors, {TABLE_FILE} "
                                f"{self.meta.get('count'):,} items")
        if self.graph is not None:
            from oxidize.search.vector_rows import RerankedGraph

            self.graph.expansion_search = int(self.searched.get("expansion_search", EXPANSION_SEARCH))
            self.reranked = RerankedGraph(self.graph, self.rows)

    @staticmethod
    def _restore_graph(path: Path):
        from oxidize.search.usearch_import import usearch_index

        Index = usearch_index().Index
        try:
            index = Index.restore(str(path), view=True)
        except Exception as exc:  # usearch raises RuntimeError/ValueError for damaged files
            raise SearchError(f"{path}: not a readable USearch index ({str(exc).strip() or type(exc).__name__}); "
                              f"delete it and run `doit`") from None
        if index is None:
            raise SearchError(f"{path}: not a readable USearch index; delete it and run `doit`")
        return index

    @property
    def exact(self) -> bool:
        """The index is searched exactly: the plain embeddings always, a graph where it was
        written so (:func:`search_settings`)."""
        return self.base or bool(self.searched.get("exact"))

    def rerank(self, vector: np.ndarray, keys: list[int], k: int) -> list[tuple[int, float]]:
        """``keys`` ranked by cosine to ``vector`` (plain with ``base=True``, else projected)."""
        return self.rows.rerank(vector, keys, k)

    @property
    def dim(self) -> int:
        return int(self.rows.ndim)

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, vector: np.ndarray, k: int = 10) -> list[Hit]:
        """The ``k`` nearest items to one query ``vector`` (already projected, or a base
        vector with ``base=True``), best first."""
        ranked = self.nearest(vector, k)
        return self.hits([(key, score, rank, None) for rank, (key, score) in enumerate(ranked, 1)])

    def nearest(self, vector: np.ndarray, k: int, exact: bool | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest keys to ``vector`` with their cosine similarity, best first;
        exact up to :data:`EXACT_MAX` items, or where the index was written to be searched
        exactly (its graph fell short of the recall target), unless ``exact`` says otherwise;
        else the graph's candidates ranked by their exact cosine."""
        import numpy as np

        from oxidize.search.vector_rows import MISSING

        if len(self) == 0 or k <= 0:
            return []
        vector = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise SearchError(f"{self.directory}: the query vector has {vector.shape[0]} dimensions, "
                              f"the index {self.dim}; rebuild with `doit`")
        k = min(k, len(self))
        if exact is None:
            exact = len(self) <= EXACT_MAX or self.exact
        matches = self.rows.search(vector, k) if exact or self.graph is None else self.reranked.search(vector, k)
        return [(int(key), round(1.0 - float(distance), 4))
                for key, distance in zip(np.ravel(matches.keys), np.ravel(matches.distances))
                if int(key) != MISSING]

    def lexical(self, text: str, k: int) -> list[tuple[int, float]]:
        """The ``k`` best keys for ``text`` by BM25 (:mod:`oxidize.search.lexical`), best first."""
        from oxidize.search import lexical

        try:
            return lexical.search(self.db, text, k)
        except lexical.LexicalMissing:
            raise SearchError(f"{self.directory / TABLE_FILE}: no lexical index (built by an older "
                              f"oxidize); rebuild it with `doit`") from None
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None

    def has_lexical(self) -> bool:
        from oxidize.search import lexical

        return lexical.has_lexical(self.db)

    def weights(self) -> dict[str, np.ndarray] | None:
        """The projection's weights the index's vectors were made with (``None`` for an index
        written before they were stored in it)."""
        from oxidize.projection import load_weights

        try:
            row = self.db.execute("SELECT data FROM weights").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise self._damaged(exc) from None
            return None
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        return load_weights(self.directory / TABLE_FILE, data=bytes(row[0])) if row else None

    def hits(self, ranked: list[tuple[int, float, int | None, int | None]], query: str = "",
             nearest=None) -> list[Hit]:
        """:class:`Hit` rows for ``(key, score, dense rank, lexical rank)``, in that order,
        each with the snippet of its text that matches ``query`` (oxidize/search/snippets.py)."""
        from oxidize.search.snippets import best_snippet

        keys = [key for key, *_ in ranked]
        try:
            rows = {row[0]: row for row in self.db.execute(
                f"SELECT key, seq, event_type, source_id, timestamp, text FROM items WHERE key IN "
                f"({','.join('?' * len(keys))})", keys)} if keys else {}
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from None
        hits = []
        for rank, (key, score, dense_rank, lexical_rank) in enumerate(ranked, 1):
            _, seq, event_type, source_id, timestamp, text = rows.get(key, (key, None, "?", "?", "", ""))
            hits.append(Hit(rank=rank, score=round(float(score), 4), event_type=event_type,
                            date=(timestamp or "")[:10], source_id=source_id, seq=seq, key=key,
                            snippet=best_snippet(text, query, nearest=nearest),
                            dense_rank=dense_rank, lexical_rank=lexical_rank))
        return hits

    def _damaged(self, exc: Exception) -> SearchError:
        return SearchError(f"{self.directory / TABLE_FILE}: damaged ({str(exc).strip() or type(exc).__name__}); "
                           f"`doit` writes the index afresh")

    def close(self) -> None:
        self.db.close()


class _Mismatch(Exception):
    pass


def hit_dict(hit: Hit) -> dict[str, Any]:
    return asdict(hit)
