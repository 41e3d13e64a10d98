"""Query sets: questions a person would ask, each with its answers, scored on a projection's
search (``doit bench``, and the eval step's ``eval.queries``).

The format is patina's bench format (``resources/bench/*.json`` in a patina checkout)::

    {"name": "my-questions",
     "queries": [{"id": "q1", "query": "why did we drop the projection for scry?",
                  "relevant_docs": ["20251103-101500"],     # session ids, file paths,
                  "relevant_commits": ["3f2a9c1"],          # commit shas, file::name functions
                  "relevant": ["keyword"]}]}                # legacy: a substring of the hit's id

A hit answers a query when its id (the session id, file path, commit sha or function of the
item) and one relevant id contain each other (patina's rule: ``src/a.rs`` matches a hit
``src/a.rs``; a short sha matches the full one); with neither ``relevant_docs`` nor
``relevant_commits``, when a ``relevant`` keyword is a substring of the hit's id, ignoring
case. Scores: MRR@10 (1/rank of the first hit that answers, 0 past rank 10), Recall@5 and
Recall@10 (the share of the relevant ids found in the top 5 / 10).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oxidize.errors import OxidizeError

K = 10
#: The searches ``doit bench`` and the eval step compare: (name, mode, base) — each list
#: alone, and the default fusion with the plain embedding and with the projection.
CONFIGS: tuple[tuple[str, str, bool], ...] = (
    ("raw dense", "dense", True),
    ("projection dense", "dense", False),
    ("lexical", "lexical", False),
    ("hybrid raw", "hybrid", True),
    ("hybrid projection", "hybrid", False),
)


class QuerySetError(OxidizeError):
    """A query set that cannot be read: one line naming the file and the query."""


@dataclass(frozen=True)
class BenchQuery:
    id: str
    query: str
    relevant: tuple[str, ...]   # relevant_docs + relevant_commits
    keywords: tuple[str, ...]   # the legacy "relevant" substrings
    exclude: tuple[int, ...] = ()  # item keys that never count: the question's own text

    def answers(self, doc_id: str) -> bool:
        """Whether a hit with id ``doc_id`` answers this query (see the module docstring)."""
        if not doc_id:
            return False
        if self.relevant:
            return any(r in doc_id or doc_id in r for r in self.relevant)
        low = doc_id.lower()
        return any(k.lower() in low for k in self.keywords)

    def _expected(self) -> tuple[str, ...]:
        return self.relevant or self.keywords

    def reciprocal_rank(self, ids: list[str], k: int = K) -> float:
        for rank, doc_id in enumerate(ids[:k], 1):
            if self.answers(doc_id):
                return 1.0 / rank
        return 0.0

    def recall(self, ids: list[str], k: int) -> float:
        expected = self._expected()
        top = [doc_id for doc_id in ids[:k] if doc_id]
        if self.relevant:
            found = sum(any(r in d or d in r for d in top) for r in expected)
        else:
            found = sum(any(kw.lower() in d.lower() for d in top) for kw in expected)
        return found / len(expected)


@dataclass(frozen=True)
class QuerySet:
    name: str
    path: Path
    queries: tuple[BenchQuery, ...]


def load_query_set(path: Path | str) -> QuerySet:
    """Read and check a query set; a :class:`QuerySetError` names the file and the query."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QuerySetError(f"{path}: query set not found") from None
    except UnicodeDecodeError as exc:
        raise QuerySetError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise QuerySetError(f"{path}: cannot read the query set: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise QuerySetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise QuerySetError(f"{path}: expected a JSON object with 'name' and 'queries', found "
                            f"{type(data).__name__}")
    raw = data.get("queries")
    if not isinstance(raw, list) or not raw:
        raise QuerySetError(f"{path}: no queries; expected \"queries\": [{{\"id\": …, \"query\": …, "
                            f"\"relevant_docs\": […]}}, …]")
    name = data.get("name") if isinstance(data.get("name"), str) and data.get("name") else path.stem
    return QuerySet(name, path, tuple(queries_of(data, path)))


def queries_of(data: dict, path: Path) -> list[BenchQuery]:
    """The checked questions of a query set's JSON object (``[]`` when it has none)."""
    raw = data.get("queries") or []
    if not isinstance(raw, list):
        raise QuerySetError(f"{path}: 'queries' must be a list of questions")
    queries: list[BenchQuery] = []
    seen: set[str] = set()
    for number, entry in enumerate(raw, 1):
        where = f"{path}: query #{number}"
        if not isinstance(entry, dict):
            raise QuerySetError(f"{where}: expected an object, found {type(entry).__name__}")
        qid = entry.get("id")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
            raise QuerySetError(f"{where}: no 'id'")
        qid = str(qid)
        where = f"{path}: query {qid!r}"
        if qid in seen:
            raise QuerySetError(f"{where}: the id is used twice")
        seen.add(qid)
        text = entry.get("query")
        if not isinstance(text, str) or not text.strip():
            raise QuerySetError(f"{where}: no query text ('query')")
        lists = {}
        for key in ("relevant_docs", "relevant_commits", "relevant"):
            value = entry.get(key, [])
            if value is None:
                value = []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise QuerySetError(f"{where}: '{key}' must be a list of strings")
            lists[key] = tuple(v for v in value if v)
        relevant = lists["relevant_docs"] + lists["relevant_commits"]
        if not relevant and not lists["relevant"]:
            raise QuerySetError(f"{where}: no ground truth; give relevant_docs, relevant_commits "
                                f"or relevant")
        exclude = entry.get("exclude_keys") or []
        if not isinstance(exclude, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                    for v in exclude):
            raise QuerySetError(f"{where}: 'exclude_keys' must be a list of item keys (integers)")
        queries.append(BenchQuery(qid, text, relevant, lists["relevant"], tuple(exclude)))
    return queries


def score(search: Any, query_set: QuerySet, configs=CONFIGS, timed: bool = True) -> dict[str, dict]:
    """Score every search of ``configs`` on ``query_set`` with the open
    :class:`oxidize.search.ProjectionSearch` ``search``: ``{config name: {"mrr@10",
    "recall@5", "recall@10", "queries"[, "p50_ms", "p95_ms"]}}``.

    Each question is searched once for its three lists and every config ranked from them
    (:func:`oxidize.search.choice.score_menu`). Latency (``timed``) is warm: each search
    runs once on the first query before any is timed (model, index and weights loaded), and
    it times the whole search as ``doit query`` runs it (embedding, projection, the lists,
    fusion, the hits' rows), best-matching snippets left out.
    """
    import numpy as np

    from oxidize.search.choice import score_menu

    from oxidize.search.choice import PROGRESS_FROM
    from oxidize.util.progress import Progress

    fusions = {name: search.fusion(mode, base) for name, mode, base in configs}
    scores = score_menu(search, list(query_set.queries), list(dict.fromkeys(fusions.values())),
                        label=query_set.name)
    results: dict[str, dict] = {}
    n = len(query_set.queries)
    timing = Progress(n * len(configs), f"{query_set.name} timed", unit="searches") \
        if timed and n >= PROGRESS_FROM else None
    for c, (name, mode, base) in enumerate(configs):
        entry = scores.summary(fusions[name].name)
        if timed:
            search.query(query_set.queries[0].query, K, base=base, mode=mode, snippets=False)  # warm
            ms = []
            for i, q in enumerate(query_set.queries):
                start = time.perf_counter()
                search.query(q.query, K, base=base, mode=mode, snippets=False)
                ms.append((time.perf_counter() - start) * 1000)
                if timing is not None and (i % 200 == 0 or i + 1 == n):
                    timing.update(c * n + i + 1)
            entry["p50_ms"] = round(float(np.percentile(ms, 50)), 2)
            entry["p95_ms"] = round(float(np.percentile(ms, 95)), 2)
        results[name] = entry
    return results
