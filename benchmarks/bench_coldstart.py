"""Cold start: the first build's Numba compile time, and what the compile cache saves.

Run: ``python -m benchmarks.bench_coldstart [--repeats 2]``. Each measurement is a fresh
process that imports ``oxidize.train.trainer`` and trains a tiny projection (1 epoch, 64 triplets):
with an empty Numba cache (``NUMBA_CACHE_DIR`` set to a new temporary folder: every kernel
is compiled), then again with that folder filled (``cache=True``: kernels loaded from disk).
The baseline is the same process doing the same training with the kernels already compiled
in it (the second call), so the figures are the compile/load cost alone.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from benchmarks._common import header, oxidize_env, python, run

CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from oxidize.train.trainer import train_projection
t1 = time.perf_counter()
rng = np.random.default_rng(0)
emb = rng.standard_normal((100, 384)).astype(np.float32)
trip = rng.integers(0, 100, size=(64, 3)).astype(np.int32)
def once():
    s = time.perf_counter()
    train_projection(emb, trip, hidden=64, out=16, epochs=1, batch_size=32, learning_rate=1e-3,
                     margin=0.2, seed=0, progress=False)
    return time.perf_counter() - s
first = once()
second = once()
print(json.dumps({"import": t1 - t0, "first": first, "second": second}))
"""


def child(cache_dir: str) -> dict:
    env = oxidize_env({"NUMBA_CACHE_DIR": cache_dir})
    return json.loads(run([python(), "-c", CHILD], env=env).stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 repeat")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    header("cold start: Numba compile vs compile cache")
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="oxidize-numba-") as cache_dir:
            cold.append(child(cache_dir))
            warm.append(child(cache_dir))
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    c_first, w_first, steady = med(cold, "first"), med(warm, "first"), med(cold + warm, "second")
    print(f"{'':>34} {'seconds':>8}")
    print(f"{'import oxidize.train.trainer (numpy)':>34} {med(cold, 'import'):8.2f}")
    print(f"{'first train, empty cache':>34} {c_first:8.2f}   (compile: {c_first - steady:.2f}s)")
    print(f"{'first train, cache filled':>34} {w_first:8.2f}   (load: {w_first - steady:.2f}s)")
    print(f"{'same train, already compiled':>34} {steady:8.3f}")
    print(f"compile cache saves {c_first - w_first:.2f}s per process "
          f"({(c_first - steady) / max(w_first - steady, 1e-9):.0f}× less start-up)")
    return {"compile_s": c_first - steady, "cached_load_s": w_first - steady, "saved_s": c_first - w_first}


if __name__ == "__main__":
    main()
