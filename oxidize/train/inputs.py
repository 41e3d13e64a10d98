"""Checking what the trainer is given, and saying what is wrong in the user's terms.

Every function raises :class:`~oxidize.errors.TrainingError` with the projection's label,
never a numpy error from deep inside the loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oxidize.errors import TrainingError
from oxidize.train.start import _chunk_bounds


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
