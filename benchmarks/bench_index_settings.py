"""USearch storage and build expansion, side by side: the table behind ``oxidize/search/index.py``.

Run: ``python -m benchmarks.bench_index_settings [--items 100000] [--settings 256:f32:128,256:f16:64,…]``.

For each setting (dimensions, storage ``f32``/``f16``/``i8``, or ``i8r``: an i8 graph whose
candidates are ranked by exact cosine from f16 rows, as oxidize searches,
``oxidize/search/vector_rows.py``; ``expansion_add``), in its own
process: clustered stand-in vectors (one centre per 50 items, as ``bench_query``), the graph
built with every core, the search expansion calibrated as oxidize does
(``oxidize.search.recall.calibrate``), then recall@10 against exact search on 300 other queries, the
median query time, and the graph's memory. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json

from benchmarks._common import header, python, run

SETTINGS = "256:f32:128,256:f16:128,256:i8:128,256:i8r:128,768:f16:128,768:i8r:128"

ONE = r"""
import json, sys, time, numpy as np
import onnxruntime  # noqa: F401 - before usearch (oxidize/search/index.py)
from usearch.index import Index
from oxidize.search.index import CONNECTIVITY
from oxidize.search.recall import calibrate, exact_top
from oxidize.search.vector_rows import KeyedRows, RerankedGraph
n, dim, dtype, ef_add = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
reranked = dtype.endswith("r")  # an i8 graph whose candidates f16 rows rank, as oxidize searches
dtype = dtype.rstrip("r")
connectivity = int(sys.argv[5]) if len(sys.argv) > 5 else CONNECTIVITY
rng = np.random.default_rng(0)
centres = rng.standard_normal(size=(max(1, n // 50), dim), dtype=np.float32)
x = centres[rng.integers(0, len(centres), n)]
x += 0.6 * rng.standard_normal(size=x.shape, dtype=np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
keys = np.arange(1, n + 1, dtype=np.uint64)
index = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=connectivity, expansion_add=ef_add)
start = time.perf_counter()
index.add(keys, x, threads=0)
built = time.perf_counter() - start
graph = index
if reranked:
    index = RerankedGraph(graph, KeyedRows(x.astype(np.float16), keys))
searched = calibrate(index, x, keys)
q = x[rng.choice(n, 300, replace=False)] + rng.normal(scale=(4 / 3) / dim ** 0.5, size=(300, dim)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
exact = [set(keys[r].tolist()) for r in exact_top(x, q, 10)]
times, found = [], []
for v in q:
    t = time.perf_counter()
    found.append(np.ravel(index.search(v[None] if reranked else v, 10).keys))
    times.append(time.perf_counter() - t)
recall = float(np.mean([len(set(f.tolist()) & e) / 10 for f, e in zip(found, exact)]))
print(json.dumps({"build": built, "recall": recall, "ms": float(np.median(times) * 1e3),
                  "ef": searched["expansion_search"],
                  "mb": (graph.memory_usage + (x.shape[0] * dim * 2 if reranked else 0)) / 2 ** 20}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--settings", default=SETTINGS, help="dim:storage:expansion_add[:connectivity], comma-separated")
    parser.add_argument("--quick", action="store_true", help="10,000 items")
    args = parser.parse_args(argv)
    n = 10_000 if args.quick else args.items
    header(f"Index storage and build expansion at {n:,} clustered items")
    print(f"{'dim':>4} {'storage':>7} {'ef_add':>6} {'build s':>8} {'recall@10':>9} {'expansion':>9} "
          f"{'query ms':>8} {'graph MB':>8}")
    for setting in args.settings.split(","):
        dim, dtype, ef_add, *connectivity = setting.split(":")
        r = json.loads(run([python(), "-c", ONE, str(n), dim, dtype, ef_add, *connectivity]).stdout)
        print(f"{dim:>4} {dtype:>7} {ef_add + (':M' + connectivity[0] if connectivity else ''):>6} {r['build']:>8.1f} {r['recall']:>9.3f} {r['ef']:>9} "
              f"{r['ms']:>8.2f} {r['mb']:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
