"""The trainer's memory: the weights' start, one flat parameter vector with a view per weight,
and the work buffers of a minibatch.

Why flat: the optimiser (Adam, weight decay, the start penalty) walks one contiguous vector
in a single jitted loop, while the forward and backward passes use the per-weight views —
the same memory, no copies. ``oxidize.recipe.batch_memory`` counts these buffers before a
build starts.
"""

from __future__ import annotations

import math

import numpy as np


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


#: Order of the weights in the flat parameter vector: matrices first (weight decay).
FLAT_ORDER = ("w1", "w2", "w0", "b1", "b2")


class FlatParams:
    """One flat vector laid out ``[w1, w2, w0, b1, b2]`` with C-contiguous views per weight."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype):
        sizes = {k: int(np.prod(shapes[k])) for k in FLAT_ORDER}
        self.flat = np.zeros(sum(sizes.values()), dtype=dtype)
        self.views: dict[str, np.ndarray] = {}
        offset = 0
        for k in FLAT_ORDER:
            self.views[k] = self.flat[offset:offset + sizes[k]].reshape(shapes[k])
            offset += sizes[k]
        # weight decay applies to the matrices only
        self.n_decay = sizes["w1"] + sizes["w2"] + sizes["w0"]


def work_buffers(rows: int, in_dim: int, hidden: int, out: int, dtype):
    """Work buffers ``x, h, z, z_lin, y, norms, dy, dh`` for ``rows`` stacked rows."""
    return (np.zeros((rows, in_dim), dtype), np.zeros((rows, hidden), dtype),
            np.zeros((rows, out), dtype), np.zeros((rows, out), dtype),
            np.zeros((rows, out), dtype), np.zeros(rows, dtype),
            np.zeros((rows, out), dtype), np.zeros((rows, hidden), dtype))
