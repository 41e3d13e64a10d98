"""The in-batch contrastive loss: reference formula, kernel, and gradients by finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from oxidize.losses import InBatchLoss
from oxidize.projection import project
from oxidize.train.trainer import loss_and_gradients, train_projection

KEYS = ("w1", "b1", "w2", "b2", "w0")


def _central(f, arrays, which, eps=1e-6):
    numeric = np.zeros_like(arrays[which])
    for idx in np.ndindex(arrays[which].shape):
        up = [a.copy() for a in arrays]
        down = [a.copy() for a in arrays]
        up[which][idx] += eps
        down[which][idx] -= eps
        numeric[idx] = (f(*up) - f(*down)) / (2 * eps)
    return numeric


def test_reference_gradient_matches_central_differences():
    rng = np.random.default_rng(0)
    ys = [rng.normal(size=(4, 3)) for _ in range(3)]
    loss_fn = InBatchLoss(temperature=0.3)
    loss, *grads = loss_fn.compute_loss(*ys)
    assert loss > 0
    for which in range(3):
        numeric = _central(lambda *a: loss_fn.compute_loss(*a)[0], ys, which)
        assert np.abs(numeric).max() > 1e-4
        np.testing.assert_allclose(grads[which], numeric, rtol=1e-6, atol=1e-9)


def test_reference_formula_on_a_small_case():
    """Anchor i's right answer is positive i among [p; n]: the loss is the mean cross-entropy."""
    ya = np.array([[1.0, 0.0], [0.0, 1.0]])
    yp = np.array([[1.0, 0.0], [0.6, 0.8]])
    yn = np.array([[0.0, 1.0], [1.0, 0.0]])
    tau = 0.5
    s = ya @ np.concatenate([yp, yn]).T / tau
    expected = np.mean([np.log(np.exp(s[i]).sum()) - s[i, i] for i in range(2)])
    assert InBatchLoss(tau).compute_loss(ya, yp, yn)[0] == pytest.approx(expected, rel=1e-12)


def test_kernel_matches_the_reference():
    from oxidize.train import kernels

    rng = np.random.default_rng(2)
    b = 7
    y = rng.normal(size=(3 * b, 5))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    dy = np.empty_like(y)
    loss = kernels.in_batch_loss_grad(y, b, 1 / 0.1, dy)
    ref, dya, dyp, dyn = InBatchLoss(0.1).compute_loss(y[:b], y[b:2 * b], y[2 * b:])
    assert loss == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(dy, np.concatenate([dya, dyp, dyn]), rtol=1e-10, atol=1e-13)


def test_network_gradients_match_central_differences_float64():
    rng = np.random.default_rng(3)
    b, d_in, hidden, out = 5, 4, 7, 3
    w = {"w1": rng.normal(size=(hidden, d_in)), "b1": rng.normal(scale=0.3, size=hidden),
         "w2": rng.normal(size=(out, hidden)), "b2": rng.normal(scale=0.3, size=out),
         "w0": rng.normal(size=(out, d_in))}
    xs = [rng.normal(size=(b, d_in)) for _ in range(3)]
    assert min(np.abs(x @ w["w1"].T + w["b1"]).min() for x in xs) > 1e-3  # away from ReLU kinks
    kw = dict(loss="in_batch", temperature=0.2)
    loss, grads = loss_and_gradients(w, *xs, 0.0, **kw)
    ref = InBatchLoss(0.2).compute_loss(*(project(w, x) for x in xs))[0]
    assert loss == pytest.approx(ref, rel=1e-10)
    eps = 1e-6
    for key in KEYS:
        numeric = np.zeros_like(w[key])
        for idx in np.ndindex(w[key].shape):
            plus = {k: v.copy() for k, v in w.items()}
            minus = {k: v.copy() for k, v in w.items()}
            plus[key][idx] += eps
            minus[key][idx] -= eps
            numeric[idx] = (loss_and_gradients(plus, *xs, 0.0, **kw)[0]
                            - loss_and_gradients(minus, *xs, 0.0, **kw)[0]) / (2 * eps)
        assert np.abs(numeric).max() > 1e-5, key
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-5, atol=1e-8, err_msg=key)


def test_training_with_the_in_batch_loss_lowers_it_and_is_deterministic():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(6, 12))
    labels = np.repeat(np.arange(6), 20)
    x = centres[labels] + rng.normal(size=(120, 12))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    anchors = rng.integers(0, 120, 600)
    pos = np.array([rng.choice(np.flatnonzero(labels == labels[a])) for a in anchors])
    neg = np.array([rng.choice(np.flatnonzero(labels != labels[a])) for a in anchors])
    trip = np.stack([anchors, pos, neg], 1).astype(np.int32)
    kw = dict(hidden=16, out=6, epochs=4, batch_size=32, learning_rate=1e-2, margin=0.2, seed=0,
              progress=False, loss="in_batch", temperature=0.1, init="pca")
    one, two = train_projection(x, trip, **kw), train_projection(x, trip, **kw)
    assert one.losses[-1] < one.losses[0]
    assert one.config["loss"] == {"loss": "InBatchLoss", "similarity": "cosine", "temperature": 0.1}
    assert all(np.array_equal(one.weights[k], two.weights[k]) for k in KEYS)
