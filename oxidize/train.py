"""Training a projection: validation, seeded initialisation, the epoch loop, NaN checks, saving.

The arithmetic lives in :mod:`oxidize.kernels` (Numba, one jitted call per epoch); this
module is the part a user meets: it checks the inputs and says what is wrong in their
terms, draws the initial weights and the minibatch order from one seeded NumPy generator
(so a seed means the same weights, byte for byte, on the same machine), reports a loss
line per epoch, stops with a :class:`~oxidize.errors.TrainingError` naming the projection
and the epoch when the loss stops being finite, and writes the results atomically.

Model: ``h = relu(W1 x + b1)``, ``z = W2 h + b2``, ``y = z / ||z||`` with ``w1 [hidden, in]``,
``b1 [hidden]``, ``w2 [out, hidden]``, ``b2 [out]``, float32; loss
:class:`oxidize.losses.TripletLoss`.

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

WEIGHT_KEYS = ("w1", "b1", "w2", "b2")
OPTIMIZERS = ("adam", "sgd")
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8
#: The single safetensors metadata key; its value is canonical JSON. (safetensors stores
#: metadata in a hash map whose order changes from process to process, so several keys
#: would make the file's bytes differ between identical builds.)
METADATA_KEY = "oxidize"


@dataclass
class TrainResult:
    """What :func:`train_projection` returns.

    Attributes:
        weights: ``w1 [hidden, in]``, ``b1 [hidden]``, ``w2 [out, hidden]``, ``b2 [out]``, float32.
        losses: mean training loss of each epoch (over its minibatches, before each update).
        seconds: wall-clock training time (not part of any fingerprint).
        config: everything that determined the weights (sizes, hyperparameters, loss, seed).
    """

    weights: dict[str, np.ndarray]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


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
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise _fail(label, f"embeddings row {row} contains NaN or infinity "
                           f"({int((~finite).sum())} bad rows); rebuild the embeddings")
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
    """Kaiming-uniform ``w1`` (for the ReLU), Xavier-uniform ``w2``, zero biases.

    ``w1 ~ U(±sqrt(6 / in))``, ``w2 ~ U(±sqrt(6 / (hidden + out)))``; drawn in float64 by
    ``rng`` and then cast, so the values depend only on the generator's state.
    """
    bound1 = math.sqrt(6.0 / in_dim)
    bound2 = math.sqrt(6.0 / (hidden + out))
    w1 = rng.uniform(-bound1, bound1, size=(hidden, in_dim)).astype(dtype)
    w2 = rng.uniform(-bound2, bound2, size=(out, hidden)).astype(dtype)
    return {"w1": w1, "b1": np.zeros(hidden, dtype), "w2": w2, "b2": np.zeros(out, dtype)}


class _FlatParams:
    """One flat vector laid out ``[w1, w2, b1, b2]`` with C-contiguous views per weight."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype):
        order = ("w1", "w2", "b1", "b2")
        sizes = {k: int(np.prod(shapes[k])) for k in order}
        self.flat = np.zeros(sum(sizes.values()), dtype=dtype)
        self.views: dict[str, np.ndarray] = {}
        offset = 0
        for k in order:
            self.views[k] = self.flat[offset:offset + sizes[k]].reshape(shapes[k])
            offset += sizes[k]
        self.n_decay = sizes["w1"] + sizes["w2"]  # weight decay applies to the matrices only


def _buffers(rows: int, in_dim: int, hidden: int, out: int, dtype):
    return (np.zeros((rows, in_dim), dtype), np.zeros((rows, hidden), dtype),
            np.zeros((rows, out), dtype), np.zeros((rows, out), dtype),
            np.zeros(rows, dtype), np.zeros((rows, out), dtype), np.zeros((rows, hidden), dtype))


def train_projection(embeddings: np.ndarray, triplets: np.ndarray, *, hidden: int, out: int,
                     epochs: int, batch_size: int, learning_rate: float, margin: float,
                     seed: int, optimizer: str = "adam", momentum: float = 0.9,
                     weight_decay: float = 0.0, label: str = "", progress: bool = True,
                     in_dim: int | None = None) -> TrainResult:
    """Train the projection MLP on ``triplets`` (rows of ``embeddings``) and return the result.

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

    Raises:
        TrainingError: bad inputs or hyperparameters, or a loss that became NaN/infinite.
    """
    hidden = _check_positive_int(label, "hidden", hidden)
    out = _check_positive_int(label, "out", out)
    epochs = _check_positive_int(label, "epochs", epochs)
    batch_size = _check_positive_int(label, "batch_size", batch_size)
    if optimizer not in OPTIMIZERS:
        raise _fail(label, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
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
    in_features = emb.shape[1]
    n = trips.shape[0]
    loss_fn = TripletLoss(margin)

    from oxidize import kernels  # numba: imported only when training

    rng = np.random.default_rng(seed)
    params = _FlatParams({"w1": (hidden, in_features), "b1": (hidden,),
                          "w2": (out, hidden), "b2": (out,)}, np.float32)
    for key, value in init_weights(in_features, hidden, out, rng).items():
        params.views[key][...] = value
    grads = _FlatParams({k: v.shape for k, v in params.views.items()}, np.float32)
    state1 = np.zeros_like(params.flat)
    state2 = np.zeros_like(params.flat)
    x, h, z, y, norms, dy, dh = _buffers(3 * min(batch_size, n), in_features, hidden, out,
                                         np.float32)
    n_batches = (n + batch_size - 1) // batch_size
    sizes = np.full(n_batches, batch_size, dtype=np.float64)
    sizes[-1] = n - batch_size * (n_batches - 1)
    batch_losses = np.zeros(n_batches, dtype=np.float64)
    opt_code = kernels.ADAM if optimizer == "adam" else kernels.SGD
    p, g = params.views, grads.views

    losses: list[float] = []
    step = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        order = rng.permutation(n).astype(np.int64)
        done, step = kernels.train_epoch(
            emb, trips, order, batch_size, float(margin),
            params.flat, p["w1"], p["b1"], p["w2"], p["b2"],
            grads.flat, g["w1"], g["b1"], g["w2"], g["b2"], state1, state2,
            x, h, z, y, norms, dy, dh,
            opt_code, float(learning_rate), ADAM_BETA1, ADAM_BETA2, ADAM_EPS,
            float(momentum), float(weight_decay), params.n_decay, step, batch_losses)
        if done < n_batches:
            raise _fail(label, f"training diverged in epoch {epoch}/{epochs} (minibatch "
                               f"{done + 1}/{n_batches}): the loss became "
                               f"{batch_losses[done]}; lower learning_rate (now {learning_rate})")
        loss = float(np.dot(batch_losses, sizes) / n)
        if not math.isfinite(loss) or not np.isfinite(params.flat).all():
            raise _fail(label, f"training diverged in epoch {epoch}/{epochs}: the loss or the "
                               f"weights are not finite; lower learning_rate (now {learning_rate})")
        losses.append(loss)
        if progress:
            print(f"{label + ' ' if label else ''}train: epoch {epoch}/{epochs} loss {loss:.4f} "
                  f"({time.perf_counter() - epoch_start:.1f}s)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start

    config = {
        "layers": [in_features, hidden, out],
        "activation": "relu",
        "output": "l2-normalised",
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": float(learning_rate),
        "seed": int(seed),
        "optimizer": optimizer,
        "weight_decay": float(weight_decay),
        "init": {"w1": "kaiming-uniform", "w2": "xavier-uniform", "biases": "zeros"},
        "loss": loss_fn.config_dict(),
        "n_triplets": int(n),
        "n_texts": int(emb.shape[0]),
    }
    if optimizer == "adam":
        config.update(beta1=ADAM_BETA1, beta2=ADAM_BETA2, eps=ADAM_EPS)
    else:
        config.update(momentum=float(momentum))
    weights = {k: np.ascontiguousarray(p[k]).copy() for k in WEIGHT_KEYS}
    return TrainResult(weights=weights, losses=losses, seconds=seconds, config=config)


def loss_and_gradients(weights: dict[str, np.ndarray], xa: np.ndarray, xp: np.ndarray,
                       xn: np.ndarray, margin: float) -> tuple[float, dict[str, np.ndarray]]:
    """The batch loss and its gradient w.r.t. ``w1, b1, w2, b2``, via the training kernels.

    Runs in the weights' dtype (float64 for the finite-difference check in the tests).
    ``xa, xp, xn``: ``(batch, in)`` anchors, positives, negatives.
    """
    from oxidize import kernels

    dtype = weights["w1"].dtype
    w = {k: np.ascontiguousarray(weights[k], dtype=dtype) for k in WEIGHT_KEYS}
    x = np.ascontiguousarray(np.concatenate([xa, xp, xn]), dtype=dtype)  # (3b, in)
    b = xa.shape[0]
    hidden, out = w["w1"].shape[0], w["w2"].shape[0]
    _, h, z, y, norms, dy, dh = _buffers(3 * b, x.shape[1], hidden, out, dtype)
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    loss = kernels.loss_and_grads(x, b, float(margin), w["w1"], w["b1"], w["w2"], w["b2"],
                                  grads["w1"], grads["b1"], grads["w2"], grads["b2"],
                                  h, z, y, norms, dy, dh)
    return float(loss), grads


def project(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Apply the trained projection in NumPy: ``[n, in]`` (or ``[in]``) → unit rows ``[n, out]``."""
    w1, b1, w2, b2 = (weights[k] for k in WEIGHT_KEYS)
    x = np.asarray(x, dtype=w1.dtype)
    h = np.maximum(x @ w1.T + b1, 0)  # (n, hidden)
    z = h @ w2.T + b2  # (n, out)
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    return z / np.maximum(norm, 1e-12)


def _metadata(result: TrainResult) -> dict[str, str]:
    meta = {"format": "oxidize-mlp", "oxidize_version": __version__,
            "layers": result.config.get("layers"), "activation": "relu",
            "output": "l2-normalised"}
    return {METADATA_KEY: json.dumps(meta, sort_keys=True)}


def save_weights(path: Path | str, result: TrainResult) -> None:
    """Write ``path`` (``weights.safetensors``) and ``training.json`` beside it, both atomically.

    The safetensors file holds ``w1, b1, w2, b2`` as float32 and, as metadata, one key
    ``"oxidize"`` with JSON (format, oxidize version, layers): same weights ⇒ same bytes.
    ``training.json`` holds the per-epoch losses, the config, the seconds and the shapes.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    tensors = {k: np.ascontiguousarray(result.weights[k], dtype=np.float32) for k in WEIGHT_KEYS}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=_metadata(result))
    write_json(path.with_name("training.json"), {
        "losses": [float(v) for v in result.losses],
        "config": result.config,
        "seconds": round(float(result.seconds), 3),
        "shapes": {k: list(v.shape) for k, v in tensors.items()},
        "weights": path.name,
        "oxidize_version": __version__,
    })


def load_weights(path: Path | str) -> dict[str, np.ndarray]:
    """Read ``w1, b1, w2, b2`` (float32) from a file written by :func:`save_weights`."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no weights file; run the projection's train task")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise TrainingError(f"{path}: not a readable safetensors file ({exc}); delete it "
                            f"and rebuild") from exc
    missing = [k for k in WEIGHT_KEYS if k not in tensors]
    if missing:
        raise TrainingError(f"{path}: missing tensors {', '.join(missing)}; delete it and rebuild")
    w = {k: tensors[k] for k in WEIGHT_KEYS}
    hidden, in_dim = w["w1"].shape if w["w1"].ndim == 2 else (None, None)
    if (w["w1"].ndim != 2 or w["w2"].ndim != 2 or w["b1"].shape != (hidden,)
            or w["w2"].shape[1] != hidden or w["b2"].shape != (w["w2"].shape[0],)):
        raise TrainingError(f"{path}: inconsistent weight shapes "
                            f"{ {k: v.shape for k, v in w.items()} }; delete it and rebuild")
    return w
