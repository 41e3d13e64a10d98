"""Numba kernels for training the projection MLP: forward, backward, loss and optimisers.

Why a module of its own: these are the only jitted functions in oxidize. They compile once
(``cache=True`` keeps the machine code under ``__pycache__``), and only ``train.py``
imports them, so loading or listing doit tasks never pays for numba.

How it is fast: a whole epoch — gathering each minibatch's rows from the embedding
matrix, forward, loss, backward and the optimiser step, for every minibatch — runs inside
one call to :func:`train_epoch`, so there is no per-step Python overhead. All work buffers
are allocated once by the caller and passed in. The three branches of a triplet (anchor,
positive, negative) share the weights, so they run as one stacked batch of ``3*B`` rows
(anchors first, then positives, then negatives); the four matrix products per layer are
``np.dot`` on contiguous 2-D arrays, which numba hands to BLAS (through SciPy). Everything
elementwise is an explicit loop.

Why it is deterministic: ``fastmath`` is off and nothing runs in ``prange``, so every sum
is taken in a fixed order; BLAS gemm on this kind of input splits work over output tiles,
not over the reduced dimension (``tests/test_train.py`` checks equal bytes across runs,
processes and BLAS thread counts).

The kernels are generic over the float type: training uses float32; the gradient check in
the tests runs the same code in float64.

Model (per row ``x``): ``h = relu(W1 x + b1)``, ``z = W0 x + W2 h + b2``, ``y = z / ||z||``
— a linear path ``W0`` plus an MLP residual (see :mod:`oxidize.train.trainer` for why). Parameters
live in one flat vector ``[w1, w2, w0, b1, b2]`` (weights first, so weight decay touches the
first ``n_decay`` entries only); ``w1``… are views into it, and the gradient and
optimiser-state vectors use the same layout, so an optimiser step is one loop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: A row whose pre-normalisation norm is below this is divided by it instead (no 0/0).
NORM_EPS = 1e-12

#: Optimiser codes understood by :func:`train_epoch`.
ADAM = 0
SGD = 1
#: Loss codes: the loss parameter is the margin (triplet) or 1 / temperature (in-batch).
TRIPLET = 0
IN_BATCH = 1


@njit(cache=True, error_model="numpy")
def gather_rows(emb, triplets, order, start, stop, x):
    """Copy the rows of triplets ``order[start:stop]`` into ``x`` as ``[anchors; positives; negatives]``.

    emb: (n_texts, in); triplets: (n, 3) int; order: (n,) int; x: (>= 3*b, in) with b = stop-start.
    """
    b = stop - start
    dim = emb.shape[1]
    for i in range(b):
        t = order[start + i]
        for k in range(3):
            src = triplets[t, k]
            row = k * b + i
            for j in range(dim):
                x[row, j] = emb[src, j]


@njit(cache=True, error_model="numpy")
def add_bias_relu(h, bias):
    """In place: ``h = relu(h + bias)``. NaN stays NaN (so a diverged run is seen, not masked)."""
    rows, cols = h.shape
    for r in range(rows):
        for j in range(cols):
            v = h[r, j] + bias[j]
            if v <= 0:
                h[r, j] = 0
            else:
                h[r, j] = v


@njit(cache=True, error_model="numpy")
def add_bias_normalise(z, z_lin, bias, y, norms):
    """``z += z_lin + bias``; ``norms[r] = max(||z_r||, NORM_EPS)``; ``y_r = z_r / norms[r]``.

    ``z`` holds the residual ``W2 h``, ``z_lin`` the linear path ``W0 x``.
    """
    rows, cols = z.shape
    for r in range(rows):
        acc = 0.0
        for j in range(cols):
            v = z[r, j] + z_lin[r, j] + bias[j]
            z[r, j] = v
            acc += v * v
        norm = math.sqrt(acc)
        if norm < NORM_EPS:
            norm = NORM_EPS
        norms[r] = norm
        for j in range(cols):
            y[r, j] = z[r, j] / norm


@njit(cache=True, error_model="numpy")
def triplet_loss_grad(y, b, margin, dy):
    """Batch-mean triplet loss on stacked unit rows and its gradient (see ``TripletLoss``).

    ``L = mean_i max(0, (1 - a_i·p_i) - (1 - a_i·n_i) + margin)``.
    y: (3b, out) = [anchors; positives; negatives]; dy: (3b, out), overwritten with dL/dy.
    Returns the loss as a float. A NaN gap counts as active, so it reaches the returned loss.
    """
    dim = y.shape[1]
    inv = 1.0 / b
    total = 0.0
    for i in range(b):
        ap = 0.0
        an = 0.0
        for j in range(dim):
            ap += y[i, j] * y[b + i, j]
            an += y[i, j] * y[2 * b + i, j]
        gap = (1.0 - ap) - (1.0 - an) + margin
        if gap <= 0:  # learned (or exactly at the hinge: sub-gradient 0)
            for j in range(dim):
                dy[i, j] = 0
                dy[b + i, j] = 0
                dy[2 * b + i, j] = 0
        else:
            total += gap
            for j in range(dim):
                dy[i, j] = (y[2 * b + i, j] - y[b + i, j]) * inv
                dy[b + i, j] = -y[i, j] * inv
                dy[2 * b + i, j] = y[i, j] * inv
    return total * inv


@njit(cache=True, error_model="numpy")
def in_batch_loss_grad(y, b, inv_temperature, dy):
    """Batch-mean in-batch contrastive loss and its gradient (see ``InBatchLoss``).

    y: (3b, out) = [anchors; positives; negatives]; the candidates of every anchor are the
    2b positives and negatives, its own positive the right one. dy: (3b, out), overwritten.
    ``s = a c^T / τ``; ``L = mean_i (logsumexp_j s_ij - s_ii)``; ``G = (softmax(s) - I) / b``;
    ``dL/da = G c / τ``, ``dL/dc = G^T a / τ``. Rows are reduced in a fixed order.
    """
    ya = y[:b]
    yc = y[b:3 * b]
    s = np.empty((b, 2 * b), dtype=y.dtype)
    np.dot(ya, yc.T, s)
    total = 0.0
    inv_b = 1.0 / b
    for i in range(b):
        m = -np.inf
        for j in range(2 * b):
            s[i, j] *= inv_temperature
            if s[i, j] > m:
                m = s[i, j]
        sii = s[i, i]
        acc = 0.0
        for j in range(2 * b):
            e = math.exp(s[i, j] - m)
            s[i, j] = e
            acc += e
        scale = inv_b * inv_temperature / acc
        for j in range(2 * b):
            s[i, j] = s[i, j] * scale
        s[i, i] -= inv_b * inv_temperature
        total += math.log(acc) + m - sii
    np.dot(s, yc, dy[:b])
    np.dot(s.T, ya, dy[b:3 * b])
    return total * inv_b


@njit(cache=True, error_model="numpy")
def normalise_backward(dy, y, norms):
    """In place: ``dy_r = (dy_r - y_r (y_r·dy_r)) / norms[r]`` — the gradient w.r.t. ``z``."""
    rows, cols = dy.shape
    for r in range(rows):
        acc = 0.0
        for j in range(cols):
            acc += y[r, j] * dy[r, j]
        inv = 1.0 / norms[r]
        for j in range(cols):
            dy[r, j] = (dy[r, j] - y[r, j] * acc) * inv


@njit(cache=True, error_model="numpy")
def relu_backward(dh, h):
    """In place: zero ``dh`` where the ReLU output ``h`` is not positive."""
    rows, cols = dh.shape
    for r in range(rows):
        for j in range(cols):
            if not (h[r, j] > 0):
                dh[r, j] = 0


@njit(cache=True, error_model="numpy")
def column_sums(d, out):
    """``out[j] = sum_r d[r, j]`` (the bias gradient), summed in row order."""
    rows, cols = d.shape
    for j in range(cols):
        out[j] = 0
    for r in range(rows):
        for j in range(cols):
            out[j] += d[r, j]


@njit(cache=True, error_model="numpy")
def loss_and_grads(x, b, loss_kind, loss_param, w0, w1, b1, w2, b2, gw0, gw1, gb1, gw2, gb2,
                   h, z, z_lin, y, norms, dy, dh):
    """Forward, loss (``loss_kind``: :data:`TRIPLET` with ``loss_param`` the margin, or
    :data:`IN_BATCH` with ``loss_param`` = 1 / temperature) and backward for one stacked
    batch; returns the loss.

    x: (3b, in) = [anchors; positives; negatives]. Weights: w0 (out, in), w1 (hidden, in),
    b1 (hidden,), w2 (out, hidden), b2 (out,); gradients g* have the same shapes and are
    overwritten. Work buffers (exactly 3b rows): h (3b, hidden), z (3b, out),
    z_lin (3b, out), y (3b, out), norms (3b,), dy (3b, out), dh (3b, hidden).
    """
    # forward
    np.dot(x, w1.T, h)  # (3b, hidden)
    add_bias_relu(h, b1)
    np.dot(h, w2.T, z)  # (3b, out): the residual
    np.dot(x, w0.T, z_lin)  # (3b, out): the linear path
    add_bias_normalise(z, z_lin, b2, y, norms)
    if loss_kind == IN_BATCH:
        loss = in_batch_loss_grad(y, b, loss_param, dy)  # dy: (3b, out)
    else:
        loss = triplet_loss_grad(y, b, loss_param, dy)
    # backward
    normalise_backward(dy, y, norms)  # dy now holds dL/dz
    np.dot(dy.T, x, gw0)  # (out, in)
    np.dot(dy.T, h, gw2)  # (out, hidden)
    column_sums(dy, gb2)
    np.dot(dy, w2, dh)  # (3b, hidden)
    relu_backward(dh, h)
    np.dot(dh.T, x, gw1)  # (hidden, in)
    column_sums(dh, gb1)
    return loss


@njit(cache=True, error_model="numpy")
def _adam_loop(params, grads, m, v, n_decay, decay, zero, beta1, one_minus_beta1, beta2,
               one_minus_beta2, step_size, inv_sqrt_bc2, eps):
    # One loop from 0 over every entry (the decay chosen per entry): numba then knows no
    # index is negative, and LLVM vectorises it (a loop over lo..hi stayed scalar, 8× slower).
    for i in range(params.shape[0]):
        d = decay if i < n_decay else zero
        g = grads[i] + d * params[i]
        mi = beta1 * m[i] + one_minus_beta1 * g
        vi = beta2 * v[i] + one_minus_beta2 * g * g
        m[i] = mi
        v[i] = vi
        params[i] = params[i] - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


@njit(cache=True, error_model="numpy")
def _adam_loop_anchored(params, anchor, grads, m, v, n_decay, decay, zero, beta1, one_minus_beta1,
                        beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps):
    # The same step with decay toward ``anchor``: a separate loop, so that training without a
    # start penalty does not read one more parameter-sized vector per step (~12 % at batch 32).
    for i in range(params.shape[0]):
        d = decay if i < n_decay else zero
        g = grads[i] + d * (params[i] - anchor[i])
        mi = beta1 * m[i] + one_minus_beta1 * g
        vi = beta2 * v[i] + one_minus_beta2 * g * g
        m[i] = mi
        v[i] = vi
        params[i] = params[i] - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


@njit(cache=True, error_model="numpy")
def adam_update(params, anchor, grads, m, v, lr, beta1, beta2, eps, weight_decay, n_decay, step):
    """One Adam step with bias correction, on flat vectors; ``step`` counts from 1.

    ``g += weight_decay * (p - anchor)`` for the first ``n_decay`` entries (the weight
    matrices; ``anchor`` is empty for plain weight decay, the scaled start for a penalty on
    the distance from the start map — see :func:`oxidize.train.trainer.train_projection`);
    ``m = β1 m + (1-β1) g``; ``v = β2 v + (1-β2) g²``;
    ``p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)`` (as PyTorch arranges it).
    The arithmetic runs in the parameters' dtype (the constants are cast once), which keeps
    the loop vectorised and memory-bound. Each entry is updated on its own (no reduction),
    so the result does not depend on how the loop is vectorised.
    """
    t = params.dtype.type
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    if anchor.shape[0] == 0:
        _adam_loop(params, grads, m, v, n_decay, t(weight_decay), t(0.0), t(beta1), t(1.0 - beta1),
                   t(beta2), t(1.0 - beta2), t(lr / bc1), t(1.0 / math.sqrt(bc2)), t(eps))
    else:
        _adam_loop_anchored(params, anchor, grads, m, v, n_decay, t(weight_decay), t(0.0), t(beta1),
                            t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(lr / bc1),
                            t(1.0 / math.sqrt(bc2)), t(eps))


@njit(cache=True, error_model="numpy")
def _sgd_loop(params, anchor, grads, velocity, n_decay, decay, zero, lr, momentum):
    anchored = anchor.shape[0] > 0
    for i in range(params.shape[0]):
        d = decay if i < n_decay else zero
        a = anchor[i] if anchored else zero
        vi = momentum * velocity[i] + (grads[i] + d * (params[i] - a))
        velocity[i] = vi
        params[i] = params[i] - lr * vi


@njit(cache=True, error_model="numpy")
def sgd_update(params, anchor, grads, velocity, lr, momentum, weight_decay, n_decay):
    """One SGD step with (heavy-ball) momentum: ``v = momentum v + g``, ``p -= lr v``.

    ``g += weight_decay * (p - anchor)`` for the first ``n_decay`` entries (the weight matrices).
    """
    t = params.dtype.type
    _sgd_loop(params, anchor, grads, velocity, n_decay, t(weight_decay), t(0.0), t(lr), t(momentum))


@njit(cache=True, error_model="numpy")
def train_epoch(emb, triplets, order, batch_size, loss_kind, loss_param,
                params, anchor, w0, w1, b1, w2, b2, grads, gw0, gw1, gb1, gw2, gb2, state1, state2,
                x, h, z, z_lin, y, norms, dy, dh,
                optimizer, lr, beta1, beta2, eps, momentum, weight_decay, n_decay, step,
                batch_losses):
    """Train one epoch: every minibatch of ``order`` (a permutation of triplet indices).

    ``params``/``grads``/``state1``/``state2`` are the flat vectors; ``w1``… and ``gw1``… are
    views into ``params`` and ``grads``. ``state1``/``state2`` are Adam's moments (SGD uses
    ``state1`` as velocity). Buffers ``x, h, z, z_lin, y, norms, dy, dh`` have
    ``3*batch_size`` rows.
    ``batch_losses[k]`` receives the loss of minibatch ``k`` (before its update).

    Returns ``(batches_done, step)``: ``batches_done`` is less than the number of batches if
    a loss was not finite (training stops there, without applying that update).
    """
    n = order.shape[0]
    n_batches = (n + batch_size - 1) // batch_size
    for k in range(n_batches):
        start = k * batch_size
        stop = min(start + batch_size, n)
        b = stop - start
        r = 3 * b
        gather_rows(emb, triplets, order, start, stop, x)
        loss = loss_and_grads(x[:r], b, loss_kind, loss_param, w0, w1, b1, w2, b2, gw0, gw1, gb1, gw2, gb2,
                              h[:r], z[:r], z_lin[:r], y[:r], norms[:r], dy[:r], dh[:r])
        batch_losses[k] = loss
        if not math.isfinite(loss):
            return k, step
        step += 1
        if optimizer == ADAM:
            adam_update(params, anchor, grads, state1, state2, lr, beta1, beta2, eps,
                        weight_decay, n_decay, step)
        else:
            sgd_update(params, anchor, grads, state1, lr, momentum, weight_decay, n_decay)
    return n_batches, step
