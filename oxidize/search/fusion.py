"""Hybrid search: reciprocal-rank fusion of the lexical list and the dense lists.

An item's fused score is ``Σ weight / (RRF_K + rank)`` over the lists that hold it (rank
from 1). Ranks, not scores, are fused: a cosine and a BM25 score have no common scale, and
the rank of each is comparable across queries and builds.

Which lists: ``hybrid`` with a projection fuses the lexical list, the projection's dense
list **and the raw embedding's dense list** — the projection joins the raw embedding rather
than replacing it, so where it ranks people's questions worse than the raw embedding (on
oxidize's own question sets the ``semantic`` projection does, by 0.065 MRR@10) the raw list
still holds the answer up, and where it ranks them better (co-change, on file questions)
it lifts them. ``hybrid`` with ``--base`` fuses the lexical list and the raw list alone.

The constants are fixed here, not fitted per build: a build's own data would choose them on
the texts it is then scored on, and they would move from one build to the next. They were
chosen once with ``python -m benchmarks.bench_fusion`` on oxidize's own question sets for
patina-dev.db (``benchmarks/queries/``; the grid is in docs/benchmarks.md, "Hybrid
search"), by the rule: the best mean MRR@10 over the sets, and among settings within 0.005
of it the one closest to plain RRF (k 60, every weight 1, the whole pool) — so that a
constant leaves the textbook value only for a clear gain.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The rank offset: larger flattens the difference between rank 1 and rank 10.
RRF_K = 60
#: How many items each list contributes before fusion.
POOL = 100
#: BM25 matches words, not meaning, and on questions it was the weakest list alone; at 0.75
#: it breaks ties between the dense lists rather than overruling them (+0.014 mean MRR@10
#: over weight 1 on oxidize's sets).
LEXICAL_WEIGHT = 0.75
DENSE_WEIGHT = 1.0
#: The raw embedding's list beside the projection's (see above).
RAW_WEIGHT = 1.0


def fuse(lists: Sequence[tuple[Sequence[int], float]], k: int, rrf_k: float = RRF_K,
         ) -> list[tuple[int, float, list[int | None]]]:
    """The ``k`` best keys of ranked key ``lists`` (each ``(distinct keys best first,
    weight)``), as ``(key, fused score, [rank in each list or None])``. Equal scores keep
    the order of the first list, then of the second, …"""
    scores: dict[int, float] = {}
    for keys, weight in lists:
        for rank, key in enumerate(keys, 1):
            scores[key] = scores.get(key, 0.0) + weight / (rrf_k + rank)
    best = sorted(scores, key=scores.__getitem__, reverse=True)[:k]  # stable: ties keep order
    ranks = [{key: rank for rank, key in enumerate(keys, 1)} for keys, _ in lists]
    return [(key, scores[key], [r.get(key) for r in ranks]) for key in best]
