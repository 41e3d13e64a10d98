"""How much memory training needs and how much this process may use: the recipe checks a
projection against these before anything is allocated (oxidize/recipe/schema.py)."""

from __future__ import annotations

import os
from pathlib import Path


def physical_memory() -> int | None:
    """Bytes this process may use: the machine's memory, lowered by an address-space or
    data limit (``ulimit -v``/``-d``) and a cgroup's ``memory.max``; ``None`` where nothing
    says (no check then)."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import resource

        for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
            soft = resource.getrlimit(which)[0]
            if soft != resource.RLIM_INFINITY:
                limits.append(soft)
    except (ImportError, AttributeError, ValueError, OSError):
        pass
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            limits.append(int(text))
    except OSError:
        pass
    limits = [n for n in limits if n > 0]
    return min(limits) if limits else None


def training_memory(in_dim: int, hidden: int, out_dim: int) -> int:
    """Bytes to train the MLP: parameters × 4 bytes (float32) × 4 copies.

    The copies are the weights, their gradients and Adam's two moment estimates.
    """
    return (in_dim * hidden + hidden + hidden * out_dim + out_dim) * 4 * 4


def batch_memory(in_dim: int, hidden: int, out_dim: int, batch_size: int, in_batch: bool = False) -> int:
    """Bytes of the trainer's work buffers for one minibatch (oxidize.train.params.work_buffers):
    ``3 × batch`` stacked rows of the input, the hidden layer and its gradient, four
    output-sized arrays and the norms, float32; with the in-batch loss also its
    ``batch × 2·batch`` similarity matrix."""
    rows = 3 * batch_size
    return rows * (in_dim + 2 * hidden + 4 * out_dim + 1) * 4 + (2 * batch_size * batch_size * 4 if in_batch else 0)
