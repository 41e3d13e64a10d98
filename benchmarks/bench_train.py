"""Training throughput: the Numba trainer vs PyTorch CPU vs plain NumPy vs the float32 matmul rate.

Run: ``python -m benchmarks.bench_train [--triplets 32768] [--repeats 5] [--quick]``.

All three train the same model, loss and optimiser (oxidize's, see :mod:`oxidize.train.trainer`):
``y = normalize(W0 x + W2 relu(W1 x + b1) + b2)`` — a linear path ``W0 [out, in]`` (trained,
no bias of its own) plus an MLP residual — with the batch-mean triplet loss
``max(0, (1 - a·p) - (1 - a·n) + margin)`` on the unit outputs and Adam (β1 0.9, β2 0.999,
eps 1e-8, bias-corrected, no weight decay), all float32.

Each measurement trains the same fixed number of triplets (the same rows; oxidize visits them
in its own seeded permutation of one epoch, ``init="pca"`` so that every weight moves, and its ``result.seconds``
counts only the epoch loop; the baselines time only their step loop). For every layer size
and batch size there are ``--repeats`` rounds; each round runs oxidize, PyTorch and NumPy
once each, the first of them rotating from round to round, so that load drift on a shared
machine hits all three alike. Reported: the median triplets/s of each, and the per-round
ratios numba/torch and numba/numpy (their spread shows how noisy the machine was). A
warm-up run of each (JIT compile, PyTorch's first steps, BLAS thread pools) precedes the
rounds of every configuration and is not timed.

GFLOP/s counts matrix products only: per stacked row (3 per triplet) the forward and weight
gradient of ``W1`` (2 × in·hidden), the forward, weight gradient and input gradient of
``W2`` (3 × hidden·out) and the forward and weight gradient of ``W0`` (2 × in·out)
multiply-adds, i.e. ``6 * (2*in*hidden + 3*hidden*out + 2*in*out)`` FLOPs per triplet — the
seven ``np.dot`` of :func:`oxidize.train.kernels.loss_and_grads`. It is shown as a fraction of the
rate of a square float32 ``np.dot`` (1024³) measured in every round of the same row, so that
both see the same load (median over the row's rounds).

The in-batch loss (``training.loss: in_batch``) is measured for oxidize only (the
baselines implement the triplet loss): one more row per size and batch, interleaved with the
square matmul the same way. Its FLOPs add the three ``B × 2B`` similarity products per batch
(``s = a c^T``, ``G c``, ``G^T a``: ``12 · B · out`` per triplet) to the MLP's count.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from oxidize.train.trainer import train_projection

SIZES = [(384, 1024, 256), (768, 1024, 256)]
BATCHES = [32, 256]
MARGIN = 0.2
LR = 1e-3
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
IMPLS = ("numba", "torch", "numpy")
#: Seconds of rest before each measurement. PyTorch's OpenMP threads and OpenBLAS's keep
#: spinning for a while after their last operation; without a pause the next measurement
#: starts on cores still busy with them (oxidize's BLAS-thread probe then saw 2 threads as
#: the slower count and trained at 6,800 instead of 9,500-11,100 triplets/s).
PAUSE_S = 1.0


def flops_per_triplet(d_in, hidden, out):
    return 6 * (2 * d_in * hidden + 3 * hidden * out + 2 * d_in * out)


def matmul_gflops(m, k, n, seconds):
    a = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
    c = np.empty((m, n), np.float32)
    np.dot(a, b, out=c)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        np.dot(a, b, out=c)
        reps += 1
    return 2.0 * m * k * n * reps / (time.perf_counter() - start) / 1e9


# --------------------------------------------------------------------------- oxidize (Numba)

def bench_numba(emb, trips, hidden, out, batch, loss="triplet"):
    """Triplets/s of one epoch of :func:`train_projection` over ``trips`` (epoch loop only)."""
    result = train_projection(emb, trips, hidden=hidden, out=out, epochs=1, batch_size=batch,
                              learning_rate=LR, margin=MARGIN, seed=0, progress=False, init="pca",
                              loss=loss)
    return len(trips) / result.seconds


def in_batch_flops_per_triplet(d_in, hidden, out, batch):
    """The MLP's products plus the in-batch loss's three ``B × 2B`` similarity products."""
    return flops_per_triplet(d_in, hidden, out) + 12 * batch * out


def measure_in_batch(emb, trips, hidden, out, batch, repeats, seconds, label=""):
    """Triplets/s of oxidize with the in-batch loss, and the square matmul rate, per round."""
    bench_numba(emb, trips[:min(len(trips), 16 * batch)], hidden, out, batch, "in_batch")  # warm-up
    rates = {"numba": [], "matmul": []}
    for r in range(repeats):
        time.sleep(PAUSE_S)
        rates["numba"].append(bench_numba(emb, trips, hidden, out, batch, "in_batch"))
        time.sleep(PAUSE_S)
        rates["matmul"].append(matmul_gflops(1024, 1024, 1024, seconds))
        print(f"  {label} in_batch round {r + 1}/{repeats}: numba {rates['numba'][-1]:8,.0f}; "
              f"np.dot 1024³ {rates['matmul'][-1]:.0f} GFLOP/s", flush=True)
    return rates


# --------------------------------------------------------------------------- plain NumPy

def numpy_init(d_in, hidden, out, seed=0):
    rng = np.random.default_rng(seed)
    return {"w0": (rng.standard_normal((out, d_in)) * 0.05).astype(np.float32),
            "w1": (rng.standard_normal((hidden, d_in)) * 0.05).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "w2": (rng.standard_normal((out, hidden)) * 0.05).astype(np.float32),
            "b2": np.zeros(out, np.float32)}


def numpy_loss_grads(w, x, bsz, margin):
    """Loss and gradients for ``x = [anchors; positives; negatives]`` (3·bsz rows), plain NumPy."""
    h = np.maximum(x @ w["w1"].T + w["b1"], 0)  # (3b, hidden)
    z = x @ w["w0"].T + h @ w["w2"].T + w["b2"]  # (3b, out): linear path + residual
    norm = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    y = z / norm
    ya, yp, yn = y[:bsz], y[bsz:2 * bsz], y[2 * bsz:]
    gap = (1 - np.einsum("ij,ij->i", ya, yp)) - (1 - np.einsum("ij,ij->i", ya, yn)) + margin
    loss = np.maximum(gap, 0).mean()
    active = (gap > 0).astype(np.float32)[:, None] / bsz
    dy = np.concatenate([active * (yn - yp), -active * ya, active * ya])
    dz = (dy - y * np.einsum("ij,ij->i", y, dy)[:, None]) / norm
    dh = (dz @ w["w2"]) * (h > 0)
    g = {"w0": dz.T @ x, "w2": dz.T @ h, "b2": dz.sum(0), "w1": dh.T @ x, "b1": dh.sum(0)}
    return loss, g


def numpy_adam(w, g, m, v, t, lr):
    for k in w:
        m[k] = BETA1 * m[k] + (1 - BETA1) * g[k]
        v[k] = BETA2 * v[k] + (1 - BETA2) * g[k] * g[k]
        w[k] -= lr * (m[k] / (1 - BETA1 ** t)) / (np.sqrt(v[k] / (1 - BETA2 ** t)) + EPS)


def bench_numpy(emb, trips, d_in, hidden, out, batch):
    w = numpy_init(d_in, hidden, out)
    m = {k: np.zeros_like(a) for k, a in w.items()}
    v = {k: np.zeros_like(a) for k, a in w.items()}
    start = time.perf_counter()
    for t, lo in enumerate(range(0, len(trips), batch), start=1):
        sel = trips[lo:lo + batch]
        x = emb[sel.T.ravel()]  # [anchors; positives; negatives]
        _, g = numpy_loss_grads(w, x, len(sel), MARGIN)
        numpy_adam(w, g, m, v, t, LR)
    return len(trips) / (time.perf_counter() - start)


# --------------------------------------------------------------------------- PyTorch

def torch_model(d_in, hidden, out):
    """The same model as an ``nn.Module``: ``normalize(w0(x) + mlp(x))``."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Projection(nn.Module):
        def __init__(self):
            super().__init__()
            self.w0 = nn.Linear(d_in, out, bias=False)
            self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, out))

        def forward(self, x):
            return F.normalize(self.w0(x) + self.mlp(x), dim=1)

    torch.manual_seed(0)
    return Projection()


def torch_loss(model, x, bsz, margin):
    import torch

    y = model(x)
    ya, yp, yn = y[:bsz], y[bsz:2 * bsz], y[2 * bsz:]
    return torch.clamp((1 - (ya * yp).sum(1)) - (1 - (ya * yn).sum(1)) + margin, min=0).mean()


def bench_torch(emb, trips, d_in, hidden, out, batch):
    """Triplets/s of the same training in PyTorch on CPU (None when torch is absent)."""
    try:
        import torch
    except ImportError:
        return None
    model = torch_model(d_in, hidden, out)
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
    emb_t = torch.from_numpy(emb)
    trip_t = torch.from_numpy(np.ascontiguousarray(trips, dtype=np.int64))
    start = time.perf_counter()
    for lo in range(0, len(trip_t), batch):
        sel = trip_t[lo:lo + batch]
        x = emb_t[sel.T.reshape(-1)]  # [anchors; positives; negatives]
        loss = torch_loss(model, x, len(sel), MARGIN)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(trips) / (time.perf_counter() - start)


# --------------------------------------------------------------------------- driver

def measure(emb, trips, d_in, hidden, out, batch, repeats, have_torch, seconds, label=""):
    """Triplets/s of each implementation in ``repeats`` interleaved rounds, and the square
    matmul rate measured once per round (key ``"matmul"``, GFLOP/s)."""
    runs = {"numba": lambda t: bench_numba(emb, t, hidden, out, batch),
            "torch": lambda t: bench_torch(emb, t, d_in, hidden, out, batch),
            "numpy": lambda t: bench_numpy(emb, t, d_in, hidden, out, batch)}
    names = [k for k in IMPLS if k != "torch" or have_torch]
    warm = trips[:min(len(trips), 16 * batch)]
    for name in names:  # warm-up, untimed
        runs[name](warm)
    rates = {k: [] for k in (*names, "matmul")}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            time.sleep(PAUSE_S)  # let the previous runtime's worker threads go idle
            rates[name].append(runs[name](trips))
        time.sleep(PAUSE_S)
        rates["matmul"].append(matmul_gflops(1024, 1024, 1024, seconds))
        line = " ".join(f"{k} {rates[k][-1]:8,.0f}" for k in order)
        ratios = f"numba/torch {rates['numba'][-1] / rates['torch'][-1]:.2f}, " if have_torch else ""
        print(f"  {label} round {r + 1}/{repeats} ({' → '.join(order)}): {line}  "
              f"({ratios}numba/numpy {rates['numba'][-1] / rates['numpy'][-1]:.2f}); "
              f"np.dot 1024³ {rates['matmul'][-1]:.0f} GFLOP/s", flush=True)
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplets", type=int, default=None,
                        help="triplets trained per measurement (default 32768; --quick 16384)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved rounds per configuration (default 5; --quick 3)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="time per square-matmul measurement (default 1)")
    parser.add_argument("--quick", action="store_true", help="16384 triplets, 3 rounds")
    args = parser.parse_args(argv)
    n_trip = args.triplets or (16384 if args.quick else 32768)
    repeats = args.repeats or (3 if args.quick else 5)
    seconds = args.seconds or 1.0
    try:
        import torch

        have_torch = True
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        have_torch = False
        print("torch: not installed (pip install -e '.[bench]'); the PyTorch column is skipped")
    print(f"cores: {os.cpu_count()}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"OXIDIZE_BLAS_THREADS={os.environ.get('OXIDIZE_BLAS_THREADS')}")
    print(f"{n_trip:,} triplets per measurement, {repeats} interleaved rounds per configuration, "
          f"medians", flush=True)
    squares = [matmul_gflops(1024, 1024, 1024, seconds)]
    print(f"np.dot float32 1024x1024x1024: {squares[-1]:7.1f} GFLOP/s", flush=True)

    rng = np.random.default_rng(0)
    n_texts = 20000
    trips = rng.integers(0, n_texts, size=(n_trip, 3)).astype(np.int64)
    # compile (or load from cache) once, outside the timings
    tiny = rng.standard_normal((10, 4)).astype(np.float32)
    train_projection(tiny, trips[:5] % 10, hidden=4, out=2, epochs=1, batch_size=2,
                     learning_rate=LR, margin=MARGIN, seed=0, progress=False, init="pca")

    measured, in_batch = [], []
    for d_in, hidden, out in SIZES:
        emb = rng.standard_normal((n_texts, d_in)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        for batch in BATCHES:
            label = f"{d_in}>{hidden}>{out} batch {batch}"
            measured.append(((d_in, hidden, out), batch,
                             measure(emb, trips, d_in, hidden, out, batch, repeats, have_torch,
                                     seconds, label)))
            squares.extend(measured[-1][2]["matmul"])
            in_batch.append(((d_in, hidden, out), batch,
                             measure_in_batch(emb, trips, hidden, out, batch, repeats, seconds, label)))
            squares.extend(in_batch[-1][2]["matmul"])
    square = statistics.median(squares)
    print(f"np.dot float32 1024³ median of {len(squares)}: {square:.1f} GFLOP/s "
          f"(from {min(squares):.1f} to {max(squares):.1f})")

    header = (f"{'layers':>15} {'batch':>5} | {'numba trip/s':>12} {'GFLOP/s':>7} {'% matmul':>8} | "
              f"{'torch trip/s':>12} {'numba/torch':>11} | {'numpy trip/s':>12} {'numba/numpy':>11} | "
              f"numba/torch by round")
    print(header)
    print("-" * len(header))
    results = []
    for (d_in, hidden, out), batch, rates in measured:
        fl = flops_per_triplet(d_in, hidden, out)
        nb = statistics.median(rates["numba"])
        th = statistics.median(rates["torch"]) if have_torch else None
        npy = statistics.median(rates["numpy"])
        gflops = nb * fl / 1e9
        pct = 100 * gflops / statistics.median(rates["matmul"])  # under this row's load
        if th:
            th_s = f"{th:12,.0f} {nb / th:11.2f}"
            by_round = " ".join(f"{a / b:.2f}" for a, b in zip(rates["numba"], rates["torch"]))
        else:
            th_s, by_round = f"{'–':>12} {'–':>11}", "–"
        print(f"{d_in:>5}>{hidden}>{out:<4} {batch:>5} | {nb:12,.0f} {gflops:7.1f} {pct:7.0f}% | "
              f"{th_s} | {npy:12,.0f} {nb / npy:11.2f} | {by_round}", flush=True)
        results.append({"layers": (d_in, hidden, out), "batch": batch, "numba": nb, "torch": th,
                        "numpy": npy, "gflops": gflops, "matmul_fraction": pct / 100,
                        "rounds": rates})
    print("\nin-batch loss (oxidize only; FLOPs include the B × 2B similarity products)")
    print(f"{'layers':>15} {'batch':>5} | {'numba trip/s':>12} {'GFLOP/s':>7} {'% matmul':>8} | "
          f"{'vs triplet':>10}")
    in_batch_rows = []
    for ((d_in, hidden, out), batch, rates), row in zip(in_batch, results):
        nb = statistics.median(rates["numba"])
        gflops = nb * in_batch_flops_per_triplet(d_in, hidden, out, batch) / 1e9
        fraction = gflops / statistics.median(rates["matmul"])
        print(f"{d_in:>5}>{hidden}>{out:<4} {batch:>5} | {nb:12,.0f} {gflops:7.1f} {100 * fraction:7.0f}% | "
              f"{nb / row['numba']:9.2f}×", flush=True)
        in_batch_rows.append({"layers": (d_in, hidden, out), "batch": batch, "numba": nb,
                              "gflops": gflops, "matmul_fraction": fraction, "rounds": rates})
        if batch >= 256:
            print(f"goal {(d_in, hidden, out)} batch {batch}, in_batch: ≥ 50% of matmul: "
                  f"{'met' if fraction >= 0.5 else 'NOT met'} ({100 * fraction:.0f}%)")
    for r in results:
        if r["torch"]:
            goal = 1.0 if r["batch"] >= 256 else 1.5
            print(f"goal {r['layers']} batch {r['batch']}: ≥ {goal}× torch: "
                  f"{'met' if r['numba'] >= goal * r['torch'] else 'NOT met'} ({r['numba'] / r['torch']:.2f}×)"
                  + (f"; ≥ 50% of matmul: {'met' if r['matmul_fraction'] >= 0.5 else 'NOT met'} "
                     f"({100 * r['matmul_fraction']:.0f}%)" if r["batch"] >= 256 else ""))
    return {"square_gflops": square, "square_gflops_runs": squares, "triplets": n_trip,
            "repeats": repeats, "rows": results, "in_batch_rows": in_batch_rows}


if __name__ == "__main__":
    main()
