"""Hybrid search: the three ranked lists of a query merged into one, and the menu of ways to
merge them that a build chooses from.

A query gives up to three lists, each best first with its own score: ``lexical`` (BM25 over
the items' words), ``dense`` (cosine to the projected query) and ``raw`` (cosine to the
plain embedding, no projection). A :class:`Fusion` names which lists it reads and how it
merges them:

* ``rrf`` — reciprocal-rank fusion: an item scores ``Σ weight / (RRF_K + rank)`` over the
  lists that hold it (rank from 1). Ranks only: a cosine and a BM25 score have no common
  scale, and a rank means the same in every query.
* ``mix`` — a convex combination of normalised scores: each list's scores are scaled to
  [0, 1] by the list's own best and worst (min-max over the :data:`POOL` it returned), and
  an item scores ``Σ weight × scaled score`` (0 from a list that does not hold it). Bruch,
  Gai and Ingber ("An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS 2023)
  found it beats RRF in and out of domain once its one weight is set on a few dozen
  labelled queries — which a build has for free: its history questions
  (:mod:`oxidize.search.choice`).
* a single list alone (``lexical``, ``dense``, ``raw``).

Why a menu and not one fixed fusion: which list is strong differs by project. On
patina-dev's session questions the raw embedding is strong and lexical weak; on a Python
project's file questions lexical is the best single list and a weak dense list outvotes it
in a fixed three-way RRF. The build scores every entry of :data:`MENU` on questions taken
from the project's own later history and keeps the :data:`DEFAULT` unless another entry
wins clearly (:mod:`oxidize.search.choice`).

The names are what ``doit query --mode`` takes: ``lexical+dense`` is RRF of the two,
``0.7lexical+0.3dense`` the mix with those weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The rank offset of RRF: larger flattens the difference between rank 1 and rank 10.
RRF_K = 60
#: How many items each list contributes before fusion.
POOL = 100
#: The lists a query can give.
LISTS = ("lexical", "dense", "raw")

#: One ranked list: ``(key, score)`` best first (score: BM25 or cosine, higher is better).
Ranked = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class Fusion:
    """One way to rank a query's items: which lists, merged how, with which weights."""

    name: str
    lists: tuple[str, ...]
    method: str = "rrf"                 # "rrf" | "mix" | "single"
    weights: tuple[float, ...] = ()     # one per list; RRF and single: 1 each when empty

    @property
    def projected(self) -> bool:
        """Whether it reads the projection's list (a plain-embedding search does not)."""
        return "dense" in self.lists

    def rank(self, lists: Mapping[str, Ranked], k: int, rrf_k: float = RRF_K,
             ) -> list[tuple[int, float, dict[str, int]]]:
        """The ``k`` best keys as ``(key, score, {list name: rank in it})``; equal scores keep
        the order of the first list, then of the second, …"""
        weights = self.weights or (1.0,) * len(self.lists)
        scores: dict[int, float] = {}
        for name, weight in zip(self.lists, weights):
            ranked = lists.get(name) or ()
            if self.method == "single":
                for key, score in ranked:
                    scores.setdefault(key, score)
            elif self.method == "mix":
                for key, scaled in _scaled(ranked):
                    scores[key] = scores.get(key, 0.0) + weight * scaled
            else:
                for rank, (key, _) in enumerate(ranked, 1):
                    scores[key] = scores.get(key, 0.0) + weight / (rrf_k + rank)
        best = sorted(scores, key=scores.__getitem__, reverse=True)[:k]  # stable: ties keep order
        ranks = {name: {key: rank for rank, (key, _) in enumerate(lists.get(name) or (), 1)}
                 for name in self.lists}
        return [(key, scores[key], {name: ranks[name][key] for name in self.lists if key in ranks[name]})
                for key in best]


def _scaled(ranked: Ranked) -> list[tuple[int, float]]:
    """Min-max scaled scores of one list: its best 1, its worst 0 (all 1 when they are equal)."""
    if not ranked:
        return []
    high = max(score for _, score in ranked)
    low = min(score for _, score in ranked)
    span = high - low
    return [(key, (score - low) / span if span > 0 else 1.0) for key, score in ranked]


def _mix(lexical: float, other: str) -> Fusion:
    weight = round(1.0 - lexical, 2)
    return Fusion(f"{lexical:g}lexical+{weight:g}{other}", ("lexical", other), "mix", (lexical, weight))


#: Every search a build may choose, in the order ties are broken (earlier wins a tie).
MENU: tuple[Fusion, ...] = (
    _mix(0.5, "raw"),
    _mix(0.5, "dense"),
    Fusion("lexical", ("lexical",), "single"),
    Fusion("dense", ("dense",), "single"),
    Fusion("raw", ("raw",), "single"),
    Fusion("lexical+dense", ("lexical", "dense")),
    Fusion("lexical+raw", ("lexical", "raw")),
    Fusion("lexical+dense+raw", ("lexical", "dense", "raw")),
    *(_mix(w, side) for side in ("raw", "dense") for w in (0.3, 0.7)),
    Fusion("0.5lexical+0.25dense+0.25raw", ("lexical", "dense", "raw"), "mix", (0.5, 0.25, 0.25)),
)
BY_NAME: dict[str, Fusion] = {f.name: f for f in MENU}
#: ``--mode hybrid``: the lexical list mixed half and half with the projection's …
HYBRID = BY_NAME["0.5lexical+0.5dense"]
#: … and with ``--base``, with the plain embedding's.
HYBRID_RAW = BY_NAME["0.5lexical+0.5raw"]
#: What a projection answers with until its own history says otherwise: lexical and the raw
#: embedding, half and half. On 13 question sets of four repositories (questions written by
#: hand, later commits, history questions; docs/benchmarks.md, "Search") it was above the
#: best single list on 9 and never more than 0.015 below it; the fixed three-list RRF it
#: replaces fell up to 0.1 below. The projection's list joins where a project's own
#: history shows it clearly helps.
DEFAULT = HYBRID_RAW
#: The modes that are not a menu entry's name.
MODES = ("auto", "hybrid")


def resolve(mode: str | None, base: bool = False, chosen: str | None = None) -> Fusion:
    """The fusion of a search mode: ``auto`` (or ``None``) is ``chosen`` (what the build
    chose, :data:`DEFAULT` where it chose nothing), ``hybrid`` the lexical list fused with the
    projection's, or any name of :data:`MENU` (``dense``, ``lexical``, …). ``base`` puts the
    plain embedding in the projection's place.

    Raises:
        ValueError: an unknown mode (the message lists the known ones).
    """
    mode = mode or "auto"
    if mode == "auto":
        fusion = BY_NAME.get(chosen or "") or DEFAULT
    elif mode == "hybrid":
        fusion = HYBRID
    elif mode in BY_NAME:
        fusion = BY_NAME[mode]
    else:
        raise ValueError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES + tuple(BY_NAME))}")
    return without_projection(fusion) if base else fusion


def without_projection(fusion: Fusion) -> Fusion:
    """The fusion with the plain embedding in the projection's place (``--base``)."""
    if not fusion.projected:
        return fusion
    lists = tuple(dict.fromkeys("raw" if name == "dense" else name for name in fusion.lists))
    name = fusion.name.replace("dense", "raw")
    return BY_NAME.get(name) or Fusion(name, lists, fusion.method, fusion.weights[:len(lists)])


def fuse(lists: Sequence[tuple[Sequence[int], float]], k: int, rrf_k: float = RRF_K,
         ) -> list[tuple[int, float, list[int | None]]]:
    """RRF of plain key ``lists`` (each ``(distinct keys best first, weight)``), as ``(key,
    fused score, [rank in each list or None])``: :meth:`Fusion.rank` for unnamed lists."""
    names = tuple(str(i) for i in range(len(lists)))
    fusion = Fusion("rrf", names, "rrf", tuple(weight for _, weight in lists))
    ranked = fusion.rank({name: [(key, 0.0) for key in keys] for name, (keys, _) in zip(names, lists)},
                         k, rrf_k)
    return [(key, score, [ranks.get(name) for name in names]) for key, score, ranks in ranked]
