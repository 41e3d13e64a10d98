"""Which search a projection answers with, chosen on questions from the project's own history.

Every build has labelled questions for free: the pairs step turns the latest part of the
log, which training never sees, into a query set (``history_queries.json``,
:mod:`oxidize.pairs.history`): the subject of each later commit → the files it changed,
each later session's title → its notes. :func:`score_menu` asks every question once
(its three lists: lexical, the projection's dense list, the raw embedding's) and ranks
each entry of the fusion menu (:data:`oxidize.search.fusion.MENU`) from those lists, so
the whole menu costs one search per question.

:func:`choose` keeps :data:`~oxidize.search.fusion.DEFAULT` unless another entry wins
clearly, by the rule the build already uses for start maps and epochs
(:func:`oxidize.evaluate.clearly_better`): the questions are dealt into two halves (every
other one, so both span the same stretch of history); the best entry on the first half
must beat the default on the second by more than :data:`CHOICE_Z` standard errors of the
per-question difference. One half chooses, the other confirms: a choice is never scored on
the questions that made it. With fewer than :data:`MIN_QUESTIONS` questions the default
stays, and the build says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: Fewer history questions than this choose nothing: the default stays.
MIN_QUESTIONS = 20
#: How clearly the first half's best must beat the default on the second half (the margin an
#: epoch must clear to replace the start map, ``trainer.EPOCH_CLEAR_Z``).
CHOICE_Z = 2.0
K = 10


@dataclass
class MenuScores:
    """Per question, per menu entry: the reciprocal rank (MRR@10's terms) and the recall at
    5 and 10 of each fused ranking."""

    names: list[str]
    rr: dict[str, np.ndarray]
    recall5: dict[str, np.ndarray] = field(default_factory=dict)
    recall10: dict[str, np.ndarray] = field(default_factory=dict)

    def summary(self, name: str) -> dict[str, float]:
        import numpy as np

        return {"mrr@10": round(float(np.mean(self.rr[name])), 4),
                "recall@5": round(float(np.mean(self.recall5[name])), 4),
                "recall@10": round(float(np.mean(self.recall10[name])), 4),
                "queries": int(len(self.rr[name]))}


#: From this many questions on, scoring says how far it is (on stderr).
PROGRESS_FROM = 500


def question_lists(search: Any, queries: list, names=("lexical", "dense", "raw"),
                   vectors=None, label: str = "") -> list[dict]:
    """The ranked lists of every question (each as deep as fusion reads them), the questions
    embedded in one call (``vectors``: their embeddings, when the caller has them); a long
    set reports its progress under ``label``."""
    if not queries:
        return []
    if vectors is None and any(n in names for n in ("dense", "raw")):
        vectors = search.embed_queries([q.query for q in queries])
    progress = None
    if len(queries) >= PROGRESS_FROM:
        from oxidize.util.progress import Progress

        progress = Progress(len(queries), f"{label or 'questions'} searched", unit="questions")
    out = []
    for i, q in enumerate(queries):
        out.append(search.lists(q.query, tuple(names), K, vector=None if vectors is None else vectors[i])[0])
        if progress is not None and ((i + 1) % 100 == 0 or i + 1 == len(queries)):
            progress.update(i + 1)
    return out


def score_menu(search: Any, queries: list, menu=None, lists=None, label: str = "") -> MenuScores:
    """Each fusion of ``menu`` (default: the whole menu, and ``--base``'s plain variants of
    the bench's five searches) ranked from each question's lists and scored against the
    question's answers."""
    import numpy as np

    from oxidize.search.fusion import MENU

    menu = list(MENU if menu is None else menu)
    if lists is None:
        wanted = tuple(dict.fromkeys(name for fusion in menu for name in fusion.lists))
        lists = question_lists(search, queries, wanted, label=label)
    from oxidize.search.fusion import POOL
    from oxidize.search.population import credited

    files = search.files()  # a definition's hit credits its file: each file once, at its best item
    lists = [_without(per_query, q.exclude) for per_query, q in zip(lists, queries)]
    ranked = {f.name: [[key for key, *_ in f.rank(per_query, POOL if files else K)] for per_query in lists]
              for f in menu}
    ids = search.source_ids({key for rows in ranked.values() for keys in rows for key in keys})
    scores = MenuScores([f.name for f in menu], {})
    for name, rows in ranked.items():
        hit_ids = [[ids.get(key, "") for key in keys] for keys in rows]
        if files:
            hit_ids = [list(dict.fromkeys(credited(i) for i in row))[:K] for row in hit_ids]
        scores.rr[name] = np.array([q.reciprocal_rank(h, K) for q, h in zip(queries, hit_ids)])
        scores.recall5[name] = np.array([q.recall(h, 5) for q, h in zip(queries, hit_ids)])
        scores.recall10[name] = np.array([q.recall(h, 10) for q, h in zip(queries, hit_ids)])
    return scores


def _without(lists: dict, exclude: tuple[int, ...]) -> dict:
    """A question's lists without the items it must not count (its own text in the index)."""
    if not exclude:
        return lists
    drop = set(exclude)
    return {name: [row for row in ranked if row[0] not in drop] for name, ranked in lists.items()}


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` decided and why, as ``meta.search_choice`` records it."""

    search: str
    default: str
    questions: int
    why: str
    mrr: dict[str, float]

    def record(self) -> dict[str, Any]:
        return {"search": self.search, "default": self.default, "questions": self.questions,
                "why": self.why, "mrr@10": self.mrr}


def choose(scores: MenuScores, default: str | None = None) -> Choice:
    """The search to answer with (see the module docstring)."""
    import numpy as np

    from oxidize.evaluate import clearly_better
    from oxidize.search.fusion import DEFAULT

    default = default or DEFAULT.name
    names = scores.names
    n = len(scores.rr[default]) if scores.rr else 0
    mrr = {name: round(float(np.mean(scores.rr[name])), 4) for name in names} if n else {}
    if n < MIN_QUESTIONS:
        return Choice(default, default, n, f"{n} history question{'s' if n != 1 else ''}, fewer than "
                                           f"{MIN_QUESTIONS}: the default search", mrr)
    first, second = np.arange(0, n, 2), np.arange(1, n, 2)
    lead = max(names, key=lambda name: (float(np.mean(scores.rr[name][first])), -names.index(name)))
    if lead == default:
        return Choice(default, default, n, f"the default led on the first half of {n} history "
                                           f"questions", mrr)
    a, b = scores.rr[lead][second], scores.rr[default][second]
    verdict = (f"{lead} led on the first half of {n} history questions and "
               f"{'beat' if clearly_better(a, b, CHOICE_Z) else 'did not clearly beat'} the default "
               f"on the second ({float(np.mean(a)):.3f} vs {float(np.mean(b)):.3f}, z {CHOICE_Z:g})")
    return Choice(lead if clearly_better(a, b, CHOICE_Z) else default, default, n, verdict, mrr)
