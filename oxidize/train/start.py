"""The linear start map ``w0`` (and ``b2``) that training begins from, fitted to the training
texts: the within-group whitening, PCA, identity or nothing (:func:`linear_init`).
"""

from __future__ import annotations

import numpy as np

from oxidize.errors import TrainingError

#: Ways to initialise the linear path ``w0`` (see :func:`linear_init`).
INITS = ("auto", "within", "pca", "identity", "none")
#: The candidates of ``init: auto``. The pair type's reference start
#: (:data:`oxidize.pairs.REFERENCE_STARTS`) is kept unless another is clearly better on
#: validation (:func:`choose_start`).
AUTO_STARTS = ("within", "pca", "identity")
#: A start replaces the reference only when it wins on validation by this many standard
#: errors: in practice, only when the reference is plainly wrong for the data. Built on
#: patina-dev.db cut at seven moments, every swap a 2-error rule allowed ranked the later
#: data worse than the reference it replaced (temporal 0.966× against 1.109× the base,
#: same_commit 0.881× against 0.989×): the validation part is small, and older than the data
#: the projection will meet (docs/benchmarks.md, "Quality on later data").
START_CLEAR_Z = 3.0
#: Measured on patina-dev.db (same_session, held-out latest sessions, 384 → 256): within
#: 0.611 MRR@10, pca 0.600, base embedding 0.604 (docs/architecture.md has the table).
DEFAULT_INIT = "within"


def _group_pairs(triplets: np.ndarray) -> np.ndarray:
    """The unique unordered (anchor, positive) pairs of the triplets: ``int64 [k, 2]``."""
    ap = np.sort(np.asarray(triplets[:, :2], dtype=np.int64), axis=1)
    ap = ap[ap[:, 0] != ap[:, 1]]
    return np.unique(ap, axis=0)


def linear_init(embeddings: np.ndarray, triplets: np.ndarray, out: int,
                kind: str = DEFAULT_INIT, shrinkage: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The linear path's start ``(w0 [out, in], b2 [out])``, float64, from the training data.

    Statistics are taken over the texts that appear in ``triplets`` only (never the
    held-out texts): their mean ``μ`` and covariance ``S_t``, and the within-group scatter
    ``S_w = mean over unique (anchor, positive) pairs of (x_a - x_p)(x_a - x_p)^T / 2`` — the
    pairs of one session (or co-change group) are what the triplets say belong together.

    kinds:
        ``pca``: the top ``out`` principal directions of the centred training texts,
            ``w0 = V^T``, ``b2 = -w0 μ`` (a rotation onto the directions the data varies in;
            with ``out == in`` it ranks exactly like the centred base embedding).
        ``within``: the top ``out`` solutions of ``S_t v = λ (S_w + s I) v`` — directions
            that vary much across the data but little within a group (LDA-like), each scaled
            so that ``v^T (S_w + s I) v = 1`` (within-group whitening), ``b2 = -w0 μ``. ``s``
            is ``shrinkage`` × the mean eigenvalue of ``S_w`` (1.0 measured best on
            patina-dev.db among 0.01, 0.1 and 1), at least 1e-6.
        ``identity``: ``w0 = I``, ``b2 = 0`` — the base embedding itself (needs ``out == in``).
        ``none``: ``w0 = 0``, ``b2 = 0`` — no linear path (the plain MLP of oxidize 0.1).

    When ``out > in`` the rows past the data's dimension are zero. The map is scaled so that
    the mean ``||w0 x + b2||`` over the training texts is 1, a scale the residual's Kaiming
    start matches.
    """
    in_dim = embeddings.shape[1]
    w0 = np.zeros((out, in_dim))
    if kind == "none":
        return w0, np.zeros(out)
    if kind == "identity":
        if out != in_dim:
            raise TrainingError(f"init 'identity' needs the output size to equal the input "
                                f"size ({in_dim}), but it is {out}; use init 'pca'")
        return np.eye(in_dim), np.zeros(out)
    if kind not in ("pca", "within"):
        raise TrainingError(f"init must be one of {', '.join(INITS)}, got {kind!r}")
    # Every statistic is accumulated over row chunks gathered from ``embeddings`` (which
    # may be a read-only memory map): float64 copies of one chunk at a time, never of the
    # whole matrix. With a single chunk (up to _STAT_CHUNK_ELEMS values) the sums are the
    # exact operations of one pass over the whole array.
    rows = np.unique(np.asarray(triplets, dtype=np.int64))
    n_rows = len(rows)
    total = np.zeros(in_dim)
    for xs in _chunks64(embeddings, rows):
        # numpy sums axis 0 row by row: prepending the running total keeps that order
        total = np.concatenate([total[None], xs]).sum(axis=0)
    mu = total / n_rows
    cov = np.zeros((in_dim, in_dim))
    for xs in _chunks64(embeddings, rows):
        xc = xs - mu
        cov += xc.T @ xc
    cov /= max(n_rows - 1, 1)  # (in, in)
    k = min(out, in_dim)
    if kind == "pca":
        vals, vecs = np.linalg.eigh(cov)
        top = vecs[:, ::-1][:, :k]  # (in, k), by decreasing variance
        # a fixed sign per direction (eigh's signs are arbitrary): largest entry positive
        signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(k)])
        w0[:k] = (top * np.where(signs == 0, 1, signs)).T
    else:  # within
        from scipy.linalg import eigh

        pairs = _group_pairs(triplets)
        s_w = np.zeros((in_dim, in_dim))
        for lo, hi in _chunk_bounds(len(pairs), in_dim):
            d = (_gather64(embeddings, pairs[lo:hi, 0])
                 - _gather64(embeddings, pairs[lo:hi, 1]))  # (chunk, in)
            s_w += d.T @ d
        s_w /= 2 * max(len(pairs), 1)
        # (a floor: when every positive equals its anchor S_w is 0, and eigh would fail)
        s_w += max(shrinkage * np.trace(s_w) / in_dim, 1e-6) * np.eye(in_dim)
        vals, vecs = eigh(cov, s_w)  # vecs^T s_w vecs = I
        top = vecs[:, ::-1][:, :k]
        signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(k)])
        w0[:k] = (top * np.where(signs == 0, 1, signs)).T
    b2 = -w0 @ mu
    norms = [np.linalg.norm(xs @ w0.T + b2, axis=1) for xs in _chunks64(embeddings, rows)]
    scale = np.concatenate(norms).mean()
    if scale > 0:
        w0, b2 = w0 / scale, b2 / scale
    return w0, b2


#: Values (rows × dim) per float64 chunk when :func:`linear_init` gathers rows (8 MB).
_STAT_CHUNK_ELEMS = 1 << 20


def _chunk_bounds(n: int, dim: int):
    """``(lo, hi)`` bounds of consecutive chunks of ``n`` rows of ``dim`` values."""
    step = max(1, _STAT_CHUNK_ELEMS // max(dim, 1))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _gather64(embeddings: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of ``embeddings`` as a float64 array (reads only those rows)."""
    return np.asarray(embeddings[index], dtype=np.float64)


def _chunks64(embeddings: np.ndarray, rows: np.ndarray):
    """Rows ``rows`` of ``embeddings``, a chunk at a time, as float64 arrays."""
    for lo, hi in _chunk_bounds(len(rows), embeddings.shape[1]):
        yield _gather64(embeddings, rows[lo:hi])


def choose_start(emb, trips, out, init, scorer, views, label="", reference=DEFAULT_INIT):
    """Set ``views["w0"]``/``views["b2"]`` to the start map and return ``(start, scores)``.

    With ``init == "auto"`` every candidate of :data:`AUTO_STARTS` is scored on the
    validation ``scorer``. ``reference`` (the pair type's start measured best on later
    data) is kept unless another candidate's per-query reciprocal ranks beat it by more
    than :data:`START_CLEAR_Z` standard errors (:func:`oxidize.evaluate.clearly_better`);
    of those, the best MRR@10 wins. A validation part of a dozen sessions is noisy: on
    patina-dev.db it preferred ``pca`` by 2.5 % for ``semantic``, which then ranked the
    test part 7 % worse.
    """
    from oxidize.evaluate import clearly_better

    applies = [c for c in AUTO_STARTS if c != "identity" or out == emb.shape[1]]
    first = reference if reference in applies else applies[0]
    candidates = [init] if init != "auto" else [first] + [c for c in applies if c != first]
    scores: dict[str, float] = {}
    ranks = {}
    fitted = {}
    for kind in candidates:
        try:
            w0, b2 = linear_init(emb, trips, out, kind)
        except TrainingError as err:
            raise TrainingError(f"{label}: {err}" if label else str(err)) from None
        fitted[kind] = (w0, b2)
        views["w0"][...] = w0
        views["b2"][...] = b2
        if scorer is None:
            return kind, scores
        scores[kind], ranks[kind] = scorer.score(views)
    chosen = candidates[0]
    for kind in candidates[1:]:
        if clearly_better(ranks[kind], ranks[candidates[0]], START_CLEAR_Z) \
                and scores[kind] > scores[chosen]:
            chosen = kind
    views["w0"][...], views["b2"][...] = fitted[chosen]
    return chosen, scores
