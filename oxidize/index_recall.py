"""How wide a graph is searched: its recall against exact search, measured per index.

A fixed search expansion of 128 found 0.690 of the true 10 nearest at a million clustered
items (docs/benchmarks.md, "Index"), and recall falls with size and with how clustered the
vectors are. So when an index is written, :func:`calibrate` searches queries drawn near the
index's own vectors in the graph and exactly, and raises the expansion step by step until
recall@10 reaches :data:`RECALL_TARGET` (oxidize/index.py records it, every search uses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Recall@10 against exact search that a graph search must reach (measured per index) …
RECALL_TARGET = 0.99
#: … on the calibration sample with this much to spare. A query's recall is all or most for
#: most queries and poor for a few, so a sample measures it loosely: at 300,000 items three
#: sets of 300 other queries gave 0.946–0.973 where the 200-query sample said 0.945, and at a
#: million a sample's 1.000 (at expansion 512) was 0.986 on 300 others. Hence 1,000 queries
#: (about ±0.004; their exact answers cost ~5 s at a million, beside a build of minutes).
CALIBRATION_MARGIN = 0.005
#: Expansions tried in turn by :func:`calibrate`; the last is kept if none reaches the target.
#: Real projected notes need about twice the stand-ins' expansion, and more as they grow
#: (``bench_real_index``, session 9: 256 at 100k, 512 at 200k, 1536 at 400k), so the steps go
#: past 2048 for a real million (an i8 graph at a million: ~7 ms at 1024).
EXPANSION_STEPS = (128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
#: Queries of the calibration sample, and how far each is moved from the item it is drawn from.
CALIBRATION_QUERIES = 1_000
QUERY_NOISE = 4 / 3


def calibrate(index, vectors: np.ndarray, keys: np.ndarray,
              target: float = RECALL_TARGET + CALIBRATION_MARGIN) -> dict[str, Any]:
    """The smallest of :data:`EXPANSION_STEPS` whose graph search finds ``target`` of the true
    10 nearest neighbours of a sample of ``vectors`` (row ``i`` stored under ``keys[i]``; each
    moved by a little noise, as a query near the data is), and the recall it measured; sets
    it on ``index``.

    The recall recorded is measured again on a second sample that did not choose the
    expansion: stopping at the first step whose sample clears the target picks the step
    where that sample's noise ran high, and at a million items the choosing sample said
    0.996–1.000 where other queries found 0.986–0.989 (docs/benchmarks.md, sessions 6–8).
    Where the second sample finds less than :data:`RECALL_TARGET`, the expansion rises
    until it does (or the steps end)."""
    import numpy as np

    n = len(vectors)
    rng = np.random.default_rng(0)
    each = min(CALIBRATION_QUERIES, max(1, n // 2))
    rows = rng.choice(n, min(2 * each, n), replace=False)
    choosing = _RecallProbe(vectors, keys, rows[:each], rng)
    checking = _RecallProbe(vectors, keys, rows[each:], rng) if len(rows) > each else choosing
    steps = iter(EXPANSION_STEPS)
    expansion, chosen = EXPANSION_STEPS[0], 0.0
    for expansion in steps:
        chosen = choosing.recall(index, expansion)
        if chosen >= target:
            break
    recall = checking.recall(index, expansion)
    wider = next(steps, None)
    while recall < RECALL_TARGET and wider is not None:  # the second sample fell short
        expansion, recall = wider, checking.recall(index, wider)
        wider = next(steps, None)
    index.expansion_search = expansion
    return {"expansion_search": int(expansion), "recall@10": round(recall, 4),
            "calibration_recall@10": round(chosen, 4), "exact": False}


class _RecallProbe:
    """Queries near ``vectors[rows]`` and their exact answers; :meth:`recall` of a graph at
    an expansion against them."""

    def __init__(self, vectors: np.ndarray, keys: np.ndarray, rows: np.ndarray, rng):
        import numpy as np

        self.vectors = vectors
        dim = vectors.shape[1]
        # A query sits as far from its nearest items as people's questions do from theirs
        # (cosine about 0.6 to the item it was drawn from: noise of norm 4/3 on a unit vector).
        queries = vectors[rows] + rng.normal(scale=QUERY_NOISE / max(dim, 1) ** 0.5,
                                             size=(len(rows), dim)).astype(np.float32)
        self.queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        self.k = min(10, len(vectors))
        # The k-th exact similarity of each query: a found item at least that similar counts,
        # so identical vectors (the same text indexed twice) are not "misses" between themselves.
        self.kth = np.array([min(self._sim(i, r) for r in top)
                             for i, top in enumerate(exact_top(vectors, self.queries, self.k))])
        self.row_of = {int(key): row for row, key in enumerate(keys)}

    def _sim(self, i: int, row: int) -> float:  # cosine, without a normalised copy of every vector
        v = self.vectors[row]
        return float(self.queries[i] @ v) / max(float((v @ v) ** 0.5), 1e-12)

    def recall(self, index, expansion: int) -> float:
        import numpy as np

        index.expansion_search = expansion
        found = index.search(self.queries, self.k).keys
        hits = [sum(self._sim(i, self.row_of[int(key)]) >= self.kth[i] - 1e-5
                    for key in found[i] if int(key) in self.row_of)
                for i in range(len(self.queries))]
        return float(np.mean(hits)) / self.k


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, block: int | None = None) -> list[list[int]]:
    """Row numbers of each query's ``k`` nearest vectors (cosine: the vectors are unit rows
    or are normalised here), read in blocks of about 4M similarities (16 MB), so a million
    rows never sit in one product and memory does not grow with the index.

    After the first block only the similarities above a query's current ``k``-th best are
    merged (a few per block): choosing the top of every block whole cost twice the product
    itself (1,000 queries over a million rows: ~24 s, most of a calibration)."""
    import numpy as np

    nq = len(queries)
    block = block or max(256, (1 << 22) // max(1, nq))
    best = np.full((nq, k), -np.inf, np.float32)
    rows = np.zeros((nq, k), np.int64)
    owners = np.repeat(np.arange(nq), k)
    for lo in range(0, len(vectors), block):
        part = vectors[lo:lo + block]
        sims = queries @ (part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)).T
        if lo == 0 or sims.shape[1] < k:
            kk = min(k, sims.shape[1])
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            cand = np.concatenate([best, np.take_along_axis(sims, top, axis=1)], axis=1)
            ids = np.concatenate([rows, top + lo], axis=1)
            keep = np.argpartition(-cand, k - 1, axis=1)[:, :k]
            best = np.take_along_axis(cand, keep, axis=1)
            rows = np.take_along_axis(ids, keep, axis=1)
            continue
        qi, ci = np.nonzero(sims > best.min(axis=1)[:, None])
        if not len(qi):
            continue
        values = np.concatenate([best.ravel(), sims[qi, ci]])
        owner = np.concatenate([owners, qi])
        ids = np.concatenate([rows.ravel(), ci + lo])
        order = np.lexsort((-values, owner))  # by query, best first within each
        sorted_owner = owner[order]
        place = np.arange(len(order)) - np.searchsorted(sorted_owner, sorted_owner)
        keep = order[place < k]  # each query holds its k best and any new ones: exactly k kept
        best, rows = values[keep].reshape(nq, k), ids[keep].reshape(nq, k)
    return [r.tolist() for r in rows]
