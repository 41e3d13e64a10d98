"""How wide a graph is searched: its recall against exact search, measured per index.

A fixed search expansion of 128 found 0.690 of the true 10 nearest at a million clustered
items (docs/benchmarks.md, "Index"), and recall falls with size and with how clustered the
vectors are. So when an index is written, :func:`calibrate` searches a sample of the index's
own items in the graph and exactly, and raises the expansion step by step until recall@10
reaches :data:`RECALL_TARGET` (oxidize/search/index.py records it, every search uses it).

Each sampled item is a query for the 10 nearest *other* items (its own key is not counted);
the same items moved far from every item must find :data:`FAR_RECALL_FLOOR`; the expansion
those ask for is doubled up to :data:`HEADROOM_UP_TO` (:data:`HEADROOM`) and its recall
measured on a second sample. Items moved by random noise of norm 4/3 (meant to sit as far
from the data as questions do) are only a floor: on a real million projected notes they
are two steps of expansion harder than what users ask (recall@10 at expansion
1024 / 2048 / 4096, docs/benchmarks.md, "Index per size"):

=====================================  ===============  ===============  ===============
 queries (999,000 real notes)           1024             2048             4096
=====================================  ===============  ===============  ===============
 noise of norm 4/3 (the old model)      0.9825           0.9896           0.9934
 1,000 notes held out of the graph      0.9908           0.9955           0.9976
 oxidize's 50 questions                 0.992            0.994            0.996
 indexed notes, own key excluded (2×)   0.9920–0.9925    0.9947–0.9958    0.9966–0.9976
=====================================  ===============  ===============  ===============

Noise is not hard for its direction: noise shaped like the items' own spread (the sum of 16
random centred items, scaled to the same norm) found less still (0.9775 / 0.9879 / 0.9917).
A question is a text, embedded where texts lie; an item moved by noise is not, and sits
farther from its 10 nearest (median cosine of the 10th: 0.42 against the questions' 0.555 and
the indexed notes' 0.66). Indexed items, their own key excluded, measured as hard as
held-out notes and questions at a million (at 100k–400k real notes unlike the items found
less: hence the headroom), and need no graph built without them: a build and an update in
place calibrate alike. (On the clustered stand-ins of ``bench_query`` far queries are the
harder ones: at 200,000 items, expansion 128, held-out items find 1.000 and far queries
0.973; ``bench_query`` prints both. Hence the floor.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Recall@10 against exact search that a graph search must reach (measured per index) …
RECALL_TARGET = 0.99
#: … on the calibration sample with this much to spare: a sample measures recall loosely (a
#: query's recall is all or most for most queries and poor for a few), and the first step at
#: which a sample clears a target is where its error ran high. With noisy queries and samples
#: of 200–300 the error reached 0.014, hence 0.005 and a second sample that
#: measures the recall recorded (:func:`calibrate`). With 1,000 indexed items per sample,
#: two samples at a real million differ by about 0.001 (0.9947 / 0.9958 / 0.9949 at expansion
#: 2048), so 0.003: 0.005 asked one step more there (3072: 11.7 ms a query,
#: against 7.7 ms at 2048, where held-out notes find 0.9955 and the questions 0.994).
CALIBRATION_MARGIN = 0.003
#: Expansions tried in turn by :func:`calibrate`; the last is kept if none reaches the target.
#: Real projected notes need about twice the stand-ins' expansion, and more as they grow
#: (``bench_real_index``: 256 at 100k, 512 at 200k, 1536 at 400k), so the steps go
#: past 2048 for a real million (an i8 graph at a million: ~7 ms at 1024).
EXPANSION_STEPS = (128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
#: Items of each calibration sample (one chooses the expansion, one measures its recall).
CALIBRATION_QUERIES = 1_000
#: Queries far from every item (the choosing sample's items moved by random noise of norm
#: :data:`FAR_NOISE`, cosine about 0.6 to the item) must find at least this much at the chosen
#: expansion. Nobody measured people asking such queries of real notes (there they are harder
#: than questions: 0.983 at 1024, 0.990 at 2048 at a million), but on clustered stand-ins the
#: expansion that items alone ask for lost them: 0.786 at a million, expansion 128
#: (``bench_query``), where items found 0.998. A floor below the target keeps such
#: a graph from being searched that narrowly without asking 4096 of a real million (12–15 ms).
FAR_RECALL_FLOOR = 0.985
FAR_NOISE = 4 / 3
#: The expansion those samples ask for is then doubled, up to :data:`HEADROOM_UP_TO`: real
#: queries unlike the indexed items found less than the items did at the step the items
#: chose, and about 0.99 at twice it (``bench_real_index``: 300 real notes held
#: back from 100k–400k notes made of other notes' sentences found 0.985 / 0.989 / 0.988 at
#: the items' 128 / 256 / 384, and 0.992 / 0.995 / 0.994 at 256 / 512 / 768). Doubling costs
#: a fraction of a millisecond up to 1024 (0.5 → 0.8 ms at 100k, 1.6 → 3.1 ms at 400k) and
#: stops at 2048, where a real million is searched in 7.7–8.4 ms and its held-back notes
#: found 0.992–0.993 (one step more, 3072, costs 11.4–11.7 ms).
HEADROOM = 2
HEADROOM_UP_TO = 2048


def calibrate(index, vectors: np.ndarray, keys: np.ndarray,
              target: float = RECALL_TARGET + CALIBRATION_MARGIN) -> dict[str, Any]:
    """The smallest of :data:`EXPANSION_STEPS` whose graph search finds ``target`` of the true
    10 nearest other items of a sample of ``vectors`` (row ``i`` stored under ``keys[i]``; see
    the module docstring), and at least :data:`FAR_RECALL_FLOOR` for the same items moved far
    from every item, given :data:`HEADROOM`; sets it on ``index`` and returns it with the
    recall it measured.

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
    row_of = {int(key): row for row, key in enumerate(keys)}  # one for the three samples (1M: ~1 s, ~100 MB)
    choosing = _RecallProbe(vectors, keys, rows[:each], row_of=row_of)
    far = _RecallProbe(vectors, keys, rows[:each], noise=FAR_NOISE, rng=rng, row_of=row_of)
    checking = _RecallProbe(vectors, keys, rows[each:], row_of=row_of) if len(rows) > each else choosing
    at, chosen, far_recall = 0, 0.0, None
    for at, expansion in enumerate(EXPANSION_STEPS):
        chosen, far_recall = choosing.recall(index, expansion), None
        if chosen < target:
            continue
        far_recall = far.recall(index, expansion)
        if far_recall >= FAR_RECALL_FLOOR:
            break
    needed = EXPANSION_STEPS[at]
    if needed < HEADROOM_UP_TO:  # see HEADROOM
        at = next(i for i, step in enumerate(EXPANSION_STEPS) if step >= min(HEADROOM * needed, HEADROOM_UP_TO))
        far_recall = None
    recall = checking.recall(index, EXPANSION_STEPS[at])
    while recall < RECALL_TARGET and at + 1 < len(EXPANSION_STEPS):  # the second sample fell short
        at, far_recall = at + 1, None
        recall = checking.recall(index, EXPANSION_STEPS[at])
    expansion = EXPANSION_STEPS[at]
    if far_recall is None:
        far_recall = far.recall(index, expansion)
    index.expansion_search = expansion
    return {"expansion_search": int(expansion), "recall@10": round(recall, 4),
            "needed_expansion": int(needed), "calibration_recall@10": round(chosen, 4),
            "far_recall@10": round(far_recall, 4), "exact": False}


class _RecallProbe:
    """Queries and the exact answers of each; :meth:`recall` of a graph at an expansion
    against them. The queries are the items ``vectors[rows]``, each answered by its ``k``
    nearest *other* items, or (``noise``) those items moved by random noise of that norm,
    answered by their ``k`` nearest items."""

    def __init__(self, vectors: np.ndarray, keys: np.ndarray, rows: np.ndarray,
                 noise: float = 0.0, rng=None, row_of: dict[int, int] | None = None):
        import numpy as np

        self.vectors = vectors
        queries = np.asarray(vectors[rows], dtype=np.float32)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        if noise:
            dim = queries.shape[1]
            queries = queries + rng.normal(scale=noise / dim ** 0.5, size=queries.shape).astype(np.float32)
            queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        self.queries = queries
        self.k = min(10, len(vectors) - (0 if noise else 1))
        if self.k < 1:  # a single item: no other item to find
            rows, self.queries = rows[:0], self.queries[:0]
        # each query's own item: not an answer to itself (a moved item has none)
        self.moved = bool(noise)
        self.own = [None if noise else int(keys[row]) for row in rows]
        # The k-th exact similarity among each query's answers: a found item at least that
        # similar counts, so identical vectors (the same text indexed twice) are not "misses"
        # between themselves.
        tops = exact_top(vectors, self.queries, self.k + (0 if noise else 1))
        self.kth = np.array([sorted((self._sim(i, r) for r in top if noise or r != row), reverse=True)[self.k - 1]
                             for i, (row, top) in enumerate(zip(rows, tops))])
        self.row_of = row_of if row_of is not None else {int(key): row for row, key in enumerate(keys)}

    def _sim(self, i: int, row: int) -> float:  # cosine, without a normalised copy of every vector
        v = self.vectors[row]
        return float(self.queries[i] @ v) / max(float((v @ v) ** 0.5), 1e-12)

    def recall(self, index, expansion: int) -> float:
        import numpy as np

        index.expansion_search = expansion
        if not len(self.queries):
            return 1.0
        found = index.search(self.queries, self.k + (0 if self.moved else 1)).keys  # + its own item
        hits = []
        for i, own in enumerate(self.own):
            answers = [int(key) for key in found[i] if int(key) != own and int(key) in self.row_of][:self.k]
            hits.append(sum(self._sim(i, self.row_of[key]) >= self.kth[i] - 1e-5 for key in answers))
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
