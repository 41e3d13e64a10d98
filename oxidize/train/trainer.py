"""Training a projection: validation, seeded initialisation, the epoch loop, NaN checks, saving.

The arithmetic lives in :mod:`oxidize.train.kernels` (Numba, one jitted call per epoch); this
module is the part a user meets: it checks the inputs and says what is wrong in their
terms, draws the initial weights and the minibatch order from one seeded NumPy generator
(so a seed means the same weights, byte for byte, on the same machine), reports a loss
line per epoch, stops with a :class:`~oxidize.errors.TrainingError` naming the projection
and the epoch when the loss stops being finite, and writes the results atomically.

Model: ``h = relu(W1 x + b1)``, ``z = W0 x + W2 h + b2``, ``y = z / ||z||`` with
``w0 [out, in]``, ``w1 [hidden, in]``, ``b1 [hidden]``, ``w2 [out, hidden]``, ``b2 [out]``,
float32; loss :class:`oxidize.losses.TripletLoss`.

Why a linear path plus a residual ("never worse than the base"): an MLP trained
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

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oxidize.errors import TrainingError
from oxidize.losses import InBatchLoss, TripletLoss
from oxidize.evaluate import HeldoutScorer, clearly_better, paired_z
from oxidize.train.early_stop import EarlyStop
from oxidize.train.record import save_weights  # noqa: F401 - imported from here too
from oxidize.projection import WEIGHT_KEYS, load_weights, project  # noqa: F401 - load_weights, project: public here
from oxidize.train import blas
from oxidize.train.inputs import _check_heldout, _check_positive_int, _fail, _validate
from oxidize.train.params import FlatParams, init_weights, work_buffers
from oxidize.train.start import DEFAULT_INIT, INITS, choose_start, linear_init

__all__ = ["TrainResult", "train_projection", "save_weights", "load_weights", "project",
           "loss_and_gradients", "linear_init", "INITS", "DEFAULT_INIT"]

LOSSES = ("triplet", "in_batch")
#: The in-batch loss's temperature (docs/benchmarks.md, "Quality on later data", measured it).
DEFAULT_TEMPERATURE = 0.1
#: Epochs without a better held-out MRR@10 before training stops (``None``: never stop).
DEFAULT_PATIENCE = 3
#: A trained epoch replaces the start map only when it wins on validation by this many
#: standard errors (:func:`oxidize.evaluate.clearly_better`). "Any higher MRR" kept noise:
#: built on patina-dev.db cut at seven moments, such epochs ranked later commits 0.97× the
#: base where their start held 1.00×; with 2 errors, 1.00× — and later files 1.16× against
#: the start's 1.14× (docs/benchmarks.md, "Quality on later data").
EPOCH_CLEAR_Z = 2.0
#: The start maps in words, for the progress lines.
START_WORDS = {"within": "within-group whitening", "pca": "principal components",
               "identity": "the base embedding itself", "none": "no linear path"}
OPTIMIZERS = ("adam", "sgd")
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


@dataclass
class TrainResult:
    """What :func:`train_projection` returns.

    Attributes:
        weights: ``w0 [out, in]``, ``w1 [hidden, in]``, ``b1 [hidden]``, ``w2 [out, hidden]``,
            ``b2 [out]``, float32 — those of the chosen epoch.
        losses: mean training loss of each epoch run (over its minibatches, before each update).
        seconds: wall-clock training time (not part of any fingerprint).
        config: everything that determined the weights (sizes, hyperparameters, loss, seed).
        heldout_mrr: validation MRR@10 after each epoch, index 0 = the start map (empty
            when there was no validation split): what chose the epoch and the start.
        test_mrr: test MRR@10 after each epoch (only with ``report``), for the record.
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
    #: Why training stopped before its epochs and patience ran out (oxidize/train/early_stop.py).
    stop_note: str = ""
    test_mrr: list[float] = field(default_factory=list)


def train_projection(embeddings: np.ndarray, triplets: np.ndarray, *, hidden: int, out: int,
                     epochs: int, batch_size: int, learning_rate: float, margin: float,
                     seed: int, optimizer: str = "adam", momentum: float = 0.9,
                     weight_decay: float = 0.0, label: str = "", progress: bool = True,
                     in_dim: int | None = None, init: str = DEFAULT_INIT,
                     heldout: np.ndarray | None = None,
                     patience: int | None = DEFAULT_PATIENCE,
                     start_penalty: float = 0.0, loss: str = "triplet",
                     temperature: float = DEFAULT_TEMPERATURE,
                     report: np.ndarray | None = None,
                     reference_start: str = DEFAULT_INIT) -> TrainResult:
    """Train the projection on ``triplets`` (rows of ``embeddings``) and return the result.

    Args:
        embeddings: float32 ``[n_texts, in]``, the L2-normalised text embeddings.
        triplets: integer ``[n, 3]``: indices of (anchor, positive, negative) into ``embeddings``.
        hidden, out: layer sizes. epochs, batch_size: the schedule (the last minibatch of an
            epoch may be smaller).
        learning_rate, margin, seed: as in the recipe's ``training:`` block.
        loss: ``"triplet"`` (:class:`~oxidize.losses.TripletLoss`, with ``margin``) or
            ``"in_batch"`` (:class:`~oxidize.losses.InBatchLoss`, with ``temperature``).
        optimizer: ``"adam"`` (β1 0.9, β2 0.999, eps 1e-8, bias-corrected) or ``"sgd"``
            (with ``momentum``). weight_decay: L2 coefficient added to the gradient of the
            weight matrices (not the biases).
        label: the projection's name for messages (``"example:semantic"``).
        progress: print one loss line per epoch to stderr.
        in_dim: if given (the recipe's ``layers[0]``), the embeddings' dimension must match.
        init: how the linear path starts, one of :data:`INITS` (see :func:`linear_init`);
            ``"auto"`` fits each candidate start (within, pca, and identity when
            ``out == in``) and keeps ``reference_start`` unless another is clearly better
            on ``heldout`` (the validation part; :func:`choose_start`).
        reference_start: the start ``init: auto`` keeps by default — the pair type's
            (:data:`oxidize.pairs.REFERENCE_STARTS`).
        heldout: optional int ``[m, 2]`` (query, relevant) pairs of held-out texts (rows of
            ``embeddings`` that no triplet uses). With it, the held-out MRR@10 is measured
            before training and after every epoch, and the best weights are returned.
        patience: with ``heldout``, stop after this many epochs without a better MRR@10
            (``None``: run every epoch, still return the best).
        report: optional int ``[m, 2]`` pairs of the **test** part: scored after every
            epoch for ``training.json`` and the picture only — never used for any choice.
        start_penalty: an L2 penalty ``λ/2 ||W - W_start||²`` on the weight matrices'
            distance from where training started (the start map, a zero ``w2``): training
            then keeps what the start knows and adds only what the triplets insist on.

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
        ("start_penalty", start_penalty, lambda v: v >= 0, "a number >= 0"),
        ("temperature", temperature, lambda v: v > 0, "a positive number"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(value) or not ok(value):
            raise _fail(label, f"{name} must be {want}, got {value!r}")
    emb, trips = _validate(embeddings, triplets, in_dim, label)
    held = _check_heldout(heldout, emb.shape[0], label)
    test = _check_heldout(report, emb.shape[0], label)

    from oxidize.train import kernels  # numba: imported only when training

    fixed = blas.blas_threads()
    # Stacked rows per minibatch: (anchor, positive[, negative]) per item, full and last batch.
    items = (min(batch_size, len(trips)), len(trips) % batch_size or batch_size)
    rows = tuple(k * b for k in (2, 3) for b in items if b)
    if fixed is None and blas.threads_change_bits(emb.shape[1], hidden, out, rows):
        # Where this BLAS splits a product differently with 1 and all threads (other last
        # bits), a count chosen by timing would make the weights depend on the machine's
        # load. Keep BLAS's own, fixed count instead: same machine, same bytes.
        fixed = 0
    with blas.BlasThreads(fixed) as threads:
        return _train(threads, emb, trips, held, test, kernels, hidden=hidden, out=out, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, margin=margin,
                      seed=seed, optimizer=optimizer, momentum=momentum,
                      weight_decay=weight_decay, label=label, progress=progress, init=init,
                      patience=patience, start_penalty=start_penalty, loss=loss,
                      temperature=temperature, reference_start=reference_start)


def _train(threads_ctl: blas.BlasThreads, emb, trips, held, test, kernels, *, hidden, out, epochs, batch_size, learning_rate,
           margin, seed, optimizer, momentum, weight_decay, label, progress, init,
           patience, start_penalty, loss, temperature, reference_start) -> TrainResult:
    """The body of :func:`train_projection` on validated inputs."""
    in_features = emb.shape[1]
    n = trips.shape[0]
    loss_fn, loss_kind, loss_param = _loss(kernels, loss, margin, temperature)
    rng = np.random.default_rng(seed)
    params = FlatParams({"w1": (hidden, in_features), "b1": (hidden,), "w2": (out, hidden),
                          "b2": (out,), "w0": (out, in_features)}, np.float32)
    for key, value in init_weights(in_features, hidden, out, rng).items():
        params.views[key][...] = value
    scorer = HeldoutScorer(emb, held) if held is not None else None
    if scorer is not None and not scorer.queries:
        scorer = None
    init, start_scores = choose_start(emb, trips, out, init, scorer, params.views, label,
                                      reference_start)
    # Decay toward the start: d1 p + d2 (p - s) = (d1 + d2) (p - d2 s / (d1 + d2)).
    decay = float(weight_decay) + float(start_penalty)
    anchor = (params.flat * np.float32(start_penalty / decay) if start_penalty > 0
              else np.zeros(0, params.flat.dtype))  # empty: plain decay, no extra read
    grads = FlatParams({k: v.shape for k, v in params.views.items()}, np.float32)
    state1 = np.zeros_like(params.flat)
    state2 = np.zeros_like(params.flat)
    x, h, z, z_lin, y, norms, dy, dh = work_buffers(3 * min(batch_size, n), in_features, hidden,
                                                    out, np.float32)
    n_batches = (n + batch_size - 1) // batch_size
    sizes = np.full(n_batches, batch_size, dtype=np.float64)
    sizes[-1] = n - batch_size * (n_batches - 1)
    batch_losses = np.zeros(n_batches, dtype=np.float64)
    segment = max(1, blas.SEGMENT_TRIPLETS // batch_size)  # minibatches per segment
    probe_segment = max(1, min(blas.PROBE_TRIPLETS, blas.SEGMENT_TRIPLETS) // batch_size)
    opt_code = kernels.ADAM if optimizer == "adam" else kernels.SGD
    p, g = params.views, grads.views
    prefix = f"{label} " if label else ""

    heldout_mrr: list[float] = []
    reporter = HeldoutScorer(emb, test) if test is not None and len(test) else None
    test_mrr: list[float] = [reporter.mrr(p)] if reporter is not None else []
    best_flat, best_epoch, best_mrr = None, None, -math.inf
    if scorer is not None:
        best_mrr, start_ranks = scorer.score(p)
        heldout_mrr.append(best_mrr)
        best_flat, best_epoch = params.flat.copy(), 0
        seen_epoch, seen_mrr = 0, best_mrr  # the best epoch by MRR alone: for patience
        if progress:
            print(f"{prefix}train: epoch 0/{epochs} (the start map, {START_WORDS[init]}): "
                  f"validation mrr@10 {best_mrr:.4f}; the base embedding scores "
                  f"{scorer.base_mrr:.4f}", file=sys.stderr, flush=True)

    def run(order_part, losses_part, step):
        """Train the minibatches of ``order_part`` (one jitted call); ``(done, step)``."""
        return kernels.train_epoch(
            emb, trips, order_part, batch_size, loss_kind, loss_param,
            params.flat, anchor, p["w0"], p["w1"], p["b1"], p["w2"], p["b2"],
            grads.flat, g["w0"], g["w1"], g["b1"], g["w2"], g["b2"], state1, state2,
            x, h, z, z_lin, y, norms, dy, dh,
            opt_code, float(learning_rate), ADAM_BETA1, ADAM_BETA2, ADAM_EPS,
            float(momentum), decay, params.n_decay, step, losses_part)

    # A call with no minibatch loads the kernels from Numba's cache (~0.5 s in a fresh
    # process), so that the first segment — and the time estimate — measures training only.
    run(np.zeros(0, dtype=np.int64), batch_losses[:0], 0)
    losses: list[float] = []
    stopped_early = False
    stopper = EarlyStop(start_ranks, best_mrr, n_batches, batch_size) if scorer is not None else None
    step = 0
    kernel_seconds = 0.0  # in the training kernel (not in checks): what an epoch costs
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        order = rng.permutation(n).astype(np.int64)
        done = 0
        # The epoch's minibatches in segments (same batches, same order: same bytes), so
        # that the BLAS thread count can follow the machine's load.
        while done < n_batches:
            threads = threads_ctl.next()
            # Short segments when probing, and first of all: the time estimate comes from it.
            short = threads_ctl.probing or (epoch == 1 and done == 0)
            todo = min(n_batches - done, probe_segment if short else segment)
            mark = stopper.next_mark(epoch, done) if stopper is not None else None
            if mark is not None:  # end the segment at the check: same checks on every machine
                todo = min(todo, mark - done)
            lo, hi = done * batch_size, min(n, (done + todo) * batch_size)
            seg_start = time.perf_counter()
            seg_done, step = run(order[lo:hi], batch_losses[done:done + todo], step)
            seg_seconds = time.perf_counter() - seg_start
            kernel_seconds += seg_seconds
            threads_ctl.record(threads, hi - lo, seg_seconds)
            if progress and epoch == 1 and done == 0 and seg_done < n_batches:
                per_epoch = seg_seconds * n / max(hi - lo, 1)
                print(f"{prefix}train: about {_duration(per_epoch)} per epoch, so up to "
                      f"{_duration(per_epoch * epochs)} for {epochs} epochs (estimated from the "
                      f"first {hi - lo:,} triplets)", file=sys.stderr, flush=True)
            before, done = done, done + seg_done
            if seg_done < todo:
                break
            if stopper is not None and done < n_batches and stopper.due(epoch, before, done):
                mrr, ranks = scorer.score(p)  # reads the weights only: no change to the bytes
                if stopper.check(ranks, mrr, epoch, done):
                    break
        if stopper is not None and stopper.stopped_at is not None and done < n_batches:
            losses.append(float(np.dot(batch_losses[:done], sizes[:done]) / sizes[:done].sum()))
            heldout_mrr.append(stopper.below[-1])
            if reporter is not None:
                test_mrr.append(reporter.mrr(p))
            stopped_early = True
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
        if reporter is not None:
            test_mrr.append(reporter.mrr(p))
        if scorer is not None:
            mrr, ranks = scorer.score(p)
            heldout_mrr.append(mrr)
            if mrr > seen_mrr:
                seen_epoch, seen_mrr = epoch, mrr
            # Kept only when clearly above the start map (evaluate.clearly_better), and
            # strictly better than the kept one: ties keep the earlier (simpler) weights.
            if mrr > best_mrr and clearly_better(ranks, start_ranks, EPOCH_CLEAR_Z):
                best_mrr, best_epoch = mrr, epoch
                best_flat[...] = params.flat
            note = (" (best so far)" if best_epoch == epoch else
                    " (not clearly above the start map)" if seen_epoch == epoch else "")
            above = paired_z(ranks, start_ranks)  # (not `z`: that name is a work buffer here)
            line += f" validation mrr@10 {mrr:.4f} (z {above:+.1f}){note}"
            stop = stopper.check(ranks, mrr, epoch, n_batches)
            if not stop and epoch < epochs:  # hovering under the bar (oxidize/train/early_stop.py)
                stop = stopper.epoch_end(above, epoch, best_epoch != 0, n_batches)
            if stop and epoch < epochs:
                stopped_early = True
        if progress:
            print(f"{line} ({time.perf_counter() - epoch_start:.1f}s)", file=sys.stderr, flush=True)
        if stopped_early:
            break
        if scorer is not None and patience is not None and epoch - seen_epoch >= patience \
                and epoch < epochs:
            stopped_early = True
            if progress:
                print(f"{prefix}train: no better validation mrr@10 for {patience} epochs; "
                      f"stopping, keeping epoch {best_epoch}", file=sys.stderr, flush=True)
            break
    seconds = time.perf_counter() - start
    stop_note = ""
    if stopper is not None and stopper.stopped_at is not None:
        stop_note = stopper.words(n_batches, epochs, kernel_seconds)
        if progress:
            print(f"{prefix}train: {stop_note}; keeping epoch {best_epoch}", file=sys.stderr, flush=True)
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
        "start_penalty": float(start_penalty),
        "start_scores": start_scores,
        "init": {"w0": init, "w1": "kaiming-uniform", "w2": "zeros", "biases": "zeros",
                 "b2": "-w0·mean" if init in ("pca", "within") else "zeros"},
        "patience": patience,
        "selection": (f"best validation mrr@10 of the epochs clearly above the start map "
                      f"(z {EPOCH_CLEAR_Z})" if scorer is not None else "last epoch"),
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
                       heldout_mrr=heldout_mrr, test_mrr=test_mrr,
                       chosen_epoch=best_epoch if scorer else None,
                       stopped_early=stopped_early, stop_note=stop_note)


def _duration(seconds: float) -> str:
    """A time estimate in the unit a reader expects (``0.4s``, ``12s``, ``3 min``, ``1.5 h``)."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _loss(kernels, loss: str, margin: float, temperature: float):
    """The loss object (for training.json) and its kernel code and parameter."""
    if loss == "triplet":
        return TripletLoss(margin), kernels.TRIPLET, float(margin)
    if loss == "in_batch":
        return InBatchLoss(temperature), kernels.IN_BATCH, 1.0 / float(temperature)
    raise TrainingError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def loss_and_gradients(weights: dict[str, np.ndarray], xa: np.ndarray, xp: np.ndarray,
                       xn: np.ndarray, margin: float, loss: str = "triplet",
                       temperature: float = DEFAULT_TEMPERATURE) -> tuple[float, dict[str, np.ndarray]]:
    """The batch loss and its gradient w.r.t. ``w0, w1, b1, w2, b2``, via the training kernels.

    Runs in the weights' dtype (float64 for the finite-difference check in the tests).
    ``xa, xp, xn``: ``(batch, in)`` anchors, positives, negatives. A missing ``w0`` is zero.
    """
    from oxidize.train import kernels

    dtype = weights["w1"].dtype
    w = _with_w0(weights, dtype)
    x = np.ascontiguousarray(np.concatenate([xa, xp, xn]), dtype=dtype)  # (3b, in)
    b = xa.shape[0]
    hidden, out = w["w1"].shape[0], w["w2"].shape[0]
    _, h, z, z_lin, y, norms, dy, dh = work_buffers(3 * b, x.shape[1], hidden, out, dtype)
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    _, loss_kind, loss_param = _loss(kernels, loss, margin, temperature)
    value = kernels.loss_and_grads(x, b, loss_kind, loss_param, w["w0"], w["w1"], w["b1"], w["w2"],
                                  w["b2"], grads["w0"], grads["w1"], grads["b1"], grads["w2"],
                                  grads["b2"], h, z, z_lin, y, norms, dy, dh)
    return float(value), grads


def _with_w0(weights: dict[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """Contiguous copies of the weights in ``dtype``; ``w0`` is zero when absent."""
    w = {k: np.ascontiguousarray(weights[k], dtype=dtype) for k in WEIGHT_KEYS if k in weights}
    if "w0" not in w:
        w["w0"] = np.zeros((w["w2"].shape[0], w["w1"].shape[1]), dtype)
    return w
