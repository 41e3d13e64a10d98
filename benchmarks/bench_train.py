"""Training throughput: the Numba trainer vs a plain NumPy step vs the raw float32 matmul rate.

Run: ``python -m benchmarks.bench_train [--seconds 3] [--quick]``. Prints, for each layer size and
batch size, triplets per second and the GFLOP/s achieved (matrix products only:
``6 * (2*in*hidden + 3*hidden*out)`` FLOPs per triplet — forward and weight gradient of
layer 1, forward, weight gradient and input gradient of layer 2, for 3 rows), next to
the rate of one plain ``np.dot`` of the same shape as the first layer's forward product and
of a large square float32 ``np.dot``, measured in the same run.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from oxidize.train import train_projection

SIZES = [(384, 1024, 256), (768, 1024, 256)]
BATCHES = [32, 256]


def flops_per_triplet(d_in, hidden, out):
    return 6 * (2 * d_in * hidden + 3 * hidden * out)


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


def numpy_step(w, m, v, t, xa, xp, xn, margin, lr, b1=0.9, b2=0.999, eps=1e-8):
    """The same training step (forward, triplet loss, backward, Adam) in plain NumPy."""
    bsz = xa.shape[0]
    x = np.concatenate([xa, xp, xn])  # (3b, in)
    h = np.maximum(x @ w["w1"].T + w["b1"], 0)  # (3b, hidden)
    z = h @ w["w2"].T + w["b2"]  # (3b, out)
    norm = np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    y = z / norm
    ya, yp, yn = y[:bsz], y[bsz:2 * bsz], y[2 * bsz:]
    gap = np.einsum("ij,ij->i", ya, yn) - np.einsum("ij,ij->i", ya, yp) + margin
    active = (gap > 0).astype(np.float32)[:, None] / bsz
    loss = np.maximum(gap, 0).mean()
    dy = np.concatenate([active * (yn - yp), -active * ya, active * ya])
    dz = (dy - y * np.einsum("ij,ij->i", y, dy)[:, None]) / norm
    g = {"w2": dz.T @ h, "b2": dz.sum(0)}
    dh = (dz @ w["w2"]) * (h > 0)
    g["w1"] = dh.T @ x
    g["b1"] = dh.sum(0)
    for k in w:
        m[k] = b1 * m[k] + (1 - b1) * g[k]
        v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
        w[k] -= lr * (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
    return loss


def bench_numpy(emb, trip, d_in, hidden, out, batch, seconds):
    rng = np.random.default_rng(0)
    w = {"w1": (rng.standard_normal((hidden, d_in)) * 0.05).astype(np.float32),
         "b1": np.zeros(hidden, np.float32),
         "w2": (rng.standard_normal((out, hidden)) * 0.05).astype(np.float32),
         "b2": np.zeros(out, np.float32)}
    m = {k: np.zeros_like(a) for k, a in w.items()}
    v = {k: np.zeros_like(a) for k, a in w.items()}
    done, t, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sel = trip[(t * batch + np.arange(batch)) % len(trip)]
        t += 1
        numpy_step(w, m, v, t, emb[sel[:, 0]], emb[sel[:, 1]], emb[sel[:, 2]], 0.2, 1e-3)
        done += batch
    return done / (time.perf_counter() - start)


def bench_numba(emb, trip, hidden, out, batch, seconds):
    # size the run from a short probe so that it takes about `seconds`
    probe = trip[: batch * 8]
    t0 = time.perf_counter()
    train_projection(emb, probe, hidden=hidden, out=out, epochs=1, batch_size=batch,
                     learning_rate=1e-3, margin=0.2, seed=0, progress=False)
    rate = len(probe) / (time.perf_counter() - t0)
    n = max(batch * 8, min(len(trip), int(rate * seconds) // batch * batch))
    result = train_projection(emb, trip[:n], hidden=hidden, out=out, epochs=1, batch_size=batch,
                              learning_rate=1e-3, margin=0.2, seed=0, progress=False)
    return n / result.seconds


def bench_torch(emb, trip, d_in, hidden, out, batch, seconds):
    """The same model, loss and optimiser in PyTorch on CPU (None when torch is absent)."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    emb_t = torch.from_numpy(emb)
    trip_t = torch.from_numpy(trip.astype(np.int64))

    def step(t):
        sel = trip_t[(t * batch + torch.arange(batch)) % len(trip_t)]
        x = emb_t[sel.T.reshape(-1)]  # [anchors; positives; negatives]
        y = torch.nn.functional.normalize(model(x), dim=1)
        ya, yp, yn = y[:batch], y[batch:2 * batch], y[2 * batch:]
        loss = torch.clamp((1 - (ya * yp).sum(1)) - (1 - (ya * yn).sum(1)) + 0.2, min=0).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for t in range(3):
        step(t)
    done, t, start = 0, 3, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step(t)
        t += 1
        done += batch
    return done / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--quick", action="store_true", help="1 s per measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 1.0
    try:
        import torch

        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        print("torch: not installed (pip install -e '.[bench]'); the PyTorch column is skipped")
    print(f"cores: {os.cpu_count()}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    square = matmul_gflops(1024, 1024, 1024, args.seconds)
    print(f"np.dot float32 1024x1024x1024: {square:7.1f} GFLOP/s")

    rng = np.random.default_rng(0)
    n_texts = 20000
    trip = rng.integers(0, n_texts, size=(400_000, 3)).astype(np.int32)
    # compile (or load from cache) once, outside the timings
    tiny = rng.standard_normal((10, 4)).astype(np.float32)
    train_projection(tiny, trip[:5] % 10, hidden=4, out=2, epochs=1, batch_size=2,
                     learning_rate=1e-3, margin=0.2, seed=0, progress=False)

    header = (f"{'layers':>15} {'batch':>5} | {'numba trip/s':>12} {'GFLOP/s':>7} {'% matmul':>8} | "
              f"{'torch trip/s':>12} {'numba/torch':>11} | {'numpy trip/s':>12} {'numba/numpy':>11}")
    print(header)
    print("-" * len(header))
    results = []
    for d_in, hidden, out in SIZES:
        emb = rng.standard_normal((n_texts, d_in)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        fl = flops_per_triplet(d_in, hidden, out)
        for batch in BATCHES:
            nb = bench_numba(emb, trip, hidden, out, batch, args.seconds)
            th = bench_torch(emb, trip, d_in, hidden, out, batch, args.seconds)
            npy = bench_numpy(emb, trip, d_in, hidden, out, batch, args.seconds)
            pct = 100 * nb * fl / 1e9 / square
            th_s = f"{th:12,.0f} {nb / th:11.2f}" if th else f"{'–':>12} {'–':>11}"
            print(f"{d_in:>5}>{hidden}>{out:<4} {batch:>5} | {nb:12,.0f} {nb * fl / 1e9:7.1f} {pct:7.0f}% | "
                  f"{th_s} | {npy:12,.0f} {nb / npy:11.2f}", flush=True)
            results.append({"layers": (d_in, hidden, out), "batch": batch, "numba": nb, "torch": th,
                            "numpy": npy, "gflops": nb * fl / 1e9, "matmul_fraction": pct / 100})
    for r in results:
        if r["torch"]:
            goal = 1.0 if r["batch"] >= 256 else 1.5
            print(f"goal {r['layers']} batch {r['batch']}: ≥ {goal}× torch: "
                  f"{'met' if r['numba'] >= goal * r['torch'] else 'NOT met'} ({r['numba'] / r['torch']:.2f}×)"
                  + (f"; ≥ 50% of matmul: {'met' if r['matmul_fraction'] >= 0.5 else 'NOT met'} "
                     f"({100 * r['matmul_fraction']:.0f}%)" if r["batch"] >= 256 else ""))
    return {"square_gflops": square, "rows": results}

if __name__ == "__main__":
    main()
