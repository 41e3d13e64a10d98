"""Triplets from a relation graph: the sampler shared by ``co_changed``, ``same_commit`` and
``caller_callee``.

Why a module: those three pair types differ only in what their nodes are (files, commits,
functions) and what relates two nodes; once that is a graph the sampling rule is one and
the same, and it is the part worth getting exactly right once.

The graph:
    ``n`` nodes (each is one text of the texts table) and two undirected edge lists:
    **positive** edges (related strongly enough to be an anchor–positive pair) and
    **related** edges (related at all, a superset). A negative for anchor ``a`` is a node
    with *no* related edge to ``a`` — weakly related nodes (below ``min_count``) are
    neither positives nor negatives.

Sampling (``numpy.random.default_rng(seed)``, vectorised, exact):
    only training nodes take part (``train`` mask; see :mod:`oxidize.pairs.split`). The
    **anchor** is uniform over the training nodes that have at least one training positive
    and at least one possible negative. The **positive** is uniform over the anchor's
    training positives. The **negative** is uniform over the training nodes that are
    neither the anchor nor related to it: no rejection loop — with the anchor's forbidden
    nodes sorted ``f_0 < f_1 < …``, the ``r``-th allowed node is ``r + #{i : f_i − i ≤ r}``,
    found for all triplets at once by one ``searchsorted`` over per-anchor keys. Draws are
    with replacement; the same graph, count and seed give the same triplets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np


@dataclass
class Csr:
    """Adjacency lists: node ``i``'s neighbours are ``nbr[start[i] : start[i] + deg[i]]``, sorted."""

    start: np.ndarray
    deg: np.ndarray
    nbr: np.ndarray


def undirected(edges: np.ndarray) -> np.ndarray:
    """Unique undirected edges as ``int64[e, 2]`` rows ``(i, j)`` with ``i < j``, sorted; loops dropped."""
    import numpy as np

    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    edges = np.sort(edges, axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]
    return np.unique(edges, axis=0) if len(edges) else edges


def adjacency(n: int, edges: np.ndarray) -> Csr:
    """Symmetric adjacency lists of ``n`` nodes from undirected ``edges``."""
    import numpy as np

    edges = undirected(edges)
    both = np.concatenate([edges, edges[:, ::-1]])
    order = np.lexsort((both[:, 1], both[:, 0]))
    both = both[order]
    deg = np.bincount(both[:, 0], minlength=n).astype(np.int64)
    start = np.concatenate(([0], np.cumsum(deg)[:-1])).astype(np.int64)
    return Csr(start, deg, both[:, 1].copy())


def sample_triplets(n: int, positive: np.ndarray, related: np.ndarray, train: np.ndarray,
                    n_triplets: int, seed: int) -> tuple[np.ndarray, int]:
    """Draw ``n_triplets`` (anchor, positive, negative) rows over the training nodes.

    Args:
        n: number of nodes (texts).
        positive: undirected positive edges ``[e, 2]`` (node ids).
        related: undirected "related at all" edges; positives are added to them.
        train: ``bool[n]``, the nodes that may appear in a training triplet.
        n_triplets: how many rows to draw (≥ 1).
        seed: the generator's seed.

    Returns:
        ``(triplets int32[n_triplets, 3], n_anchors)``; ``n_anchors`` is how many training
        nodes can be anchors. When it is 0 the triplets are empty and the caller reports why.
    """
    import numpy as np

    positive = undirected(positive)
    related = undirected(np.concatenate([np.asarray(related, np.int64).reshape(-1, 2), positive]))
    nodes = np.flatnonzero(train)  # rank → node id
    n_train = len(nodes)
    rank = np.full(n, -1, dtype=np.int64)
    rank[nodes] = np.arange(n_train)
    # Keep edges with both ends training, in rank space. Edges to held-out nodes do not matter:
    # held-out nodes are never candidates.
    pos = rank[positive]
    pos = pos[(pos >= 0).all(axis=1)]
    rel = rank[related]
    rel = rel[(rel >= 0).all(axis=1)]
    pos_adj = adjacency(n_train, pos)
    # Forbidden negatives of an anchor: itself and every related node (sorted per row).
    loops = np.repeat(np.arange(n_train, dtype=np.int64), 2).reshape(-1, 2)
    rel_both = np.concatenate([rel, rel[:, ::-1], loops])
    rel_both = rel_both[np.lexsort((rel_both[:, 1], rel_both[:, 0]))]
    forb_deg = np.bincount(rel_both[:, 0], minlength=n_train).astype(np.int64)
    forb_start = np.concatenate(([0], np.cumsum(forb_deg)[:-1])).astype(np.int64)
    allowed = n_train - forb_deg

    eligible = np.flatnonzero((pos_adj.deg > 0) & (allowed > 0))
    if len(eligible) == 0:
        return np.zeros((0, 3), dtype=np.int32), 0

    # key = row * (n_train + 1) + (f_i − i): sorted, and searchsorted within the row's block
    # counts the forbidden nodes that precede the r-th allowed one.
    local = np.arange(len(rel_both), dtype=np.int64) - np.repeat(forb_start, forb_deg)
    keys = rel_both[:, 0] * (n_train + 1) + (rel_both[:, 1] - local)

    rng = np.random.default_rng(int(seed))
    anchor = eligible[rng.integers(0, len(eligible), size=n_triplets)]
    positive_rank = pos_adj.nbr[pos_adj.start[anchor] + rng.integers(0, pos_adj.deg[anchor])]
    r = rng.integers(0, allowed[anchor])
    before = np.searchsorted(keys, anchor * (n_train + 1) + r, side="right") - forb_start[anchor]
    negative_rank = r + before
    triplets = np.stack([nodes[anchor], nodes[positive_rank], nodes[negative_rank]], axis=1)
    return triplets.astype(np.int32), int(len(eligible))


def graph_pairset(log, training, label: str, *, pair_type: str, noun: str, texts: list[str],
                  positive: np.ndarray, related: np.ndarray, first_events: list, summary: dict,
                  detail: str = "", heldout: np.ndarray | None = None,
                  eval_positive: np.ndarray | None = None, history=None):
    """Split a relation graph by time, sample its training triplets and list its held-out pairs.

    The common tail of the graph pair types: ``texts[i]`` is node ``i``, which is also its
    own group for the held-out split (``first_events[i]`` dates it, unless the caller passes
    the ``heldout`` mask it already cut). ``positive`` and ``related`` are what training
    knows; ``eval_positive`` (default: ``positive``) relates the held-out nodes for the
    validation and test pairs — a caller whose training counts stop at the cut
    (``co_changed``) passes the counts of the whole log here. ``history``: the
    :class:`~oxidize.pairs.history.History` questions of the part after the cut. Prints the
    one summary line and returns the :class:`~oxidize.pairs.PairSet`.

    Raises:
        EventLogError: no training node can be an anchor (says whether the split is why).
        OxidizeError: ``training.pairs`` is set but not positive; ``training.holdout`` is bad.
    """
    import numpy as np

    from oxidize.errors import EventLogError, OxidizeError
    from oxidize.pairs import PairSet, default_pair_count
    from oxidize.pairs.split import (heldout_groups, heldout_summary, holdout_fraction, pairs_along_edges,
                                      test_groups)

    holdout = holdout_fraction(training)
    n = len(texts)
    positive = undirected(positive)
    if heldout is None:
        heldout = heldout_groups(first_events, holdout, log.path)
    eval_positive = positive if eval_positive is None else undirected(eval_positive)
    train = ~heldout
    n_train = int(train.sum())
    n_triplets = default_pair_count(n_train) if training.pairs is None else int(training.pairs)
    if n_triplets < 1:
        raise OxidizeError(f"training.pairs is {training.pairs}; expected a positive number or null (automatic)")
    triplets, n_anchors = sample_triplets(n, positive, related, train, n_triplets, int(training.seed))
    if n_anchors == 0:
        why = (f" after holding out the latest {int(heldout.sum()):,} of {n:,} {noun} "
               f"(training.holdout: {holdout:g}); lower training.holdout" if heldout.any() else "")
        raise EventLogError(f"{log.path}: nothing to train {pair_type} on: none of {n_train:,} training {noun} has both "
                            f"a related {noun[:-1] if noun.endswith('s') else noun} and an unrelated one{why}")
    train_pairs = int((train[positive[:, 0]] & train[positive[:, 1]]).sum())
    test = test_groups(first_events, heldout, log.path)
    pairs = pairs_along_edges(eval_positive, test)
    validation = pairs_along_edges(eval_positive, heldout & ~test)
    stats = log.stats()
    out = {"pair_type": pair_type, **summary, "texts": n, "anchors": n_anchors, "pairs": train_pairs,
           "triplets": int(n_triplets),
           **heldout_summary(pairs, n_train, int(heldout.sum()), validation),
           "event_count": stats.count, "max_seq": stats.max_seq}
    prefix = f"{label}: " if label else ""
    print(f"{prefix}{pair_type}: {n:,} {noun}{detail}: {n_anchors:,} with a related one, "
          f"{train_pairs:,} related pairs → {n_triplets:,} training triplets; held out the latest "
          f"{int(heldout.sum()):,} {noun} ({out['validation_queries']:,} queries validate, "
          f"{out['heldout_queries']:,} test)", flush=True)
    never = undirected(np.concatenate([np.asarray(related, np.int64).reshape(-1, 2), positive]))
    return PairSet(texts=texts, triplets=triplets, stats=out, heldout=pairs, validation=validation,
                   related=never.astype(np.int32), history=history)
