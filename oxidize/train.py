"""Training a projection: validation, seeded initialisation, the epoch loop, NaN checks, saving.

The arithmetic lives in :mod:`oxidize.kernels` (Numba, one jitted call per epoch); this
module is the part a user meets: it checks the inputs and says what is wrong in their
terms, draws the initial weights and the minibatch order from one seeded NumPy generator
(so a seed means the same weights, byte for byte, on the same machine), reports a loss
line per epoch, stops with a :class:`~oxidize.errors.TrainingError` naming the projection
and the epoch when the loss stops being finite, and writes the results atomically.

Model: ``h = relu(W1 x + b1)``, ``z = W0 x + W2 h + b2``, ``y = z / ||z||`` with
``w0 [out, in]``, ``w1 [hidden, in]``, ``b1 [hidden]``, ``w2 [out, hidden]``, ``b2 [out]``,
float32; loss :class:`oxidize.losses.TripletLoss`.

Why a linear path plus a residual (issue #5, "never worse than the base"): an MLP trained
from noise on same-session triplets forgets what the base embedding knows and ranks later,
unseen sessions *worse* than the plain embedding. Here training starts from a good linear
map instead — ``W0`` from statistics of the training texts (:func:`linear_init`), ``b2``
centring them — and the MLP is a residual that starts at exactly zero (``W2 = 0``), so
epoch 0 *is* that linear map and training only adds what the triplets teach. After every
epoch (and before the first) the projection is scored on the held-out split
(:mod:`oxidize.evaluate`, MRR@10); the best-scoring weights are kept, and ``patience``
epochs without improvement stop training early. If no epoch beats the start, the start is
kept.

Deterministic by construction: initial weights and every epoch's permutation come from
``numpy.random.default_rng(seed)`` in Python; the kernels use no ``fastmath`` and no
parallel reductions. BLAS gemm (used for the matrix products) splits work over output
tiles, so its sums do not depend on the thread count; ``tests/test_train.py`` checks equal
bytes across processes and BLAS thread counts. A different CPU or BLAS build may give
different (equally valid) weights.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oxidize import __version__
from oxidize.atomic import atomic_path, write_json
from oxidize.errors import TrainingError
from oxidize.losses import TripletLoss

WEIGHT_KEYS = ("w1", "b1", "w2", "b2", "w0")
#: Ways to initialise the linear path ``w0`` (see :func:`linear_init`).
INITS = ("within", "pca", "identity", "none")
#: Measured on patina-dev.db (same_session, held-out latest sessions, 384 → 256): within
#: 0.611 MRR@10, pca 0.600, base embedding 0.604 (docs/architecture.md has the table).
DEFAULT_INIT = "within"
#: Epochs without a better held-out MRR@10 before training stops (``None``: never stop).
DEFAULT_PATIENCE = 3
OPTIMIZERS = ("adam", "sgd")
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8
#: Triplets per segment of an epoch; the BLAS thread count is chosen per segment (see
#: :class:`_BlasThreads`).
SEGMENT_TRIPLETS = 4096
#: After probing 1 and all BLAS threads, keep the faster for this many segments.
PROBE_EVERY = 8
#: ...except after the first probe, which decides for this many segments only: a probe at
#: the very start often runs beside the threads another runtime left spinning (NumPy's
#: OpenBLAS right after the linear init, the previous task), which makes 2 threads look slow.
FIRST_HOLD = 2
#: Triplets per probing segment (shorter than :data:`SEGMENT_TRIPLETS`: on an idle machine
#: the slower count's probe is time lost, ~half of a short run with full-size probes).
PROBE_TRIPLETS = 512
#: Probes per thread count, interleaved (1, 2, 1, 2 threads), each count judged by its best:
#: a passing disturbance (another runtime's BLAS threads still spinning when training
#: starts) then spoils one probe, not the choice.
PROBE_ROUNDS = 2
#: The single safetensors metadata key; its value is canonical JSON. (safetensors stores
#: metadata in a hash map whose order changes from process to process, so several keys
#: would make the file's bytes differ between identical builds.)
METADATA_KEY = "oxidize"


@dataclass
class TrainResult:
    """What :func:`train_projection` returns.

    Attributes:
        weights: ``w0 [out, in]``, ``w1 [hidden, in]``, ``b1 [hidden]``, ``w2 [out, hidden]``,
            ``b2 [out]``, float32 — those of the chosen epoch.
        losses: mean training loss of each epoch run (over its minibatches, before each update).
        seconds: wall-clock training time (not part of any fingerprint).
        config: everything that determined the weights (sizes, hyperparameters, loss, seed).
        heldout_mrr: held-out MRR@10 after each epoch, index 0 = the initial weights (empty
            when there was no held-out split).
        chosen_epoch: the epoch whose weights were kept (0 = the initialisation).
        stopped_early: training stopped before ``epochs`` (patience ran out).
    """

    weights: dict[str, np.ndarray]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    heldout_mrr: list[float] = field(default_factory=list)
    chosen_epoch: int | None = None
    stopped_early: bool = False


def _fail(label: str, message: str) -> TrainingError:
    return TrainingError(f"{label}: {message}" if label else message)


def _check_positive_int(label: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise _fail(label, f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _validate(embeddings, triplets, in_dim, label):
    """Return contiguous float32 embeddings and int64 triplets, or raise TrainingError."""
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        shape = getattr(embeddings, "shape", None)
        raise _fail(label, f"embeddings must be a 2-D array [n_texts, dim], got shape {shape}")
    if not np.issubdtype(embeddings.dtype, np.floating):
        raise _fail(label, f"embeddings must be floating point, got dtype {embeddings.dtype}")
    n_texts, dim = embeddings.shape
    if n_texts == 0 or dim == 0:
        raise _fail(label, f"embeddings are empty (shape {embeddings.shape})")
    if in_dim is not None and dim != in_dim:
        raise _fail(label, f"embeddings have dimension {dim} but the projection's input layer "
                           f"is {in_dim}; set layers[0] to {dim} (or leave it out)")
    # A C-contiguous float32 array (or memory map) is used as it is, not copied: the
    # kernels read only the rows the triplets name. np.asarray drops the memmap subclass
    # (numba takes plain arrays) without copying.
    emb = np.ascontiguousarray(np.asarray(embeddings), dtype=np.float32)
    bad_rows = 0
    first_bad = None
    for lo, hi in _chunk_bounds(n_texts, dim):  # a chunk at a time: no [n_texts, dim] mask
        finite = np.isfinite(emb[lo:hi]).all(axis=1)
        if not finite.all():
            if first_bad is None:
                first_bad = lo + int(np.flatnonzero(~finite)[0])
            bad_rows += int((~finite).sum())
    if first_bad is not None:
        raise _fail(label, f"embeddings row {first_bad} contains NaN or infinity "
                           f"({bad_rows} bad rows); rebuild the embeddings")
    if not isinstance(triplets, np.ndarray) or triplets.ndim != 2 or triplets.shape[1] != 3:
        shape = getattr(triplets, "shape", None)
        raise _fail(label, f"triplets must be an integer array [n, 3] (anchor, positive, "
                           f"negative), got shape {shape}")
    if not np.issubdtype(triplets.dtype, np.integer):
        raise _fail(label, f"triplets must be integers, got dtype {triplets.dtype}")
    if triplets.shape[0] == 0:
        raise _fail(label, "there are no triplets to train on; check the pair settings "
                           "and that the event log has enough events")
    low, high = int(triplets.min()), int(triplets.max())
    if low < 0 or high >= n_texts:
        bad = int(np.flatnonzero(((triplets < 0) | (triplets >= n_texts)).any(axis=1))[0])
        raise _fail(label, f"triplet {bad} {triplets[bad].tolist()} refers to a text outside "
                           f"0..{n_texts - 1} (there are {n_texts} embeddings); the triplets "
                           f"and embeddings are out of step — rebuild both")
    return emb, np.ascontiguousarray(triplets, dtype=np.int64)


def init_weights(in_dim: int, hidden: int, out: int, rng: np.random.Generator,
                 dtype=np.float32) -> dict[str, np.ndarray]:
    """The MLP residual's start: Kaiming-uniform ``w1`` (for the ReLU), ``w2 = 0``, zero biases.

    ``w1 ~ U(±sqrt(6 / in))`` is drawn in float64 by ``rng`` and then cast, so the values
    depend only on the generator's state. ``w2`` starts at zero so that the residual adds
    nothing until training moves it (its gradient ``dz^T h`` is not zero, so it does move);
    ``w0`` is left at zero here and set by :func:`linear_init`.
    """
    bound1 = math.sqrt(6.0 / in_dim)
    w1 = rng.uniform(-bound1, bound1, size=(hidden, in_dim)).astype(dtype)
    return {"w1": w1, "b1": np.zeros(hidden, dtype), "w2": np.zeros((out, hidden), dtype),
            "b2": np.zeros(out, dtype), "w0": np.zeros((out, in_dim), dtype)}


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


#: Order of the weights in the flat parameter vector: matrices first (weight decay).
_FLAT_ORDER = ("w1", "w2", "w0", "b1", "b2")


class _FlatParams:
    """One flat vector laid out ``[w1, w2, w0, b1, b2]`` with C-contiguous views per weight."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype):
        sizes = {k: int(np.prod(shapes[k])) for k in _FLAT_ORDER}
        self.flat = np.zeros(sum(sizes.values()), dtype=dtype)
        self.views: dict[str, np.ndarray] = {}
        offset = 0
        for k in _FLAT_ORDER:
            self.views[k] = self.flat[offset:offset + sizes[k]].reshape(shapes[k])
            offset += sizes[k]
        # weight decay applies to the matrices only
        self.n_decay = sizes["w1"] + sizes["w2"] + sizes["w0"]


def _buffers(rows: int, in_dim: int, hidden: int, out: int, dtype):
    """Work buffers ``x, h, z, z_lin, y, norms, dy, dh`` for ``rows`` stacked rows."""
    return (np.zeros((rows, in_dim), dtype), np.zeros((rows, hidden), dtype),
            np.zeros((rows, out), dtype), np.zeros((rows, out), dtype),
            np.zeros((rows, out), dtype), np.zeros(rows, dtype),
            np.zeros((rows, out), dtype), np.zeros((rows, hidden), dtype))


def _check_heldout(heldout, n_texts: int, label: str):
    """``None`` or a validated int64 ``[m, 2]`` held-out array."""
    if heldout is None:
        return None
    pairs = np.asarray(heldout)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (pairs.size and pairs.dtype.kind not in "iu"):
        raise _fail(label, f"held-out pairs must be an integer array [m, 2], got shape "
                           f"{pairs.shape} and dtype {pairs.dtype}")
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n_texts):
        raise _fail(label, f"held-out pairs refer to texts outside 0..{n_texts - 1}; the "
                           f"pairs and embeddings are out of step — rebuild both")
    return pairs.astype(np.int64)


def train_projection(embeddings: np.ndarray, triplets: np.ndarray, *, hidden: int, out: int,
                     epochs: int, batch_size: int, learning_rate: float, margin: float,
                     seed: int, optimizer: str = "adam", momentum: float = 0.9,
                     weight_decay: float = 0.0, label: str = "", progress: bool = True,
                     in_dim: int | None = None, init: str = DEFAULT_INIT,
                     heldout: np.ndarray | None = None,
                     patience: int | None = DEFAULT_PATIENCE) -> TrainResult:
    """Train the projection on ``triplets`` (rows of ``embeddings``) and return the result.

    Args:
        embeddings: float32 ``[n_texts, in]``, the L2-normalised text embeddings.
        triplets: integer ``[n, 3]``: indices of (anchor, positive, negative) into ``embeddings``.
        hidden, out: layer sizes. epochs, batch_size: the schedule (the last minibatch of an
            epoch may be smaller).
        learning_rate, margin, seed: as in the recipe's ``training:`` block.
        optimizer: ``"adam"`` (β1 0.9, β2 0.999, eps 1e-8, bias-corrected) or ``"sgd"``
            (with ``momentum``). weight_decay: L2 coefficient added to the gradient of the
            weight matrices (not the biases).
        label: the projection's name for messages (``"example:semantic"``).
        progress: print one loss line per epoch to stderr.
        in_dim: if given (the recipe's ``layers[0]``), the embeddings' dimension must match.
        init: how the linear path starts, one of :data:`INITS` (see :func:`linear_init`).
        heldout: optional int ``[m, 2]`` (query, relevant) pairs of held-out texts (rows of
            ``embeddings`` that no triplet uses). With it, the held-out MRR@10 is measured
            before training and after every epoch, and the best weights are returned.
        patience: with ``heldout``, stop after this many epochs without a better MRR@10
            (``None``: run every epoch, still return the best).

    Raises:
        TrainingError: bad inputs or hyperparameters, or a loss that became NaN/infinite.
    """
    hidden = _check_positive_int(label, "hidden", hidden)
    out = _check_positive_int(label, "out", out)
    epochs = _check_positive_int(label, "epochs", epochs)
    batch_size = _check_positive_int(label, "batch_size", batch_size)
    if patience is not None:
        patience = _check_positive_int(label, "patience", patience)
    if optimizer not in OPTIMIZERS:
        raise _fail(label, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if init not in INITS:
        raise _fail(label, f"init must be one of {', '.join(INITS)}, got {init!r}")
    for name, value, ok, want in (
        ("learning_rate", learning_rate, lambda v: v > 0, "a positive number"),
        ("margin", margin, lambda v: v >= 0, "a number >= 0"),
        ("momentum", momentum, lambda v: 0 <= v < 1, "a number in [0, 1)"),
        ("weight_decay", weight_decay, lambda v: v >= 0, "a number >= 0"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(value) or not ok(value):
            raise _fail(label, f"{name} must be {want}, got {value!r}")
    emb, trips = _validate(embeddings, triplets, in_dim, label)
    held = _check_heldout(heldout, emb.shape[0], label)

    from oxidize import kernels  # numba: imported only when training

    fixed = blas_threads()
    if fixed is None and 3 * batch_size > THREAD_SAFE_SUM:
        # Summing more than THREAD_SAFE_SUM rows, this OpenBLAS splits the weight-gradient
        # reductions differently with 1 and 2 threads (different last bits), so a count
        # chosen by timing would make the weights depend on the machine's load. Keep
        # BLAS's own, fixed count instead: same machine, same bytes.
        fixed = 0
    with _BlasThreads(fixed) as threads:
        return _train(threads, emb, trips, held, kernels, hidden=hidden, out=out, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, margin=margin,
                      seed=seed, optimizer=optimizer, momentum=momentum,
                      weight_decay=weight_decay, label=label, progress=progress, init=init,
                      patience=patience)


def blas_threads() -> int | None:
    """``OXIDIZE_BLAS_THREADS`` as a number of BLAS threads for training (``0``: leave BLAS
    as it is), or ``None`` (unset or not a number): choose by measuring (:class:`_BlasThreads`)."""
    value = os.environ.get("OXIDIZE_BLAS_THREADS", "").strip()
    return int(value) if value.isdigit() else None


#: Largest stacked minibatch (3 × batch rows) whose weight-gradient GEMMs were measured to
#: give the same bits with 1 and 2 OpenBLAS threads (OpenBLAS 0.3.30, SkylakeX; differences
#: seen at 552, 600, 720 and 744 rows). Larger batches keep a fixed thread count.
THREAD_SAFE_SUM = 384


class _BlasThreads:
    """How many threads the BLAS libraries (SciPy's, which numba calls, and NumPy's) use
    while training: fixed, or chosen by measuring.

    Why measured: on 2 idle cores OpenBLAS with 2 threads trains 1.6–1.8× faster than with
    1, but with the cores shared (``doit -n 2``, other builds) it was 3× (batch 256) to
    24× (batch 32) *slower* — its threads spin waiting for each other (docs/benchmarks.md,
    "BLAS threads"). So each epoch runs in segments of :data:`SEGMENT_TRIPLETS` triplets;
    shorter segments (:data:`PROBE_TRIPLETS`) are timed with 1 thread and with all of them,
    alternately, :data:`PROBE_ROUNDS` each; the count with the best probe runs the next :data:`PROBE_EVERY` segments (the first time
    only :data:`FIRST_HOLD`), and then both are timed again. Up to :data:`THREAD_SAFE_SUM`
    stacked rows the weights do not depend on the choice (a test checks equal bytes for 1
    and 2 threads); above it the count is not measured but fixed (see
    :func:`train_projection`).
    """

    def __init__(self, fixed: int | None):
        self.fixed = fixed
        self.choices: list[int] = []
        self.rates: dict[int, float] = {}
        self.plan: list[int] = []
        self._controller = None
        self._limiter = None
        self.current: int | None = None
        #: the segment that :meth:`next` set up is a probe (timed to compare counts)
        self.probing = False
        self._probe_plan = False
        self._decisions = 0

    def __enter__(self) -> _BlasThreads:
        if self.fixed == 0:
            return self
        import scipy.linalg.cython_blas  # noqa: F401 — load numba's BLAS before limiting it
        from threadpoolctl import ThreadpoolController

        self._controller = ThreadpoolController().select(user_api="blas")
        most = max([lib.num_threads for lib in self._controller.lib_controllers] or [1])
        self.choices = [self.fixed] if self.fixed else sorted({1, most})
        self.set(self.choices[0])
        return self

    def __exit__(self, *exc) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None

    def set(self, threads: int) -> None:
        if self._controller is not None and threads != self.current:
            if self._limiter is not None:
                self._limiter.restore_original_limits()
            self._limiter = self._controller.limit(limits=threads)
            self.current = threads

    def next(self) -> int:
        """Set and return the thread count for the next segment."""
        self.probing = False
        if not self.choices:
            return 0
        if not self.plan:
            if len(self.choices) == 1:
                self.plan = [self.choices[0]]
            elif not self._probe_plan:  # time every count, PROBE_ROUNDS times, interleaved
                self.plan = list(self.choices) * PROBE_ROUNDS
                self.rates.clear()
                self._probe_plan = True
            else:  # the count with the best probe holds
                best = max(self.choices, key=lambda c: self.rates.get(c, 0.0))
                self.plan = [best] * (FIRST_HOLD if self._decisions == 0 else PROBE_EVERY)
                self._decisions += 1
                self._probe_plan = False
        threads = self.plan.pop(0)
        self.probing = self._probe_plan
        self.set(threads)
        return threads

    def record(self, threads: int, triplets: int, seconds: float) -> None:
        """Note a probe segment's rate; a count's best probe is what counts."""
        if threads and len(self.choices) > 1 and self.probing:
            rate = triplets / max(seconds, 1e-9)
            self.rates[threads] = max(rate, self.rates.get(threads, 0.0))


def _train(blas: _BlasThreads, emb, trips, held, kernels, *, hidden, out, epochs, batch_size, learning_rate,
           margin, seed, optimizer, momentum, weight_decay, label, progress, init,
           patience) -> TrainResult:
    """The body of :func:`train_projection` on validated inputs."""
    in_features = emb.shape[1]
    n = trips.shape[0]
    loss_fn = TripletLoss(margin)
    rng = np.random.default_rng(seed)
    params = _FlatParams({"w1": (hidden, in_features), "b1": (hidden,), "w2": (out, hidden),
                          "b2": (out,), "w0": (out, in_features)}, np.float32)
    for key, value in init_weights(in_features, hidden, out, rng).items():
        params.views[key][...] = value
    try:
        w0, b2 = linear_init(emb, trips, out, init)
    except TrainingError as err:
        raise _fail(label, str(err)) from None
    params.views["w0"][...] = w0
    params.views["b2"][...] = b2
    grads = _FlatParams({k: v.shape for k, v in params.views.items()}, np.float32)
    state1 = np.zeros_like(params.flat)
    state2 = np.zeros_like(params.flat)
    x, h, z, z_lin, y, norms, dy, dh = _buffers(3 * min(batch_size, n), in_features, hidden, out,
                                                np.float32)
    n_batches = (n + batch_size - 1) // batch_size
    sizes = np.full(n_batches, batch_size, dtype=np.float64)
    sizes[-1] = n - batch_size * (n_batches - 1)
    batch_losses = np.zeros(n_batches, dtype=np.float64)
    segment = max(1, SEGMENT_TRIPLETS // batch_size)  # minibatches per segment
    probe_segment = max(1, min(PROBE_TRIPLETS, SEGMENT_TRIPLETS) // batch_size)
    opt_code = kernels.ADAM if optimizer == "adam" else kernels.SGD
    p, g = params.views, grads.views
    prefix = f"{label} " if label else ""

    scorer = _HeldoutScorer(emb, held) if held is not None else None
    heldout_mrr: list[float] = []
    best_flat, best_epoch, best_mrr = None, None, -math.inf
    if scorer is not None and scorer.queries:
        best_mrr = scorer.mrr(p)
        heldout_mrr.append(best_mrr)
        best_flat, best_epoch = params.flat.copy(), 0
        if progress:
            print(f"{prefix}train: epoch 0/{epochs} held-out mrr@10 {best_mrr:.4f} "
                  f"(init {init}; base {scorer.base_mrr:.4f})", file=sys.stderr, flush=True)
    else:
        scorer = None

    losses: list[float] = []
    stopped_early = False
    step = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        order = rng.permutation(n).astype(np.int64)
        done = 0
        # The epoch's minibatches in segments (same batches, same order: same bytes), so
        # that the BLAS thread count can follow the machine's load.
        while done < n_batches:
            threads = blas.next()
            todo = min(n_batches - done, probe_segment if blas.probing else segment)
            lo, hi = done * batch_size, min(n, (done + todo) * batch_size)
            seg_start = time.perf_counter()
            seg_done, step = kernels.train_epoch(
                emb, trips, order[lo:hi], batch_size, float(margin),
                params.flat, p["w0"], p["w1"], p["b1"], p["w2"], p["b2"],
                grads.flat, g["w0"], g["w1"], g["b1"], g["w2"], g["b2"], state1, state2,
                x, h, z, z_lin, y, norms, dy, dh,
                opt_code, float(learning_rate), ADAM_BETA1, ADAM_BETA2, ADAM_EPS,
                float(momentum), float(weight_decay), params.n_decay, step,
                batch_losses[done:done + todo])
            blas.record(threads, hi - lo, time.perf_counter() - seg_start)
            done += seg_done
            if seg_done < todo:
                break
        if done < n_batches:
            raise _fail(label, f"training diverged in epoch {epoch}/{epochs} (minibatch "
                               f"{done + 1}/{n_batches}): the loss became "
                               f"{batch_losses[done]}; lower learning_rate (now {learning_rate})")
        loss = float(np.dot(batch_losses, sizes) / n)
        if not math.isfinite(loss) or not np.isfinite(params.flat).all():
            raise _fail(label, f"training diverged in epoch {epoch}/{epochs}: the loss or the "
                               f"weights are not finite; lower learning_rate (now {learning_rate})")
        losses.append(loss)
        line = f"{prefix}train: epoch {epoch}/{epochs} loss {loss:.4f}"
        if scorer is not None:
            mrr = scorer.mrr(p)
            heldout_mrr.append(mrr)
            if mrr > best_mrr:  # strictly better: ties keep the earlier (simpler) weights
                best_mrr, best_epoch = mrr, epoch
                best_flat[...] = params.flat
            line += f" held-out mrr@10 {mrr:.4f}{' *' if best_epoch == epoch else ''}"
        if progress:
            print(f"{line} ({time.perf_counter() - epoch_start:.1f}s)", file=sys.stderr, flush=True)
        if scorer is not None and patience is not None and epoch - best_epoch >= patience \
                and epoch < epochs:
            stopped_early = True
            if progress:
                print(f"{prefix}train: no better held-out mrr@10 for {patience} epochs; "
                      f"stopping, keeping epoch {best_epoch}", file=sys.stderr, flush=True)
            break
    seconds = time.perf_counter() - start
    if best_flat is not None:
        params.flat[...] = best_flat

    config = {
        "layers": [in_features, hidden, out],
        "activation": "relu",
        "output": "l2-normalised",
        "model": "normalize(w0 x + w2 relu(w1 x + b1) + b2)",
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": float(learning_rate),
        "seed": int(seed),
        "optimizer": optimizer,
        "weight_decay": float(weight_decay),
        "init": {"w0": init, "w1": "kaiming-uniform", "w2": "zeros", "biases": "zeros",
                 "b2": "-w0·mean" if init in ("pca", "within") else "zeros"},
        "patience": patience,
        "selection": "best held-out mrr@10" if scorer is not None else "last epoch",
        "loss": loss_fn.config_dict(),
        "n_triplets": int(n),
        "n_texts": int(emb.shape[0]),
    }
    if optimizer == "adam":
        config.update(beta1=ADAM_BETA1, beta2=ADAM_BETA2, eps=ADAM_EPS)
    else:
        config.update(momentum=float(momentum))
    weights = {k: np.ascontiguousarray(p[k]).copy() for k in WEIGHT_KEYS}
    return TrainResult(weights=weights, losses=losses, seconds=seconds, config=config,
                       heldout_mrr=heldout_mrr, chosen_epoch=best_epoch if scorer else None,
                       stopped_early=stopped_early)


class _HeldoutScorer:
    """MRR@10 of the current weights on the held-out split, for choosing the best epoch.

    Projects only the held-out texts (a block of rows at a time: cheap next to an epoch) and
    ranks them with :class:`oxidize.evaluate.HeldoutSplit`, the code that writes
    metrics.json, so the MRR that picks the epoch is the one the eval task reports. Memory
    stays bounded: index arrays for the split, one float64 copy of the held-out rows and a
    similarity block of at most :data:`oxidize.evaluate.SIM_BLOCK` values.
    """

    def __init__(self, emb: np.ndarray, heldout: np.ndarray):
        from oxidize.evaluate import HeldoutSplit

        self.split = HeldoutSplit(heldout)
        self.queries = self.split.n_queries
        self.emb = emb
        self.base_mrr = self._mrr(lambda texts: self.emb[texts])

    def _mrr(self, vectors) -> float:
        from oxidize.evaluate import PRIMARY_METRIC

        return self.split.metrics(vectors)[PRIMARY_METRIC]

    def mrr(self, weights: dict[str, np.ndarray]) -> float:
        return self._mrr(lambda texts: _project_rows(weights, self.emb[texts]))


def loss_and_gradients(weights: dict[str, np.ndarray], xa: np.ndarray, xp: np.ndarray,
                       xn: np.ndarray, margin: float) -> tuple[float, dict[str, np.ndarray]]:
    """The batch loss and its gradient w.r.t. ``w0, w1, b1, w2, b2``, via the training kernels.

    Runs in the weights' dtype (float64 for the finite-difference check in the tests).
    ``xa, xp, xn``: ``(batch, in)`` anchors, positives, negatives. A missing ``w0`` is zero.
    """
    from oxidize import kernels

    dtype = weights["w1"].dtype
    w = _with_w0(weights, dtype)
    x = np.ascontiguousarray(np.concatenate([xa, xp, xn]), dtype=dtype)  # (3b, in)
    b = xa.shape[0]
    hidden, out = w["w1"].shape[0], w["w2"].shape[0]
    _, h, z, z_lin, y, norms, dy, dh = _buffers(3 * b, x.shape[1], hidden, out, dtype)
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    loss = kernels.loss_and_grads(x, b, float(margin), w["w0"], w["w1"], w["b1"], w["w2"],
                                  w["b2"], grads["w0"], grads["w1"], grads["b1"], grads["w2"],
                                  grads["b2"], h, z, z_lin, y, norms, dy, dh)
    return float(loss), grads


def _with_w0(weights: dict[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """Contiguous copies of the weights in ``dtype``; ``w0`` is zero when absent."""
    w = {k: np.ascontiguousarray(weights[k], dtype=dtype) for k in WEIGHT_KEYS if k in weights}
    if "w0" not in w:
        w["w0"] = np.zeros((w["w2"].shape[0], w["w1"].shape[1]), dtype)
    return w


def project(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Apply the projection in NumPy: ``[n, in]`` (or ``[in]``) → unit rows ``[n, out]``.

    ``y = normalize(w0 x + w2 relu(w1 x + b1) + b2)``; weights without ``w0`` (files of
    oxidize 0.1) are the plain MLP.
    """
    w1, b1, w2, b2 = (weights[k] for k in ("w1", "b1", "w2", "b2"))
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] <= _PROJECT_ROWS:
        return _project_rows(weights, x)
    # A block of rows at a time, so that the hidden layer's temporaries stay small.
    out = np.empty((x.shape[0], w2.shape[0]), dtype=np.result_type(w1.dtype, w2.dtype))
    for lo in range(0, x.shape[0], _PROJECT_ROWS):
        out[lo:lo + _PROJECT_ROWS] = _project_rows(weights, x[lo:lo + _PROJECT_ROWS])
    return out


#: Rows per block in :func:`project`.
_PROJECT_ROWS = 2048


def _project_rows(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    w1, b1, w2, b2 = (weights[k] for k in ("w1", "b1", "w2", "b2"))
    x = np.asarray(x, dtype=w1.dtype)
    h = np.maximum(x @ w1.T + b1, 0)  # (n, hidden)
    z = h @ w2.T + b2  # (n, out)
    if weights.get("w0") is not None:
        z = z + x @ weights["w0"].T  # (n, out): the linear path
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    return z / np.maximum(norm, 1e-12)


def _metadata(result: TrainResult) -> dict[str, str]:
    meta = {"format": "oxidize-mlp", "oxidize_version": __version__,
            "layers": result.config.get("layers"), "activation": "relu",
            "output": "l2-normalised"}
    return {METADATA_KEY: json.dumps(meta, sort_keys=True)}


def save_weights(path: Path | str, result: TrainResult) -> None:
    """Write ``path`` (``weights.safetensors``) and ``training.json`` beside it, both atomically.

    The safetensors file holds ``w0, w1, b1, w2, b2`` as float32 and, as metadata, one key
    ``"oxidize"`` with JSON (format, oxidize version, layers): same weights ⇒ same bytes.
    ``training.json`` holds the per-epoch losses, the per-epoch held-out MRR@10 (index 0 =
    the initial weights), the chosen epoch, the config, the seconds and the shapes.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    tensors = {k: np.ascontiguousarray(result.weights[k], dtype=np.float32) for k in WEIGHT_KEYS}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=_metadata(result))
    write_json(path.with_name("training.json"), {
        "losses": [float(v) for v in result.losses],
        "heldout_mrr": [float(v) for v in result.heldout_mrr],
        "chosen_epoch": result.chosen_epoch,
        "stopped_early": bool(result.stopped_early),
        "config": result.config,
        "seconds": round(float(result.seconds), 3),
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        "weights": path.name,
        "oxidize_version": __version__,
    })


def load_weights(path: Path | str) -> dict[str, np.ndarray]:
    """Read ``w0, w1, b1, w2, b2`` (float32) from a file written by :func:`save_weights`.

    A file of oxidize 0.1 has no ``w0`` (no linear path); it reads as ``w0 = 0``.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no weights file; run the projection's train task")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise TrainingError(f"{path}: not a readable safetensors file ({exc}); delete it "
                            f"and rebuild") from exc
    missing = [k for k in WEIGHT_KEYS if k not in tensors and k != "w0"]
    if missing:
        raise TrainingError(f"{path}: missing tensors {', '.join(missing)}; delete it and rebuild")
    w = {k: tensors[k] for k in WEIGHT_KEYS if k in tensors}
    hidden, in_dim = w["w1"].shape if w["w1"].ndim == 2 else (None, None)
    if (w["w1"].ndim != 2 or w["w2"].ndim != 2 or w["b1"].shape != (hidden,)
            or w["w2"].shape[1] != hidden or w["b2"].shape != (w["w2"].shape[0],)
            or ("w0" in w and w["w0"].shape != (w["w2"].shape[0], in_dim))):
        raise TrainingError(f"{path}: inconsistent weight shapes "
                            f"{ {k: v.shape for k, v in w.items()} }; delete it and rebuild")
    if "w0" not in w:
        w["w0"] = np.zeros((w["w2"].shape[0], in_dim), np.float32)
    return w
