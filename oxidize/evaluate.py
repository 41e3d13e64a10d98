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
:func:`oxidize.projection.project`).

The held-out split is ``heldout.npy`` (see :mod:`oxidize.pairs`): int rows ``(query text,
relevant text)``; :func:`heldout_task` turns it into queries, corpus and relevance. The
corpus is every text that appears in it.

numpy is imported inside the functions: doit imports modules of this package when it only
lists tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import TYPE_CHECKING, Any

from oxidize.projection import project

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

#: The metric a build is judged by (greater is better).
PRIMARY_METRIC = "mrr@10"
GREATER_IS_BETTER = True
#: Rank cut-off of every metric.
K = 10
#: Queries scored per block (bounds memory to ``QUERY_CHUNK × corpus`` floats).
QUERY_CHUNK = 512
#: At most this many similarities are held at once (float64: 8 MiB, and as much again for
#: the candidate indices). 2²² held 64 MiB: an eighth of a 100k-event training step's peak.
SIM_BLOCK = 1 << 20


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
    scored = [(qid, sorted({position[c] for c in rel}))
              for qid, rel in _scored(queries, position, relevant)]
    if not scored:
        return {mrr_key: 0.0, p_key: 0.0, r_key: 0.0}
    cmat = _matrix(corpus, corpus_ids, embeddings, "corpus")  # (n_corpus, dim)
    qmat = _matrix(queries, [q for q, _ in scored], embeddings, "queries")  # (n_queries, dim)
    own = np.asarray([position.get(qid, -1) for qid, _ in scored], dtype=np.int64)
    indptr = np.cumsum([0] + [len(rel) for _, rel in scored])
    rel_flat = np.asarray([c for _, rel in scored for c in rel], dtype=np.int64)
    return _ranking_metrics(cmat, own, indptr, rel_flat, k, qmat=qmat)


def _ranking_metrics(cmat: np.ndarray, own: np.ndarray, indptr: np.ndarray,
                     relevant: np.ndarray, k: int, qmat: np.ndarray | None = None,
                     ranks_out: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of ranking the unit rows ``cmat`` (the corpus, in tie-breaking order)
    for each query; the ranking core of :func:`evaluate` and :class:`HeldoutSplit`.

    Query ``i`` is the unit row ``qmat[i]`` (or, without ``qmat``, ``cmat[own[i]]``), sits
    at corpus position ``own[i]`` (``-1``: not in the corpus) and finds the sorted corpus
    positions ``relevant[indptr[i]:indptr[i + 1]]`` (at least one, never ``own[i]``).
    ``ranks_out``, when given, receives each query's reciprocal rank (0 beyond ``k``).
    """
    import numpy as np

    mrr_key, p_key, r_key = metric_names(k)
    n_corpus, n_queries = len(cmat), len(own)
    top = min(k, n_corpus)
    mrr = p = r = 0.0
    # Bound the similarity block to SIM_BLOCK floats whatever the corpus size: at a million
    # held-out texts a fixed 512-query block would hold gigabytes.
    chunk = max(1, min(QUERY_CHUNK, SIM_BLOCK // max(n_corpus, 1)))
    for lo in range(0, n_queries, chunk):
        hi = min(lo + chunk, n_queries)
        block_own = own[lo:hi]
        queries = qmat[lo:hi] if qmat is not None else cmat[block_own]
        sim = queries @ cmat.T  # (chunk, n_corpus)
        inside = np.flatnonzero(block_own >= 0)
        sim[inside, block_own[inside]] = -np.inf  # a query is never retrieved for itself
        # stable sort of the top candidates: ties go to the earlier corpus item
        if top < n_corpus:
            # the top+1 largest, without the copy that partitioning -sim would make
            cand = np.argpartition(sim, n_corpus - top - 1, axis=1)[:, n_corpus - top - 1:]
        else:
            cand = np.broadcast_to(np.arange(n_corpus), (hi - lo, n_corpus))
        for row in range(hi - lo):
            c = np.sort(cand[row])
            order = c[np.argsort(-sim[row, c], kind="stable")]
            ranked = order[order != block_own[row]][:top]
            rel = relevant[indptr[lo + row]:indptr[lo + row + 1]]
            hits = np.flatnonzero(np.isin(ranked, rel, assume_unique=True))
            rr = 1.0 / (hits[0] + 1) if len(hits) else 0.0
            mrr += rr
            if ranks_out is not None:
                ranks_out[lo + row] = rr
            p += len(hits) / k
            r += len(hits) / len(rel)
    n = max(n_queries, 1)
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


#: Queries a held-out split scores at most (:class:`HeldoutSplit`): ranking is queries ×
#: corpus, so scoring every query of a 1M-event log (200,000 held-out texts) five times per
#: build took longer than training; 5,000 evenly spaced queries estimate MRR@10 to about
#: ±0.006 against every text of the corpus.
MAX_QUERIES = 5000
#: Corpus rows turned into unit float64 vectors at a time by :meth:`HeldoutSplit.metrics`
#: (the block size of :func:`oxidize.projection.project`, so projected rows are the same bits).
ROW_BLOCK = 2048


class HeldoutSplit:
    """A held-out split (``heldout.npy``) as index arrays: :func:`heldout_task`'s queries,
    corpus and relevance without a Python object per pair (at 20,000 held-out texts those
    dicts and sets took ~100 MB of a training step's peak memory).

    A split with more than ``max_queries`` queries (default :data:`MAX_QUERIES`) scores an
    evenly spaced subset of them (every ``total / max_queries``-th, by text index; no random
    draw), each still ranked against the whole corpus.

    Attributes:
        texts: every text index in the split, increasing — the corpus, in tie-breaking order.
        queries: corpus positions of the scored texts that have something to find.
        indptr, relevant: query ``i`` finds the sorted corpus positions
            ``relevant[indptr[i]:indptr[i + 1]]`` (never itself).
        total_queries: the texts with something to find, scored or not.
    """

    def __init__(self, heldout: np.ndarray, max_queries: int | None = None):
        import numpy as np

        pairs = np.asarray(heldout, dtype=np.int64).reshape(-1, 2)
        self.texts = np.unique(pairs)
        local = np.searchsorted(self.texts, pairs)
        local = local[local[:, 0] != local[:, 1]]
        local = np.unique(local, axis=0) if len(local) else local  # by query, then corpus
        queries, counts = np.unique(local[:, 0], return_counts=True)
        self.total_queries = len(queries)
        cap = MAX_QUERIES if max_queries is None else max_queries
        if self.total_queries > cap:
            keep = np.arange(cap, dtype=np.int64) * self.total_queries // cap
            queries, counts = queries[keep], counts[keep]
            local = local[np.isin(local[:, 0], queries)]  # still sorted by query
        self.queries = queries
        self.indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.relevant = np.ascontiguousarray(local[:, 1])

    @property
    def n_queries(self) -> int:
        """How many queries are scored (each has at least one relevant text)."""
        return len(self.queries)

    def metrics(self, vectors: Callable[[np.ndarray], np.ndarray], k: int = K,
                ranks_out: np.ndarray | None = None) -> dict[str, float]:
        """:func:`evaluate`'s metrics when text ``t`` is the vector ``vectors(ts)[i]`` for
        ``ts[i] == t``; ``vectors`` is asked for :data:`ROW_BLOCK` texts at a time (rows of
        the base embedding, or projected rows), and only one float64 copy of the corpus is
        held. ``ranks_out`` (``float64[n_queries]``) receives each query's reciprocal rank."""
        import numpy as np

        if not self.n_queries:
            return dict.fromkeys(metric_names(k), 0.0)
        cmat = None
        for lo in range(0, len(self.texts), ROW_BLOCK):
            rows = np.asarray(vectors(self.texts[lo:lo + ROW_BLOCK]), dtype=np.float64)
            if cmat is None:
                cmat = np.empty((len(self.texts), rows.shape[1]), dtype=np.float64)
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            cmat[lo:lo + len(rows)] = rows / np.maximum(norms, 1e-12)
        return _ranking_metrics(cmat, self.queries, self.indptr, self.relevant, k, ranks_out=ranks_out)

    def random(self, k: int = K) -> dict[str, float]:
        """:func:`score_random` on this split: exact expectations of a random ranking."""
        mrr_key, p_key, r_key = metric_names(k)
        if not self.n_queries:
            return {mrr_key: 0.0, p_key: 0.0, r_key: 0.0}
        totals = [0.0, 0.0, 0.0]
        for n_relevant in (self.indptr[1:] - self.indptr[:-1]).tolist():
            # every query is a text of the corpus, which leaves len(texts) - 1 to rank
            for i, value in enumerate(random_expectation(len(self.texts) - 1, n_relevant, k)):
                totals[i] += value
        n = self.n_queries
        return {mrr_key: totals[0] / n, p_key: totals[1] / n, r_key: totals[2] / n}


def score_base(embeddings: np.ndarray, heldout: np.ndarray, k: int = K) -> dict[str, float]:
    """Metrics of the plain embedding on the held-out split."""
    return HeldoutSplit(heldout).metrics(lambda texts: embeddings[texts], k)


def score_projection(weights: Mapping[str, np.ndarray], embeddings: np.ndarray,
                     heldout: np.ndarray, k: int = K) -> dict[str, float]:
    """Metrics of ``weights`` (applied with :func:`oxidize.projection.project`) on the held-out split.

    Only the held-out texts are projected.
    """
    return HeldoutSplit(heldout).metrics(lambda texts: project(dict(weights), embeddings[texts]), k)


def score_random_heldout(heldout: np.ndarray, k: int = K) -> dict[str, float]:
    """Expected metrics of a random ranking on the held-out split."""
    return HeldoutSplit(heldout).random(k)


def compare(embeddings: np.ndarray, heldout: np.ndarray,
            weights: Mapping[str, np.ndarray] | None = None, k: int = K) -> dict[str, Any]:
    """Random, base and (when ``weights`` is given) projection metrics on one split.

    Returns ``{"random": {...}, "base": {...}, "projection": {...}, "primary_metric":
    "mrr@10", "heldout_queries": m, "heldout_queries_total": t}`` where ``m`` counts the
    scored queries — all ``t`` of them, or :data:`MAX_QUERIES` evenly spaced ones — (0 when
    the split is empty; then the three entries are ``None``).
    """
    split = HeldoutSplit(heldout)
    m = split.n_queries
    out: dict[str, Any] = {"random": None, "base": None, "projection": None,
                           "primary_metric": f"mrr@{k}", "heldout_queries": m,
                           "heldout_queries_total": split.total_queries}
    if m == 0:
        return out
    out["random"] = split.random(k)
    out["base"] = split.metrics(lambda texts: embeddings[texts], k)
    if weights is not None:
        plain = dict(weights)
        out["projection"] = split.metrics(lambda texts: project(plain, embeddings[texts]), k)
    return out


class HeldoutScorer:
    """MRR@10 of the current weights on the held-out split, for choosing the best epoch.

    Projects only the held-out texts (a block of rows at a time: cheap next to an epoch) and
    ranks them with :class:`oxidize.evaluate.HeldoutSplit`, the code that writes
    metrics.json, so the MRR that picks the epoch is the one the eval task reports. Memory
    stays bounded: index arrays for the split, one float64 copy of the held-out rows and a
    similarity block of at most :data:`oxidize.evaluate.SIM_BLOCK` values.
    """

    def __init__(self, emb: np.ndarray, heldout: np.ndarray):
        self.split = HeldoutSplit(heldout)
        self.queries = self.split.n_queries
        self.emb = emb
        self.base_mrr = self._mrr(lambda texts: self.emb[texts])

    def _mrr(self, vectors) -> float:
        return self.split.metrics(vectors)[PRIMARY_METRIC]

    def mrr(self, weights: dict[str, np.ndarray]) -> float:
        return self._mrr(lambda texts: project(weights, self.emb[texts]))

    def score(self, weights: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """MRR@10 of ``weights`` (as :meth:`mrr`) and every query's reciprocal rank."""
        import numpy as np

        ranks = np.zeros(self.queries)
        mrr = self.split.metrics(lambda texts: project(weights, self.emb[texts]),
                                 ranks_out=ranks)[PRIMARY_METRIC]
        return mrr, ranks


def paired_z(candidate: np.ndarray, reference: np.ndarray) -> float:
    """How many standard errors of the per-query difference ``candidate`` (reciprocal ranks)
    is above ``reference`` on the same queries (negative: below; 0 with fewer than two)."""
    import numpy as np

    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if len(diff) < 2:
        return 0.0
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    if se == 0:
        return 0.0 if diff.mean() == 0 else float(np.sign(diff.mean()) * np.inf)
    return float(diff.mean() / se)


def clearly_better(candidate: np.ndarray, reference: np.ndarray, z: float) -> bool:
    """Whether per-query reciprocal ranks ``candidate`` beat ``reference`` (the same queries)
    by more than ``z`` standard errors of their mean paired difference.

    Why: a validation part of a few dozen queries moves by several hundredths between two
    nearly equal weights, and "the higher MRR wins" then picks noise — on later data such
    picks ranked up to 16 % below the choice they replaced (docs/benchmarks.md). A
    candidate replaces the safer choice only when the gain is large next to its own spread
    over the queries.
    """
    import numpy as np

    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if len(diff) < 2:
        return bool(diff.sum() > 0)
    mean = diff.mean()
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    return bool(mean > 0 and mean > z * se)
