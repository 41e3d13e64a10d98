"""Retrieval quality of a projection on held-out data, as a flat dict of metrics.

Why a module of its own: "is the projection any good?" has one answer for the build, for
training's early stopping and for the tests, and that answer must not depend on who asks.
Like sentence-transformers' ``InformationRetrievalEvaluator``, :func:`evaluate` takes
ID-keyed data — queries, a corpus, and for each query the set of relevant corpus IDs — and
accepts precomputed embeddings. It is **pure**: it reads arrays and returns a flat
``{"mrr@10": …, "p@10": …, "r@10": …}``; writing ``metrics.json`` is the task layer's job.

Metrics, for each query ``q`` with relevant set ``R_q`` (a query never counts as relevant
to itself), over the ranking of the corpus by cosine similarity with ``q`` from which
``q``'s own ID is removed, averaged over the queries that have at least one relevant item:

* ``mrr@k`` — ``1 / rank`` of the first relevant item if it is within the top ``k``, else 0;
* ``p@k`` — ``|top k ∩ R_q| / k`` (divided by ``k`` even when the corpus is smaller, as
  sentence-transformers does);
* ``r@k`` — ``|top k ∩ R_q| / |R_q|``.

The primary metric is :data:`PRIMARY_METRIC` (``mrr@10``; greater is better). Ties in the
similarity are broken by corpus order (the order of ``corpus``), so results are exact and
repeatable.

Three scorers turn one held-out split into the three numbers every build reports
(:func:`compare`): :func:`score_random` (the exact expected value of a uniformly random
ranking — no sampling noise), :func:`score_base` (the plain embedding) and
:func:`score_projection` (the embedding through the trained weights,
:func:`oxidize.train.project`).

The held-out split is ``heldout.npy`` (see :mod:`oxidize.pairs`): int rows ``(query text,
relevant text)``; :func:`heldout_task` turns it into queries, corpus and relevance. The
corpus is every text that appears in it.

numpy is imported inside the functions: doit imports modules of this package when it only
lists tasks.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: The metric a build is judged by (greater is better).
PRIMARY_METRIC = "mrr@10"
GREATER_IS_BETTER = True
#: Rank cut-off of every metric.
K = 10
#: Queries scored per block (bounds memory to ``QUERY_CHUNK × corpus`` floats).
QUERY_CHUNK = 512
#: At most this many similarities are held at once (float64: 32 MiB).
SIM_BLOCK = 1 << 22


def metric_names(k: int = K) -> tuple[str, str, str]:
    """``("mrr@k", "p@k", "r@k")`` — the keys of :func:`evaluate`'s result."""
    return (f"mrr@{k}", f"p@{k}", f"r@{k}")


def _matrix(values: Mapping[Hashable, Any], ids: list, embeddings, what: str):
    """Stack the vectors of ``ids`` (or gather rows of ``embeddings`` by index) as float64."""
    import numpy as np

    if embeddings is not None:
        emb = np.asarray(embeddings)
        index = np.asarray([values[i] for i in ids], dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= emb.shape[0]):
            raise ValueError(f"{what}: an index is outside 0..{emb.shape[0] - 1}")
        mat = emb[index].astype(np.float64)
    else:
        mat = np.asarray([np.asarray(values[i], dtype=np.float64) for i in ids], dtype=np.float64)
    if mat.ndim != 2:
        mat = mat.reshape(len(ids), -1)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.maximum(norms, 1e-12)


def evaluate(queries: Mapping[Hashable, Any], corpus: Mapping[Hashable, Any],
             relevant: Mapping[Hashable, set], *, embeddings: np.ndarray | None = None,
             k: int = K) -> dict[str, float]:
    """Rank ``corpus`` for every query by cosine similarity and score the rankings.

    Args:
        queries: query ID → vector, or → row index into ``embeddings`` when it is given.
        corpus: corpus ID → vector (or row index). Its iteration order breaks ties.
        relevant: query ID → set of relevant corpus IDs. Queries without any relevant
            corpus item (after removing the query's own ID) are not scored.
        embeddings: optional ``[n, dim]`` matrix the indices refer to (precomputed
            embeddings: the base vectors, or projected ones).
        k: the rank cut-off.

    Returns:
        ``{"mrr@k": …, "p@k": …, "r@k": …}`` as floats; all zero when no query is scored
        (:func:`scored_queries` says how many are).
    """
    import numpy as np

    mrr_key, p_key, r_key = metric_names(k)
    corpus_ids = list(corpus)
    position = {cid: j for j, cid in enumerate(corpus_ids)}
    scored = [(qid, {position[c] for c in rel}) for qid, rel in _scored(queries, position, relevant)]
    if not scored:
        return {mrr_key: 0.0, p_key: 0.0, r_key: 0.0}
    cmat = _matrix(corpus, corpus_ids, embeddings, "corpus")  # (n_corpus, dim)
    qmat = _matrix(queries, [q for q, _ in scored], embeddings, "queries")  # (n_queries, dim)
    n_corpus = len(corpus_ids)
    top = min(k, n_corpus)
    mrr = p = r = 0.0
    # Bound the similarity block to ~2**22 floats whatever the corpus size: at a million
    # held-out texts a fixed 512-query block would hold gigabytes.
    chunk = max(1, min(QUERY_CHUNK, SIM_BLOCK // max(n_corpus, 1)))
    for lo in range(0, len(scored), chunk):
        block = scored[lo:lo + chunk]
        sim = qmat[lo:lo + len(block)] @ cmat.T  # (chunk, n_corpus)
        for row, (qid, _) in enumerate(block):
            own = position.get(qid)
            if own is not None:
                sim[row, own] = -np.inf  # a query is never retrieved for itself
        # stable sort of the top candidates: ties go to the earlier corpus item
        if top < n_corpus:
            # the top+1 largest, without the copy that partitioning -sim would make
            cand = np.argpartition(sim, n_corpus - top - 1, axis=1)[:, n_corpus - top - 1:]
        else:
            cand = np.broadcast_to(np.arange(n_corpus), (len(block), n_corpus))
        for row, (qid, rel) in enumerate(block):
            c = np.sort(cand[row])
            order = c[np.argsort(-sim[row, c], kind="stable")]
            own = position.get(qid)
            ranked = [j for j in order.tolist() if j != own][:top]
            hits = [rank for rank, j in enumerate(ranked, start=1) if j in rel]
            mrr += 1.0 / hits[0] if hits else 0.0
            p += len(hits) / k
            r += len(hits) / len(rel)
    n = len(scored)
    return {mrr_key: mrr / n, p_key: p / n, r_key: r / n}


def _scored(queries, corpus, relevant):
    """``[(qid, relevant corpus IDs)]`` for the queries that have something to find."""
    out = []
    for qid in queries:
        rel = {c for c in relevant.get(qid, ()) if c in corpus and c != qid}
        if rel:
            out.append((qid, rel))
    return out


def scored_queries(queries, corpus, relevant) -> int:
    """How many queries :func:`evaluate` scores: those with a relevant corpus item."""
    return len(_scored(queries, set(corpus), relevant))


def random_expectation(n_corpus: int, n_relevant: int, k: int = K) -> tuple[float, float, float]:
    """Exact expected ``(mrr@k, p@k, r@k)`` of one query under a uniformly random ranking.

    ``n_corpus`` items (the query itself already removed), ``n_relevant`` of them relevant.
    The first relevant item sits at rank ``r`` with probability
    ``prod_{i<r-1} (N-R-i)/(N-i) · R/(N-r+1)``.
    """
    n, rel = n_corpus, n_relevant
    if n <= 0 or rel <= 0:
        return 0.0, 0.0, 0.0
    top = min(k, n)
    mrr = 0.0
    none_before = 1.0  # P(no relevant item in ranks 1..r-1)
    for rank in range(1, top + 1):
        remaining = n - rank + 1
        mrr += none_before * rel / remaining / rank
        none_before *= (remaining - rel) / remaining
        if none_before <= 0:
            break
    hits = top * rel / n  # expected relevant items in the top `top`
    return mrr, hits / k, hits / rel


def score_random(queries, corpus, relevant, k: int = K) -> dict[str, float]:
    """:func:`evaluate`'s metrics for a uniformly random ranking, as exact expectations."""
    mrr_key, p_key, r_key = metric_names(k)
    corpus_ids = set(corpus)
    totals = [0.0, 0.0, 0.0]
    n = 0
    for qid, rel in _scored(queries, corpus_ids, relevant):
        n_corpus = len(corpus_ids) - (1 if qid in corpus_ids else 0)
        for i, value in enumerate(random_expectation(n_corpus, len(rel), k)):
            totals[i] += value
        n += 1
    if n == 0:
        return {mrr_key: 0.0, p_key: 0.0, r_key: 0.0}
    return {mrr_key: totals[0] / n, p_key: totals[1] / n, r_key: totals[2] / n}


def heldout_task(heldout: np.ndarray) -> tuple[dict[int, int], dict[int, int], dict[int, set[int]]]:
    """``(queries, corpus, relevant)`` of a held-out split, keyed by text index.

    ``heldout``: int ``[m, 2]`` rows of (query text, relevant text). Queries and corpus map
    each text index to itself (a row index into the embeddings); the corpus is every text
    that appears in ``heldout``, in increasing index order.
    """
    import numpy as np

    pairs = np.asarray(heldout, dtype=np.int64).reshape(-1, 2)
    relevant: dict[int, set[int]] = {}
    for q, c in pairs.tolist():
        if q != c:
            relevant.setdefault(q, set()).add(c)
    texts = sorted(set(pairs.ravel().tolist()))
    corpus = {t: t for t in texts}
    queries = {q: q for q in sorted(relevant)}
    return queries, corpus, relevant


def score_base(embeddings: np.ndarray, heldout: np.ndarray, k: int = K) -> dict[str, float]:
    """Metrics of the plain embedding on the held-out split."""
    queries, corpus, relevant = heldout_task(heldout)
    return evaluate(queries, corpus, relevant, embeddings=embeddings, k=k)


def score_projection(weights: Mapping[str, np.ndarray], embeddings: np.ndarray,
                     heldout: np.ndarray, k: int = K) -> dict[str, float]:
    """Metrics of ``weights`` (applied with :func:`oxidize.train.project`) on the held-out split.

    Only the held-out texts are projected.
    """
    import numpy as np

    from oxidize.train import project

    queries, corpus, relevant = heldout_task(heldout)
    rows = np.asarray(list(corpus), dtype=np.int64)
    projected = project(dict(weights), np.asarray(embeddings)[rows])
    local = {t: i for i, t in enumerate(rows.tolist())}
    return evaluate({q: local[q] for q in queries}, {c: local[c] for c in corpus}, relevant,
                    embeddings=projected, k=k)


def score_random_heldout(heldout: np.ndarray, k: int = K) -> dict[str, float]:
    """Expected metrics of a random ranking on the held-out split."""
    return score_random(*heldout_task(heldout), k=k)


def compare(embeddings: np.ndarray, heldout: np.ndarray,
            weights: Mapping[str, np.ndarray] | None = None, k: int = K) -> dict[str, Any]:
    """Random, base and (when ``weights`` is given) projection metrics on one split.

    Returns ``{"random": {...}, "base": {...}, "projection": {...}, "primary_metric":
    "mrr@10", "heldout_queries": m}`` where ``m`` counts the scored queries (0 when the
    split is empty; then the three entries are ``None``).
    """
    task = heldout_task(heldout)
    m = scored_queries(*task)
    out: dict[str, Any] = {"random": None, "base": None, "projection": None,
                           "primary_metric": f"mrr@{k}", "heldout_queries": m}
    if m == 0:
        return out
    out["random"] = score_random(*task, k=k)
    out["base"] = score_base(embeddings, heldout, k)
    if weights is not None:
        out["projection"] = score_projection(weights, embeddings, heldout, k)
    return out
