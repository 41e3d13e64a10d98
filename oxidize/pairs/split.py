"""The held-out split by time: the latest groups of the log are kept out of training.

Why: a projection is used on what the log will hold *next*, so the honest test of one is
on the part of the log it never saw — the most recent part — not on a random sample of
texts whose sessions (or commits, or files) also fed the training. Every pair type cuts
its log the same way, here:

Groups:
    a pair type's unit of relatedness — a session (``same_session``), a commit
    (``same_commit``), a file (``co_changed``), a function (``caller_callee``). Every text
    belongs to exactly one group (a text written by two groups belongs to the one that
    wrote it first, lowest ``seq``; see each pair type's docstring).

A group's time:
    the ``timestamp`` of its **first event** (lowest ``seq``): when the session started,
    when the commit was made, when the file first appeared in a commit, when the function
    first appeared in a code event. "Born latest" is what the future brings: new sessions,
    new files. (A file's *last* commit would hold out the busiest, oldest files — the core
    of the project — and train only on abandoned ones.) Timestamps are ISO 8601; one with
    an offset is converted to UTC, one without is read as UTC. Groups are ordered by
    ``(time, seq)``, so equal times and a log whose ``seq`` order differs from time order
    both give one deterministic order. A group with no event to date it (a file known
    only from the ``co_changes`` table) counts as oldest: it trains.

The cut:
    with ``training.holdout = h``, the latest groups in that order are **held out** until
    they hold the share ``h`` of the texts: of the cuts "latest ``k`` groups", the one whose
    number of texts is closest to ``h ×`` all texts (a tie takes fewer groups); the rest
    train. Counting texts, not groups, matters for sessions: on patina's own log the latest
    20 % of sessions hold a third of the notes (later sessions are longer). For the graph
    types every group is one text, so it is ``round(h × n)`` groups. ``h = 0`` holds out
    nothing, and timestamps are read only when ``h > 0``.

No leakage:
    a held-out text is never an anchor, positive or negative of a training triplet; the
    generators sample only among training texts. The held-out texts still go into
    ``texts.jsonl`` (one embed step covers both), and ``heldout.npy`` lists
    ``(query, relevant)`` index pairs **between held-out texts only** — relations that
    cross the cut are used by neither side. The evaluation corpus is every text that
    appears in ``heldout.npy``.

numpy is imported inside the functions (this package is imported when doit lists tasks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxidize.errors import EventLogError, OxidizeError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: The largest holdout fraction: at least a tenth of the groups always train.
MAX_HOLDOUT = 0.9

#: A group's first event: ``(timestamp, seq)``, or ``None`` when nothing dates the group.
FirstEvent = tuple[str, int] | None


def holdout_fraction(training: Any) -> float:
    """``training.holdout`` checked to lie in ``[0, MAX_HOLDOUT]`` (0 when the config has none)."""
    holdout = getattr(training, "holdout", 0.0)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout <= MAX_HOLDOUT:
        raise OxidizeError(f"training.holdout is {holdout!r}; expected a fraction from 0 to {MAX_HOLDOUT}")
    return float(holdout)


def heldout_count(weights_latest_first: Sequence[int], holdout: float) -> int:
    """How many of the latest groups to hold out so that their weight (texts) is closest
    to ``holdout ×`` the total; a tie takes fewer groups."""
    target = holdout * sum(weights_latest_first)
    best_k, best_gap, held = 0, target, 0
    for k, weight in enumerate(weights_latest_first, start=1):
        held += weight
        if abs(held - target) < best_gap:
            best_k, best_gap = k, abs(held - target)
    return best_k


def parse_timestamp(timestamp: str, seq: int, path: Path | str) -> float:
    """Seconds since the epoch (UTC) of an ISO 8601 ``timestamp``; naive means UTC.

    Raises:
        EventLogError: not an ISO 8601 timestamp (names the log and the row's ``seq``).
    """
    try:
        moment = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        raise EventLogError(f"{path}: row seq={seq}: timestamp {timestamp!r} is not ISO 8601 "
                            f"(e.g. 2025-07-16T20:26:14-04:00); the held-out split orders by time — "
                            f"fix the row or set training.holdout: 0") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def heldout_groups(first_events: Sequence[FirstEvent], holdout: float, path: Path | str,
                   weights: Sequence[int] | None = None) -> np.ndarray:
    """Which groups are held out: a ``bool[n_groups]`` mask (see the module docstring).

    Args:
        first_events: per group, the ``(timestamp, seq)`` of its first event, or ``None``.
        holdout: the share of texts to hold out, in ``[0, MAX_HOLDOUT]``.
        path: the event log, for error messages.
        weights: per group, its number of texts (default: 1 each).
    """
    import numpy as np

    n = len(first_events)
    mask = np.zeros(n, dtype=bool)
    if holdout == 0 or n == 0:
        return mask
    keys = [(-math.inf, -1) if first is None else (parse_timestamp(first[0], first[1], path), first[1])
            for first in first_events]
    latest_first = sorted(range(n), key=lambda g: (keys[g], g), reverse=True)
    k = heldout_count([1 if weights is None else int(weights[g]) for g in latest_first], holdout)
    mask[latest_first[:k]] = True
    return mask


def test_groups(first_events: Sequence[FirstEvent], heldout: np.ndarray, path: Path | str,
                weights: Sequence[int] | None = None) -> np.ndarray:
    """The **test** part of the held-out groups: the latest of them, holding about half of
    their texts (the rule of :func:`heldout_count`, within the held-out groups); the older
    held-out groups **validate** (epochs and the start map are chosen on them), so the test
    part is never looked at before the eval step reports it. ``bool[n_groups]``.

    Groups born at the same moment (the same first event: two files first seen in one
    commit) stay on one side, so a relation between them is not cut. When all held-out
    groups share one moment, they all test and nothing validates.
    """
    import numpy as np

    held = np.flatnonzero(heldout)
    test = np.zeros(len(heldout), dtype=bool)
    if len(held) == 0:
        return test
    keys = {g: (-math.inf, -1) if first_events[g] is None else
            (parse_timestamp(first_events[g][0], first_events[g][1], path), first_events[g][1])
            for g in held.tolist()}
    moments = sorted(set(keys.values()), reverse=True)  # latest first
    members: dict = {m: [] for m in moments}
    for g in held.tolist():
        members[keys[g]].append(g)
    sizes = [sum(1 if weights is None else int(weights[g]) for g in members[m]) for m in moments]
    k = max(1, heldout_count(sizes, 0.5))
    for m in moments[:k]:
        test[members[m]] = True
    return test


def pairs_within_groups(group: np.ndarray, heldout_text: np.ndarray) -> np.ndarray:
    """``(query, relevant)`` pairs of distinct held-out texts of one group, sorted.

    For group-shaped relations (``same_session``): every held-out text is a query whose
    relevant texts are the other texts of its group.

    Args:
        group: ``int[n_texts]``, the group of each text.
        heldout_text: ``bool[n_texts]``, which texts are held out.

    Returns:
        ``int32[m, 2]`` rows sorted by (query, relevant).
    """
    import numpy as np

    ids = np.flatnonzero(heldout_text)
    if len(ids) == 0:
        return np.zeros((0, 2), dtype=np.int32)
    order = ids[np.argsort(group[ids], kind="stable")]
    _, start, size = np.unique(group[order], return_index=True, return_counts=True)
    # For each text: the range of its group's block in `order`; pair it with every other member.
    block_start = np.repeat(start, size)
    block_size = np.repeat(size, size)
    query = np.repeat(order, block_size)
    offset = np.arange(len(query)) - np.repeat(np.cumsum(block_size) - block_size, block_size)
    relevant = order[np.repeat(block_start, block_size) + offset]
    keep = query != relevant
    pairs = np.stack([query[keep], relevant[keep]], axis=1)
    return _sorted_pairs(pairs)


def pairs_along_edges(edges: np.ndarray, heldout_text: np.ndarray) -> np.ndarray:
    """``(query, relevant)`` pairs for undirected ``edges`` whose two ends are held out.

    Each edge gives two rows (either end is a query), sorted by (query, relevant).
    """
    import numpy as np

    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    inside = heldout_text[edges[:, 0]] & heldout_text[edges[:, 1]]
    kept = edges[inside]
    return _sorted_pairs(np.concatenate([kept, kept[:, ::-1]]))


def _sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    import numpy as np

    pairs = np.unique(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=0)  # sorted rows
    return pairs.astype(np.int32)


def heldout_summary(heldout: np.ndarray, train_groups: int, heldout_groups_: int,
                    validation: np.ndarray | None = None) -> dict[str, int]:
    """The ``pairs.json`` fields every pair type adds about the split (``heldout_*``: the
    test part; ``validation_*``: the part epochs and the start map are chosen on)."""
    import numpy as np

    def queries(pairs) -> int:
        return int(len(np.unique(pairs[:, 0]))) if pairs is not None and len(pairs) else 0

    return {
        "train_groups": int(train_groups),
        "heldout_groups": int(heldout_groups_),
        "heldout_queries": queries(heldout),
        "heldout_pairs": int(len(heldout)),
        "validation_queries": queries(validation),
        "validation_pairs": 0 if validation is None else int(len(validation)),
    }
