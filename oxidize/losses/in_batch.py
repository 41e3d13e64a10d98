"""In-batch contrastive loss (InfoNCE / multiple-negatives ranking) on cosine similarity.

Each anchor is scored against its own positive and against every other positive *and*
negative of the batch, through a softmax with a temperature: the task is to pick the right
text out of ``2B`` candidates instead of beating one random negative by a margin, so it
stays informative after the triplet loss has already reached zero. The jitted kernel is
:func:`oxidize.train.kernels.in_batch_loss_grad`; this file holds the reference on plain
arrays, which the tests compare it with.

Importing this module is light (no numpy at import time).
"""

from __future__ import annotations

from typing import Any


class InBatchLoss:
    r"""Cross-entropy of picking each anchor's positive among all candidates of the batch.

    .. math::

        s_{ij} = \frac{a_i \cdot c_j}{\tau}, \qquad
        L = \frac{1}{B} \sum_{i=1}^{B} \Bigl( \log \sum_{j=1}^{2B} e^{s_{ij}} - s_{ii} \Bigr)

    where :math:`c = [p_1 \dots p_B, n_1 \dots n_B]` are the batch's positives then
    negatives, all L2-normalised projections, so :math:`c_i = p_i` is anchor :math:`i`'s
    right answer and every other candidate is a wrong one.

    Gradient: with :math:`P = \mathrm{softmax}_j(s_{ij})` and
    :math:`G = (P - [j = i]) / B`, :math:`\partial L / \partial a = G\,c / \tau` and
    :math:`\partial L / \partial c = G^\top a / \tau`.

    Args:
        temperature: :math:`\tau` (> 0). Small values sharpen the softmax onto the hardest
            wrong candidates; sentence-transformers' default scale 20 is :math:`\tau = 0.05`.

    Inputs:
        +------------------------+--------------------+-------------------------------------+
        | Input                  | Shape / dtype      | Meaning                             |
        +========================+====================+=====================================+
        | ``ya`` (anchors)       | ``(batch, dim)``   | projected anchors, unit rows        |
        | ``yp`` (positives)     | ``(batch, dim)``   | projected positives: row i answers i |
        | ``yn`` (negatives)     | ``(batch, dim)``   | projected negatives: wrong for all  |
        +------------------------+--------------------+-------------------------------------+

    Relations:
        :class:`oxidize.losses.TripletLoss` compares each anchor with one negative by a
        margin; this loss uses the whole batch. Both take the same stacked triplets, so
        ``training.loss`` switches between them without touching the pairs; hard negatives
        (``training.negatives: hard``) sharpen both.

    Example:
        >>> import numpy as np
        >>> loss = InBatchLoss(temperature=0.05)
        >>> ya = np.eye(2); yp = np.eye(2); yn = -np.eye(2)
        >>> value, *_ = loss.compute_loss(ya, yp, yn)
        >>> round(float(value), 6)  # each anchor's positive is far ahead of the others
        0.0
        >>> loss.config_dict()
        {'loss': 'InBatchLoss', 'similarity': 'cosine', 'temperature': 0.05}
    """

    name = "InBatchLoss"

    def __init__(self, temperature: float = 0.05):
        self.temperature = float(temperature)

    def compute_loss(self, ya, yp, yn):
        """Return ``(loss, dya, dyp, dyn)`` on any float dtype (see the class docstring)."""
        import numpy as np

        ya, yp, yn = np.asarray(ya), np.asarray(yp), np.asarray(yn)
        batch = ya.shape[0]
        candidates = np.concatenate([yp, yn])  # (2B, dim)
        s = ya @ candidates.T / self.temperature  # (B, 2B)
        s_max = s.max(axis=1, keepdims=True)
        e = np.exp(s - s_max)
        total = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(total[:, 0]) + s_max[:, 0] - s[np.arange(batch), np.arange(batch)]))
        g = e / total  # softmax
        g[np.arange(batch), np.arange(batch)] -= 1.0
        g /= batch
        dya = g @ candidates / self.temperature
        dc = g.T @ ya / self.temperature
        return loss, dya, dc[:batch], dc[batch:]

    def config_dict(self) -> dict[str, Any]:
        return {"loss": self.name, "similarity": "cosine", "temperature": self.temperature}

    def __repr__(self) -> str:
        return f"InBatchLoss(temperature={self.temperature})"
