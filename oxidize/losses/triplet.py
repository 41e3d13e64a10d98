"""The triplet margin loss on cosine distance, the loss every oxidize projection trains with.

It lives in its own file (one loss per file, like sentence-transformers' ``losses/``), with
the formula in the docstring and the math written on plain arrays, so the same loss can be
checked against cached vectors, and so the jitted training kernel
(:func:`oxidize.train.kernels.triplet_loss_grad`) has a reference to be tested against.

Importing this module is light (no numpy at import time): ``config_dict()`` may be read
while doit only loads tasks.
"""

from __future__ import annotations

from typing import Any


class TripletLoss:
    r"""Hinge on the cosine-distance gap between a positive and a negative, averaged over a batch.

    .. math::

        L = \frac{1}{B} \sum_{i=1}^{B} \max\bigl(0,\; d(a_i, p_i) - d(a_i, n_i) + m\bigr),
        \qquad d(u, v) = 1 - u \cdot v

    where :math:`a_i, p_i, n_i` are the L2-normalised projected anchor, positive and negative
    of triplet :math:`i`, so :math:`d` is the cosine distance. A triplet stops contributing
    once its negative is at least ``margin`` farther from the anchor than its positive.

    Args:
        margin: how much farther (in cosine distance, 0..2) the negative must be from the
            anchor than the positive before the triplet counts as learned. patina uses 0.2.

    Requirements:
        The inputs must already be L2-normalised (the MLP's last step does this); the
        gradient returned is with respect to those normalised vectors.

    Inputs:
        +------------------------+--------------------+-------------------------------+
        | Input                  | Shape / dtype      | Meaning                       |
        +========================+====================+===============================+
        | ``ya`` (anchors)       | ``(batch, dim)``   | projected anchors, unit rows  |
        | ``yp`` (positives)     | ``(batch, dim)``   | projected positives           |
        | ``yn`` (negatives)     | ``(batch, dim)``   | projected negatives           |
        +------------------------+--------------------+-------------------------------+

    Relations:
        This is the only loss today. A loss that uses the other positives of a batch as
        negatives (MultipleNegativesRanking-style) would be a sibling file in
        ``oxidize/losses/``; the triplet loss is the right choice when the pair generator
        already chooses a negative for every anchor.

    Example:
        >>> import numpy as np
        >>> loss = TripletLoss(margin=0.2)
        >>> ya = np.array([[1.0, 0.0]]); yp = np.array([[1.0, 0.0]]); yn = np.array([[0.0, 1.0]])
        >>> value, dya, dyp, dyn = loss.compute_loss(ya, yp, yn)
        >>> float(value)  # d(a,p)=0, d(a,n)=1: the gap 1 exceeds the margin, nothing to learn
        0.0
        >>> loss.config_dict()
        {'loss': 'TripletLoss', 'distance': 'cosine', 'margin': 0.2}
    """

    name = "TripletLoss"
    distance = "cosine"

    def __init__(self, margin: float = 0.2):
        self.margin = float(margin)

    def compute_loss(self, ya, yp, yn):
        """Return ``(loss, dya, dyp, dyn)``: the batch-mean loss and its gradient per input.

        Works on any float dtype; the gradients have the inputs' shape and dtype. At the
        hinge itself (gap exactly 0) the triplet is treated as inactive (sub-gradient 0).
        """
        import numpy as np

        ya = np.asarray(ya)  # (batch, dim)
        yp = np.asarray(yp)  # (batch, dim)
        yn = np.asarray(yn)  # (batch, dim)
        batch = ya.shape[0]
        d_ap = 1.0 - np.einsum("ij,ij->i", ya, yp)  # (batch,)
        d_an = 1.0 - np.einsum("ij,ij->i", ya, yn)  # (batch,)
        gap = d_ap - d_an + self.margin  # (batch,)
        active = (gap > 0).astype(ya.dtype)[:, None] / batch  # (batch, 1), 1/B where it counts
        loss = np.maximum(gap, 0.0).sum() / batch
        dya = active * (yn - yp)  # (batch, dim): d(-a·p + a·n)/da
        dyp = -active * ya  # (batch, dim)
        dyn = active * ya  # (batch, dim)
        return loss, dya, dyp, dyn

    def config_dict(self) -> dict[str, Any]:
        """The hyperparameters, as plain JSON values (for training.json and fingerprints)."""
        return {"loss": self.name, "distance": self.distance, "margin": self.margin}

    def __repr__(self) -> str:
        return f"TripletLoss(margin={self.margin})"
