"""Tests for the MLP trainer: gradients, learning, determinism, divergence, validation, files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from oxidize.errors import TrainingError
from oxidize.losses import TripletLoss
from oxidize.projection import load_weights, project
from oxidize.train.start import INITS, linear_init
from oxidize.train.trainer import TrainResult, loss_and_gradients, save_weights, train_projection

KEYS = ("w1", "b1", "w2", "b2", "w0")


# ---------------------------------------------------------------- helpers

def clusters(n_clusters=4, per_cluster=40, dim=24, n_triplets=1500, seed=0):
    """Points around ``n_clusters`` centres (in a few dims) drowned in isotropic noise.

    Returns (embeddings float32 [n, dim] with unit rows, labels, triplets int32 [n_triplets, 3])
    where each triplet is (anchor, same-cluster positive, other-cluster negative).
    """
    rng = np.random.default_rng(seed)
    centres = np.zeros((n_clusters, dim))
    centres[np.arange(n_clusters), np.arange(n_clusters)] = 1.0
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    x = centres[labels] + rng.normal(scale=0.45, size=(labels.size, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    by_label = [np.flatnonzero(labels == c) for c in range(n_clusters)]
    anchors = rng.integers(0, labels.size, n_triplets)
    pos = np.array([rng.choice(by_label[labels[a]]) for a in anchors])
    neg_label = (labels[anchors] + rng.integers(1, n_clusters, n_triplets)) % n_clusters
    neg = np.array([rng.choice(by_label[c]) for c in neg_label])
    return x.astype(np.float32), labels, np.stack([anchors, pos, neg], 1).astype(np.int32)


def nn_same_cluster(y, labels):
    """Fraction of points whose nearest other point (cosine) has the same label."""
    sim = y @ y.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(labels[np.argmax(sim, axis=1)] == labels))


def small_problem():
    emb = np.random.default_rng(3).normal(size=(50, 12)).astype(np.float32)
    trip = np.random.default_rng(4).integers(0, 50, size=(70, 3)).astype(np.int32)
    return emb, trip


KW = dict(hidden=16, out=6, epochs=2, batch_size=16, learning_rate=1e-3, margin=0.2, seed=7,
          progress=False)


# ---------------------------------------------------------------- gradients

def _random_problem(seed):
    rng = np.random.default_rng(seed)
    b, d_in, hidden, out = 6, 5, 9, 4
    w = {"w1": rng.normal(size=(hidden, d_in)), "b1": rng.normal(scale=0.3, size=hidden),
         "w2": rng.normal(size=(out, hidden)), "b2": rng.normal(scale=0.3, size=out),
         "w0": rng.normal(size=(out, d_in))}
    xs = [rng.normal(size=(b, d_in)) for _ in range(3)]
    return w, xs


def _gaps(w, xs, margin):
    ya, yp, yn = (project(w, x) for x in xs)
    return np.einsum("ij,ij->i", ya, yn) - np.einsum("ij,ij->i", ya, yp) + margin


def test_gradients_match_central_differences_float64():
    margin = 0.3
    for seed in range(50):  # pick a problem away from every kink: hinge and ReLU
        w, xs = _random_problem(seed)
        gaps = _gaps(w, xs, margin)
        pre = [x @ w["w1"].T + w["b1"] for x in xs]
        if (np.abs(gaps).min() > 1e-2 and (gaps > 0).sum() >= 2 and (gaps < 0).sum() >= 1
                and min(np.abs(p).min() for p in pre) > 1e-3):
            break
    else:  # pragma: no cover
        pytest.fail("no kink-free random problem found")

    loss, grads = loss_and_gradients(w, *xs, margin)
    ref_loss, *_ = TripletLoss(margin).compute_loss(*(project(w, x) for x in xs))
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert all(grads[k].dtype == np.float64 and grads[k].shape == w[k].shape for k in KEYS)

    eps = 1e-6
    for key in KEYS:
        numeric = np.zeros_like(w[key])
        for idx in np.ndindex(w[key].shape):
            plus = {k: v.copy() for k, v in w.items()}
            minus = {k: v.copy() for k, v in w.items()}
            plus[key][idx] += eps
            minus[key][idx] -= eps
            numeric[idx] = (loss_and_gradients(plus, *xs, margin)[0]
                            - loss_and_gradients(minus, *xs, margin)[0]) / (2 * eps)
        assert np.abs(numeric).max() > 1e-4, key  # the check is not vacuous
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-8, err_msg=key)


def test_triplet_loss_gradient_on_plain_arrays():
    rng = np.random.default_rng(1)
    ys = [rng.normal(size=(5, 3)) for _ in range(3)]
    loss_fn = TripletLoss(margin=0.5)
    loss, *grads = loss_fn.compute_loss(*ys)
    eps = 1e-6
    for which in range(3):
        numeric = np.zeros_like(ys[which])
        for idx in np.ndindex(ys[which].shape):
            up = [y.copy() for y in ys]
            down = [y.copy() for y in ys]
            up[which][idx] += eps
            down[which][idx] -= eps
            numeric[idx] = (loss_fn.compute_loss(*up)[0] - loss_fn.compute_loss(*down)[0]) / (2 * eps)
        np.testing.assert_allclose(grads[which], numeric, rtol=1e-6, atol=1e-9)
    assert loss_fn.config_dict() == {"loss": "TripletLoss", "distance": "cosine", "margin": 0.5}


def test_kernel_loss_matches_triplet_loss_class():
    from oxidize.train import kernels

    rng = np.random.default_rng(2)
    b = 7
    y = rng.normal(size=(3 * b, 5))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    dy = np.empty_like(y)
    loss = kernels.triplet_loss_grad(y, b, 0.4, dy)
    ref, dya, dyp, dyn = TripletLoss(0.4).compute_loss(y[:b], y[b:2 * b], y[2 * b:])
    assert loss == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(dy, np.concatenate([dya, dyp, dyn]), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- learning

@pytest.mark.parametrize("optimizer,lr", [("adam", 3e-3), ("sgd", 0.5)])
def test_loss_falls_and_clusters_separate(optimizer, lr):
    emb, labels, trip = clusters()
    before = nn_same_cluster(emb, labels)
    result = train_projection(emb, trip, hidden=64, out=16, epochs=12, batch_size=32,
                              learning_rate=lr, margin=0.2, seed=0, optimizer=optimizer,
                              progress=False)
    assert len(result.losses) == 12
    assert result.losses[-1] < 0.3 * result.losses[0], result.losses
    y = project(result.weights, emb)
    after = nn_same_cluster(y, labels)
    assert after >= 0.95 and after > before, (before, after)
    # same-cluster pairs are closer than cross-cluster pairs on average, by a clear gap
    sim = y @ y.T
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    assert sim[same].mean() - sim[~same].mean() > 0.5
    assert result.config["optimizer"] == optimizer
    assert result.config["loss"] == {"loss": "TripletLoss", "distance": "cosine", "margin": 0.2}


def test_weight_decay_shrinks_weights():
    emb, labels, trip = clusters(n_triplets=300)
    kw = dict(hidden=32, out=8, epochs=4, batch_size=32, learning_rate=0.1, margin=0.2, seed=0,
              optimizer="sgd", progress=False)
    plain = train_projection(emb, trip, **kw).weights
    decayed = train_projection(emb, trip, weight_decay=0.5, **kw).weights
    assert np.linalg.norm(decayed["w1"]) < np.linalg.norm(plain["w1"])
    assert np.linalg.norm(decayed["w2"]) < np.linalg.norm(plain["w2"])


def test_batch_larger_than_data_and_ragged_last_batch():
    emb, trip = small_problem()
    for batch in (1000, 13):  # 70 triplets: one short batch; 5 batches of 13 and one of 5
        result = train_projection(emb, trip, **{**KW, "batch_size": batch})
        assert all(np.isfinite(result.losses))


def test_progress_lines_name_label_and_epoch(capsys):
    emb, trip = small_problem()
    train_projection(emb, trip, **{**KW, "progress": True}, label="example:semantic")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("example:semantic train: epoch 1/2 loss ")
    assert err[1].startswith("example:semantic train: epoch 2/2 loss ")


# ---------------------------------------------------------------- determinism

def _digest(weights):
    h = hashlib.sha256()
    for k in KEYS:
        h.update(k.encode())
        h.update(np.ascontiguousarray(weights[k]).tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_other_seed_differs():
    emb, _, trip = clusters(n_triplets=400)
    kw = dict(hidden=48, out=8, epochs=3, batch_size=32, learning_rate=1e-2, margin=0.2,
              progress=False)
    a = train_projection(emb, trip, seed=5, **kw)
    b = train_projection(emb, trip, seed=5, **kw)
    c = train_projection(emb, trip, seed=6, **kw)
    assert _digest(a.weights) == _digest(b.weights)
    assert a.losses == b.losses
    assert _digest(a.weights) != _digest(c.weights)


_CHILD = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from oxidize.train.trainer import train_projection, save_weights
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(300, 96)).astype(np.float32)
    trip = rng.integers(0, 300, size=(500, 3)).astype(np.int32)
    r = train_projection(emb, trip, hidden=256, out=48, epochs=2, batch_size=96,
                         learning_rate=1e-3, margin=0.2, seed=3, progress=False)
    save_weights(sys.argv[1], r)
    print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
""")


def test_identical_bytes_across_processes_and_blas_threads(tmp_path):
    """Separate processes (fresh hash seeds) give the same file; so do 1 and 2 BLAS threads
    wherever this BLAS splits the training step's products alike (which is when the count
    may be chosen by timing); where it does not, the automatic mode pins the count, so two
    automatic runs under different loads still agree."""
    from oxidize.train import blas

    digests = {}
    for i, threads in enumerate(("1", "2", "2", "")):
        # OXIDIZE_BLAS_THREADS: training would otherwise choose the count itself ("": it does)
        env = {**os.environ, "PYTHONHASHSEED": str(i)}
        env.pop("OXIDIZE_BLAS_THREADS", None)
        if threads:
            env.update(OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, OXIDIZE_BLAS_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / f"w{i}.safetensors")],
                             env=env, capture_output=True, text=True, check=True)
        digests.setdefault(threads, set()).add(out.stdout.strip())
    assert all(len(d) == 1 for d in digests.values()), digests
    if not blas.threads_change_bits(96, 256, 48, (2 * 96, 3 * 96, 2 * 20, 3 * 20)):
        assert digests["1"] == digests["2"] == digests[""], digests


def test_the_thread_check_sees_a_split_that_changes_bits(monkeypatch):
    """threads_change_bits compares real products: a BLAS made to answer differently with
    more threads is caught, and one thread alone never is."""
    import threadpoolctl

    from oxidize.train import blas

    assert blas.threads_change_bits(8, 16, 4, (12,)) in (False, True)
    real = blas._threads_change_bits.__wrapped__
    calls = []

    def sgemm(alpha, a, b, trans_a=False, trans_b=False):
        calls.append(1)
        result = (a.T if trans_a else a) @ (b.T if trans_b else b)
        return result * (1 + 1e-7 * (limit[0] > 1))

    limit = [1]

    class Limit:
        def __init__(self, limits):
            self.prev, limit[0] = limit[0], limits

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            limit[0] = self.prev

    class Controller:
        lib_controllers = [type("L", (), {"num_threads": 2})()]

        def select(self, **kw):
            return self

        def limit(self, limits):
            return Limit(limits)

    import scipy.linalg.blas

    monkeypatch.setattr(scipy.linalg.blas, "sgemm", sgemm)
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Controller)
    assert real(8, 16, 4, (12,)) is True and len(calls) == 12
    Controller.lib_controllers = [type("L", (), {"num_threads": 1})()]
    assert real(8, 16, 4, (12,)) is False


def test_a_thread_count_that_changes_bits_is_not_chosen_by_timing(monkeypatch):
    """Where 1 and all BLAS threads give different bits for the step's products, a count chosen
    by timing would tie the weights to the machine's load: it is not measured there."""
    from oxidize.train import blas

    monkeypatch.delenv("OXIDIZE_BLAS_THREADS", raising=False)
    seen, asked = [], []

    class Recording(blas.BlasThreads):
        def __init__(self, fixed):
            seen.append(fixed)
            super().__init__(fixed)

    monkeypatch.setattr(blas, "BlasThreads", Recording)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    trips = np.array([[i, (i + 1) % 60, (i + 30) % 60] for i in range(60)], dtype=np.int32)
    for changes in (False, True):
        monkeypatch.setattr(blas, "threads_change_bits", lambda *a, c=changes: asked.append(a) or c)
        train_projection(emb, trips, hidden=8, out=4, epochs=1, batch_size=16,
                         learning_rate=1e-3, margin=0.2, seed=0, progress=False)
    assert seen == [None, 0]  # measured where the bits agree, BLAS's own count elsewhere
    assert asked[0] == (8, 8, 4, (32, 24, 48, 36))  # 2 and 3 rows per item, full and last batch


def test_segments_and_thread_counts_do_not_change_the_weights(monkeypatch):
    from oxidize.train import blas

    emb, _, trip = clusters(n_triplets=500)
    kw = dict(hidden=48, out=8, epochs=2, batch_size=16, learning_rate=1e-2, margin=0.2,
              seed=2, progress=False)
    monkeypatch.setenv("OXIDIZE_BLAS_THREADS", "1")
    whole = train_projection(emb, trip, **kw)
    monkeypatch.delenv("OXIDIZE_BLAS_THREADS")
    monkeypatch.setattr(blas, "SEGMENT_TRIPLETS", 40)  # 2 minibatches per segment
    monkeypatch.setattr(blas, "PROBE_EVERY", 2)
    segmented = train_projection(emb, trip, **kw)
    assert _digest(segmented.weights) == _digest(whole.weights)
    assert segmented.losses == whole.losses


def test_memory_mapped_embeddings_are_read_in_place(tmp_path):
    """A float32 memory map (what the train task passes) is not copied, and trains to the
    same bytes as the array in memory."""
    from oxidize.train.inputs import _validate

    emb, _, trip = clusters(n_triplets=300)
    np.save(tmp_path / "e.npy", emb)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    checked, _ = _validate(mapped, trip, None, "")
    assert np.shares_memory(checked, mapped) and type(checked) is np.ndarray
    kw = dict(hidden=32, out=8, epochs=2, batch_size=32, learning_rate=1e-2, margin=0.2,
              seed=1, progress=False)
    assert (_digest(train_projection(mapped, trip, **kw).weights)
            == _digest(train_projection(emb, trip, **kw).weights))


def test_chunked_statistics_and_projection_match_one_pass(monkeypatch):
    """linear_init's row chunks, project's row blocks and the scorer's query blocks (which
    bound memory at scale) give the one-pass results up to rounding."""
    from oxidize import evaluate
    from oxidize import projection
    from oxidize.train import start
    from oxidize.evaluate import score_projection

    emb, trip, held = grouped_problem(n_groups=16, per_group=10, n_triplets=900)
    one = {kind: linear_init(emb, trip, 6, kind) for kind in ("within", "pca")}
    weights = train_projection(emb, trip, **{**KW, "epochs": 1}).weights
    whole = project(weights, emb)
    scorer = evaluate.HeldoutScorer(emb, held)
    mrr = scorer.mrr(weights)
    assert mrr == score_projection(weights, emb, held)["mrr@10"]
    monkeypatch.setattr(start, "_STAT_CHUNK_ELEMS", 7 * emb.shape[1])  # 7 rows per chunk
    monkeypatch.setattr(projection, "_PROJECT_ROWS", 9)
    monkeypatch.setattr(evaluate, "SIM_BLOCK", 5 * 40)  # 5 queries per similarity block
    monkeypatch.setattr(evaluate, "ROW_BLOCK", 9)
    for kind, (w0, b2) in one.items():
        c0, cb = linear_init(emb, trip, 6, kind)
        np.testing.assert_allclose(c0, w0, rtol=1e-7, atol=1e-9, err_msg=kind)
        np.testing.assert_allclose(cb, b2, rtol=1e-7, atol=1e-9, err_msg=kind)
    np.testing.assert_allclose(project(weights, emb), whole, rtol=1e-6, atol=1e-7)
    grouped = evaluate.HeldoutScorer(emb, held)
    assert len(grouped.split.texts) > 9 and grouped.queries > 5
    assert grouped.mrr(weights) == pytest.approx(mrr, rel=1e-12)
    assert grouped.base_mrr == pytest.approx(scorer.base_mrr, rel=1e-12)


# ---------------------------------------------------------------- divergence

def test_huge_learning_rate_raises_with_epoch_and_advice():
    emb, _, trip = clusters(n_triplets=200)
    with pytest.raises(TrainingError) as info:
        train_projection(emb, trip, hidden=32, out=8, epochs=3, batch_size=32,
                         learning_rate=1e38, margin=0.2, seed=0, progress=False,
                         label="example:semantic")
    message = str(info.value)
    assert "example:semantic" in message
    assert "epoch 1/3" in message
    assert "learning_rate" in message


def test_kernel_stops_at_first_non_finite_loss():
    """NaN inputs that get past validation are caught by the epoch kernel itself."""
    from oxidize.train import kernels
    from oxidize.train.params import FlatParams, work_buffers

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(10, 4)).astype(np.float32)
    emb[7, 2] = np.nan
    trip = np.array([[0, 1, 2]] * 4 + [[7, 1, 2]] + [[0, 1, 2]] * 3, dtype=np.int64)
    order = np.arange(8, dtype=np.int64)
    hidden, out, bs = 5, 3, 2
    shapes = {"w1": (hidden, 4), "b1": (hidden,), "w2": (out, hidden), "b2": (out,), "w0": (out, 4)}
    params, grads = FlatParams(shapes, np.float32), FlatParams(shapes, np.float32)
    params.flat[:] = rng.normal(size=params.flat.size)
    p, g = params.views, grads.views
    losses = np.zeros(4)
    done, step = kernels.train_epoch(emb, trip, order, bs, kernels.TRIPLET, 0.2, params.flat, np.zeros(0, np.float32), p["w0"], p["w1"],
                                     p["b1"], p["w2"], p["b2"], grads.flat, g["w0"], g["w1"],
                                     g["b1"], g["w2"], g["b2"], np.zeros_like(params.flat),
                                     np.zeros_like(params.flat), *work_buffers(3 * bs, 4, hidden, out,
                                                                           np.float32),
                                     kernels.ADAM, 1e-3, 0.9, 0.999, 1e-8, 0.9, 0.0,
                                     params.n_decay, 0, losses)
    assert (done, step) == (2, 2)  # third minibatch (triplets 4, 5) holds the NaN row
    assert np.isnan(losses[2])
    assert np.isfinite(params.flat).all()  # the poisoned update was not applied


# ---------------------------------------------------------------- linear path, init, early stop

def grouped_problem(n_groups=12, per_group=8, dim=16, seed=0, n_triplets=600, nuisance=0.0):
    """Groups of texts around random centres; the last quarter of the groups is held out.

    ``nuisance`` adds that much (times a standard normal per text) along one fixed direction:
    a large variation within every group that says nothing about the group (as boilerplate
    does), which the raw embedding weighs and a within-group start learns to ignore.

    Returns (embeddings float32 unit rows, training triplets, held-out (query, relevant) pairs).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, dim))
    labels = np.repeat(np.arange(n_groups), per_group)
    x = centres[labels] * 0.6 + rng.normal(size=(labels.size, dim))
    if nuisance:
        x[:, 0] += nuisance * rng.normal(size=labels.size)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n_train = n_groups * 3 // 4
    train = np.flatnonzero(labels < n_train)
    a = rng.choice(train, n_triplets)
    pos = np.array([rng.choice(np.flatnonzero((labels == labels[i]) & (np.arange(labels.size) != i)))
                    for i in a])
    neg = np.array([rng.choice(train[labels[train] != labels[i]]) for i in a])
    held = [(q, c) for g in range(n_train, n_groups) for q in np.flatnonzero(labels == g)
            for c in np.flatnonzero(labels == g) if q != c]
    return (x.astype(np.float32), np.stack([a, pos, neg], 1).astype(np.int32),
            np.array(held, dtype=np.int32))


def test_residual_starts_at_zero_so_epoch_zero_is_the_linear_map():
    emb, trip, _ = grouped_problem()
    result = train_projection(emb, trip, **{**KW, "epochs": 1, "learning_rate": 1e-9})
    w0, b2 = linear_init(emb, trip, 6, "within")
    assert result.config["init"]["w0"] == "within" and result.config["init"]["w2"] == "zeros"
    # after a negligible step the projection is (almost) the linear map alone
    linear = emb @ w0.T + b2
    linear /= np.linalg.norm(linear, axis=1, keepdims=True)
    np.testing.assert_allclose(project(result.weights, emb), linear, atol=1e-4)


@pytest.mark.parametrize("kind", [k for k in INITS if k != "auto"])  # auto: a choice among these
def test_linear_inits(kind):
    emb, trip, _ = grouped_problem()
    out = emb.shape[1] if kind == "identity" else 6
    w0, b2 = linear_init(emb, trip, out, kind)
    assert w0.shape == (out, emb.shape[1]) and b2.shape == (out,)
    if kind == "none":
        assert not w0.any() and not b2.any()
        return
    if kind == "identity":
        np.testing.assert_array_equal(w0, np.eye(out))
        return
    used = np.unique(trip)
    z = emb[used] @ w0.T + b2
    assert np.linalg.norm(z, axis=1).mean() == pytest.approx(1.0)  # scaled to unit mean norm
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)  # centred on the training texts
    # only training texts feed the statistics: changing a held-out text changes nothing
    other = emb.copy()
    other[-1] = -other[-1]
    np.testing.assert_array_equal(linear_init(other, trip, out, kind)[0], w0)


def test_auto_start_leaves_the_reference_only_for_a_clearly_better_candidate(monkeypatch):
    from oxidize.evaluate import HeldoutScorer, clearly_better
    from oxidize.train import start

    emb, trip, held = grouped_problem()
    result = train_projection(emb, trip, **{**KW, "epochs": 1, "init": "auto"}, heldout=held)
    scores = result.config["start_scores"]
    assert set(scores) == {"within", "pca"}  # identity only when out == in
    # the rule, recomputed from each start's own per-query reciprocal ranks
    scorer = HeldoutScorer(emb, held)
    ranks = {}
    for kind, score in scores.items():  # each score is that start's own validation MRR
        alone = train_projection(emb, trip, **{**KW, "epochs": 1, "init": kind}, heldout=held)
        assert alone.heldout_mrr[0] == pytest.approx(score, rel=1e-12)
        views = {k: v.copy() for k, v in alone.weights.items()}
        views["w0"][...], views["b2"][...] = linear_init(emb, trip, KW["out"], kind)
        views["w2"][...] = 0
        ranks[kind] = scorer.score(views)[1]
    expected = "pca" if clearly_better(ranks["pca"], ranks["within"], start.START_CLEAR_Z) else "within"
    assert result.config["init"]["w0"] == expected
    assert result.heldout_mrr[0] == scores[expected]
    square = train_projection(emb, trip, **{**KW, "out": emb.shape[1], "epochs": 1, "init": "auto"},
                              heldout=held)
    assert set(square.config["start_scores"]) == {"within", "pca", "identity"}

    best = max(scores, key=scores.get)
    monkeypatch.setattr(start, "START_CLEAR_Z", -1e9)  # any better candidate wins: the best is kept
    for reference in ("within", "pca"):
        eager = train_projection(emb, trip, **{**KW, "epochs": 1, "init": "auto"}, heldout=held,
                                 reference_start=reference)
        assert eager.config["init"]["w0"] == best
    monkeypatch.setattr(start, "START_CLEAR_Z", 1e9)  # nothing wins: the reference stays
    for reference in ("within", "pca"):
        kept = train_projection(emb, trip, **{**KW, "epochs": 1, "init": "auto"}, heldout=held,
                                reference_start=reference)
        assert kept.config["init"]["w0"] == reference


def test_clearly_better_weighs_the_gain_against_its_spread():
    from oxidize.evaluate import clearly_better

    reference = np.array([0.5, 1.0, 0.2, 0.0, 1.0, 0.5, 0.25, 1.0])
    steady = reference + 0.05  # the same small gain on every query: no spread at all
    assert clearly_better(steady, reference, 3.0)
    assert not clearly_better(reference, reference, 0.0)  # no gain is never a win
    assert not clearly_better(reference - 0.05, reference, -10.0)  # nor is a loss
    noisy = reference + np.array([0.8, -0.5, 0.7, 0.0, -0.6, 0.3, 0.1, -0.2])  # +0.075 on average
    diff = noisy - reference
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert clearly_better(noisy, reference, 0.99 * diff.mean() / se)
    assert not clearly_better(noisy, reference, 1.01 * diff.mean() / se)


def test_an_epoch_replaces_the_start_only_when_clearly_better(monkeypatch):
    from oxidize.train import trainer

    from oxidize.train import early_stop

    emb, trip, held = grouped_problem()
    kw = {**KW, "epochs": 4, "learning_rate": 1e-2, "patience": None, "init": "pca"}
    monkeypatch.setattr(early_stop, "REACH_Z", -1e9)  # the epochs' choice alone, every epoch run
    monkeypatch.setattr(trainer, "EPOCH_CLEAR_Z", -1e9)  # any better epoch: the best is kept
    eager = train_projection(emb, trip, **kw, heldout=held)
    curve = eager.heldout_mrr
    assert max(curve[1:]) > curve[0]  # here training does help
    assert eager.chosen_epoch == int(np.argmax(curve))
    monkeypatch.setattr(trainer, "EPOCH_CLEAR_Z", 1e9)  # no epoch is clear enough: the start stays
    strict = train_projection(emb, trip, **kw, heldout=held)
    assert strict.heldout_mrr == curve and strict.chosen_epoch == 0
    start = train_projection(emb, trip, **{**kw, "epochs": 1, "learning_rate": 1e-12})
    for k in ("w0", "w1", "w2", "b2"):
        np.testing.assert_allclose(strict.weights[k], start.weights[k], atol=1e-9)


def test_start_penalty_keeps_the_weights_near_the_start():
    emb, trip, held = grouped_problem()
    kw = {**KW, "epochs": 3, "learning_rate": 1e-2, "patience": None}
    free = train_projection(emb, trip, **kw)
    held_back = train_projection(emb, trip, **kw, start_penalty=10.0)
    start = train_projection(emb, trip, **{**kw, "epochs": 1, "learning_rate": 1e-12})
    dist = lambda r: sum(float(np.abs(r.weights[k] - start.weights[k]).sum()) for k in ("w0", "w2"))  # noqa: E731
    assert dist(held_back) < 0.5 * dist(free)
    assert held_back.config["start_penalty"] == 10.0


def test_identity_init_needs_equal_sizes():
    emb, trip, _ = grouped_problem()
    with pytest.raises(TrainingError, match="x:p.*identity.*16"):
        train_projection(emb, trip, **{**KW, "init": "identity"}, label="x:p")
    with pytest.raises(TrainingError, match="init must be one of"):
        train_projection(emb, trip, **{**KW, "init": "random"})


def test_within_init_separates_held_out_groups_better_than_noise():
    from oxidize.evaluate import score_base, score_projection

    emb, trip, held = grouped_problem(dim=24, seed=1)
    within = train_projection(emb, trip, **{**KW, "out": 8, "epochs": 1, "learning_rate": 1e-9,
                                            "init": "within"}).weights
    none = train_projection(emb, trip, **{**KW, "out": 8, "epochs": 1, "learning_rate": 1e-9,
                                          "init": "none"}).weights
    assert (score_projection(within, emb, held)["mrr@10"]
            > score_projection(none, emb, held)["mrr@10"])
    assert score_base(emb, held)["mrr@10"] > 0


def test_early_stopping_keeps_the_best_epoch_by_held_out_mrr(monkeypatch):
    from oxidize.evaluate import score_projection
    from oxidize.train import early_stop, trainer

    monkeypatch.setattr(trainer, "EPOCH_CLEAR_Z", -1e9)  # every better epoch counts as clear
    # patience alone: this training falls below its start map in epoch 1, which the stop
    # of tests/test_early_stop.py would end there (keeping epoch 0, as patience does)
    monkeypatch.setattr(early_stop, "STOP_Z", math.inf)
    emb, trip, held = grouped_problem()
    result = train_projection(emb, trip, hidden=32, out=8, epochs=8, batch_size=16,
                              learning_rate=3e-2, margin=0.2, seed=0, progress=False,
                              heldout=held, patience=2)
    mrr = result.heldout_mrr
    assert len(mrr) == len(result.losses) + 1  # index 0 = the initial weights
    assert result.chosen_epoch == int(np.argmax(mrr))  # first of the best
    assert mrr[result.chosen_epoch] == max(mrr)
    assert score_projection(result.weights, emb, held)["mrr@10"] == pytest.approx(max(mrr))
    if result.stopped_early:
        assert len(result.losses) - result.chosen_epoch == 2
    assert result.config["selection"].startswith("best validation mrr@10 of the epochs clearly above")


def test_training_that_cannot_beat_the_start_keeps_the_initial_weights(monkeypatch):
    """Held-out groups already perfectly ranked by the identity start (MRR@10 = 1): no
    epoch can be strictly better, so epoch 0's weights come back unchanged."""
    from oxidize.train import early_stop

    monkeypatch.setattr(early_stop, "REACH_Z", -1e9)  # every epoch runs (the stop has its own tests)
    emb, trip, held = grouped_problem()
    rng = np.random.default_rng(9)
    tight = emb.copy()
    # pull each held-out text onto its group's first text (the smallest index it relates to)
    lead = {q: min([q] + [c for qq, c in held.tolist() if qq == q]) for q in np.unique(held[:, 0])}
    for q, first in lead.items():
        tight[q] = emb[first] + 1e-3 * rng.normal(size=emb.shape[1])
    tight /= np.linalg.norm(tight, axis=1, keepdims=True)
    result = train_projection(tight, trip, hidden=32, out=tight.shape[1], epochs=3,
                              batch_size=16, learning_rate=3e-2, margin=0.2, seed=0,
                              progress=False, init="identity", heldout=held, patience=None)
    assert result.heldout_mrr[0] == 1.0 and len(result.losses) == 3
    assert result.chosen_epoch == 0
    np.testing.assert_array_equal(result.weights["w0"], np.eye(tight.shape[1], dtype=np.float32))
    np.testing.assert_array_equal(result.weights["w2"], 0)
    np.testing.assert_array_equal(result.weights["b2"], 0)
    plain = train_projection(tight, trip, hidden=32, out=8, epochs=1, batch_size=16,
                             learning_rate=3e-2, margin=0.2, seed=0, progress=False)
    assert plain.chosen_epoch is None and plain.heldout_mrr == []


def test_empty_heldout_means_last_epoch():
    emb, trip, _ = grouped_problem()
    result = train_projection(emb, trip, **KW, heldout=np.zeros((0, 2), np.int32))
    assert result.chosen_epoch is None and result.heldout_mrr == []
    assert len(result.losses) == KW["epochs"]


def test_bad_heldout_is_named():
    emb, trip, _ = grouped_problem()
    with pytest.raises(TrainingError, match="x:p: held-out pairs refer to texts outside"):
        train_projection(emb, trip, **KW, heldout=np.array([[0, 10**6]]), label="x:p")


def test_old_weight_files_without_w0_still_load(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    old = {"w1": rng.normal(size=(5, 3)).astype(np.float32), "b1": np.zeros(5, np.float32),
           "w2": rng.normal(size=(2, 5)).astype(np.float32), "b2": np.zeros(2, np.float32)}
    save_file(old, str(tmp_path / "w.safetensors"))
    loaded = load_weights(tmp_path / "w.safetensors")
    assert loaded["w0"].shape == (2, 3) and not loaded["w0"].any()
    x = rng.normal(size=(4, 3))
    np.testing.assert_allclose(project(loaded, x), project(old, x), rtol=1e-6)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("change,needle", [
    (lambda e, t: (e[:, :, None], t), "2-D"),
    (lambda e, t: (e.astype(np.int32), t), "floating point"),
    (lambda e, t: (e, t[:, :2]), "[n, 3]"),
    (lambda e, t: (e, t.astype(np.float32)), "integers"),
    (lambda e, t: (e, t[:0]), "no triplets"),
    (lambda e, t: (e, np.where(t == t[3, 1], 50, t)), "outside 0..49"),
    (lambda e, t: (e, np.where(t == t[3, 1], -1, t)), "outside 0..49"),
    (lambda e, t: (np.where(np.arange(50)[:, None] == 9, np.nan, e).astype(np.float32), t),
     "row 9"),
])
def test_bad_inputs_are_named(change, needle):
    emb, trip = small_problem()
    emb, trip = change(emb, trip)
    with pytest.raises(TrainingError, match="x:p") as info:
        train_projection(emb, trip, **KW, label="x:p")
    assert needle in str(info.value)


@pytest.mark.parametrize("key,value", [
    ("hidden", 0), ("out", -1), ("epochs", 1.5), ("batch_size", 0), ("learning_rate", 0.0),
    ("learning_rate", float("nan")), ("margin", -0.1), ("optimizer", "rmsprop"),
    ("momentum", 1.0), ("weight_decay", -1.0),
])
def test_bad_hyperparameters_are_named(key, value):
    emb, trip = small_problem()
    with pytest.raises(TrainingError, match=key):
        train_projection(emb, trip, **{**KW, key: value})


def test_input_dimension_must_match_layer():
    emb, trip = small_problem()
    with pytest.raises(TrainingError, match="dimension 12 .* input layer is 768"):
        train_projection(emb, trip, **KW, in_dim=768)
    train_projection(emb, trip, **KW, in_dim=12)


# ---------------------------------------------------------------- files

def test_save_load_roundtrip(tmp_path):
    emb, trip = small_problem()
    result = train_projection(emb, trip, **KW)
    path = tmp_path / "build" / "r" / "p" / "weights.safetensors"
    save_weights(path, result)
    loaded = load_weights(path)
    assert set(loaded) == set(KEYS)
    expected = {"w1": (16, 12), "b1": (16,), "w2": (6, 16), "b2": (6,), "w0": (6, 12)}
    for k in KEYS:
        assert loaded[k].dtype == np.float32 and loaded[k].shape == expected[k]
        assert loaded[k].tobytes() == result.weights[k].tobytes()
    np.testing.assert_array_equal(project(loaded, emb), project(result.weights, emb))
    info = json.loads((path.parent / "training.json").read_text())
    assert info["losses"] == result.losses
    assert info["config"]["layers"] == [12, 16, 6]
    assert info["shapes"] == {k: list(v) for k, v in expected.items()}
    from safetensors import safe_open
    with safe_open(str(path), "np") as handle:
        meta = json.loads(handle.metadata()["oxidize"])
    assert meta["format"] == "oxidize-mlp" and meta["layers"] == [12, 16, 6]
    assert sorted(p.name for p in path.parent.iterdir()) == ["training.json", "weights.safetensors"]


def test_failed_save_leaves_no_target_and_no_temp_file(tmp_path, monkeypatch):
    import safetensors.numpy

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken)
    result = TrainResult(weights={k: np.zeros(2, np.float32) for k in KEYS}, losses=[1.0],
                         seconds=0.1, config={"layers": [2, 2, 2]})
    with pytest.raises(OSError):
        save_weights(tmp_path / "weights.safetensors", result)
    assert list(tmp_path.iterdir()) == []


def test_load_weights_errors(tmp_path):
    with pytest.raises(TrainingError, match="no weights file"):
        load_weights(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(TrainingError, match="delete it"):
        load_weights(bad)
