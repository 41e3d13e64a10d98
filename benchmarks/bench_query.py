"""Search: index build speed and recall, `oxidize query` cold start, warm query latency.

Run: ``python -m benchmarks.bench_query [--quick] [--sizes 10000,100000,1000000]``.

1. **Index build** from stand-in vectors (256-d, clustered like real embeddings: 1 centre per
   50 items plus noise) at each size, for a few USearch settings (connectivity M,
   expansion_add ef): vectors/s with the machine's threads, peak RSS of the building
   process, and recall@10 of the HNSW search (``oxidize.search.index.EXPANSION_SEARCH``) against
   exact search on 500 queries. Each setting runs in its own process.
2. **Cold query** at 100k items: ``oxidize query`` in a prepared project (model load,
   weights, index, one query) against a plain script that loads the same model with
   onnxruntime and brute-forces numpy over the same projected vectors. Interleaved, medians.
3. **Warm latency**: a :class:`oxidize.search.ProjectionSearch` held open, the median time of
   one ``query`` (embed, project, search, read the table) at the largest size.
4. **Hybrid against dense** (``--hybrid``, at 10k and 100k): items with real words — the
   notes and commit messages of patina-dev.db repeated to the size, each with a number of
   its own (so terms are as common as in a real log), else generated sentences — and
   oxidize's own questions (benchmarks/queries/); the median warm query of each mode
   (dense, lexical, hybrid) in alternation, their ratio, and what the lexical index adds to
   writing the index (its FTS5 build timed against the whole ``write_index``).

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import header, interleaved, python, run

DIM, BASE_DIM, HIDDEN = 256, 384, 1024
SETTINGS = [(16, 128), (16, 64), (12, 48)]  # oxidize.search.index uses the first

BUILD = r"""
import json, resource, sys, time, numpy as np
from usearch.index import Index
n, dim, conn, ef_add, ef_search = map(int, sys.argv[1:6])
rng = np.random.default_rng(0)
centres = rng.normal(size=(max(1, n // 50), dim)).astype(np.float32)
x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
index = Index(ndim=dim, metric="cos", dtype="f32", connectivity=conn, expansion_add=ef_add,
              expansion_search=ef_search)
start = time.perf_counter()
index.add(np.arange(n, dtype=np.uint64), x, threads=0)
seconds = time.perf_counter() - start
q = x[rng.choice(n, 500, replace=False)] + 0.1 * rng.normal(size=(500, dim)).astype(np.float32)
found = index.search(q, 10).keys
t = time.perf_counter()
found = index.search(q, 10).keys
hnsw_ms = (time.perf_counter() - t) / 500 * 1e3
t = time.perf_counter()
exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
exact_ms = (time.perf_counter() - t) / 500 * 1e3
recall = float(np.mean([len(set(found[i].tolist()) & set(exact[i].tolist())) / 10 for i in range(500)]))
print(json.dumps({"seconds": seconds, "rate": n / seconds, "recall": recall, "hnsw_ms": hnsw_ms,
                  "exact_ms": exact_ms, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BASELINE = r"""
import sys, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
from safetensors.numpy import load_file
model, tokenizer, weights, vectors, text = sys.argv[1:6]
tok = Tokenizer.from_file(tokenizer)
enc = tok.encode(text)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
feed = {"input_ids": np.array([enc.ids], np.int64), "attention_mask": np.array([enc.attention_mask], np.int64)}
names = [i.name for i in session.get_inputs()]
if "token_type_ids" in names:
    feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
hidden = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
x = hidden[0].mean(axis=0)
x /= np.linalg.norm(x)
w = load_file(weights)
z = w["w0"] @ x + w["w2"] @ np.maximum(w["w1"] @ x + w["b1"], 0) + w["b2"]
z /= np.linalg.norm(z)
v = np.load(vectors)
top = np.argpartition(-(v @ z), 10)[:10]
print(sorted(top.tolist()))
"""


SIZE_LINE = r"""
import json, resource, sys, tempfile, time, numpy as np
from pathlib import Path
import onnxruntime  # noqa: F401 - before usearch (oxidize/search/index.py)
from oxidize.search import index as ix
from oxidize.search.index import EXACT_MAX
from oxidize.search.recall import exact_top
from oxidize.search.update import update_index
from oxidize.search.population import Item
n, dim, base_dim = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
grow = max(1, n // 100)
rng = np.random.default_rng(0)

def stand_in(total, d, block=100_000):
    # in float32 blocks: the vectors themselves are what an index step holds, not a float64 copy
    centres = rng.standard_normal(size=(max(1, total // 50), d), dtype=np.float32)
    x = centres[rng.integers(0, len(centres), total)]
    for lo in range(0, total, block):
        part = x[lo:lo + block]
        part += 0.6 * rng.standard_normal(size=part.shape, dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return x

def recall_of(path, x, keys, q):
    searcher = ix.Searcher(path)
    exact = [set(keys[r].tolist()) for r in exact_top(x, q, 10)]
    times, found = [], []
    for v in q:
        t = time.perf_counter()
        found.append([k for k, _ in searcher.nearest(v, 10)])
        times.append(time.perf_counter() - t)
    return (float(np.mean([len(set(f) & e) / 10 for f, e in zip(found, exact)])),
            float(np.median(times) * 1e3), searcher.searched)

queries = 300  # items never indexed, the queries of the recall measured
total = n + grow + queries
projected, base = stand_in(total, dim), stand_in(total, base_dim)
keys = np.arange(1, total + 1, dtype=np.uint64)
items = [Item(int(k), int(k), "session.decision", f"s{k // 7}", "2025-01-01", f"note {k} topic{k % 997}")
         for k in keys]
meta = {"model_fingerprint": "m", "weights_sha256": "w", "pair_type": "same_session"}
held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the vectors and items alone
out = Path(tempfile.mkdtemp())
weights = out / "w.bin"
weights.write_bytes(b"w")
parts = {}

def timed(module, name, label):  # each part of the index step, by the function that does it
    inner = getattr(module, name)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            parts[label] = parts.get(label, 0.0) + time.perf_counter() - t
    setattr(module, name, wrapper)

from oxidize.search import lexical, vector_rows
timed(ix, "calibrate", "calibration")
timed(vector_rows, "write", "vector rows")
timed(lexical, "create", "lexical index")
start = time.perf_counter()
ix.write_index(out, items[:n], base[:n], projected[:n], meta, weights_file=weights)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the index step's own peak
build_parts = {**parts, "graph and table": seconds - sum(parts.values())}  # the update adds to parts
# recall of queries the index has not seen: items held out of it, as on real vectors a new
# note or a question is (oxidize/search/recall.py) ...
q = projected[n + grow:]
recall, ms, searched = recall_of(out, projected[:n], keys[:n], q)
# ... and of queries far from every item: an item moved by noise of norm 4/3 (the calibration's
# model the calibration keeps as a floor; on real vectors harder than the questions people ask)
far = projected[rng.choice(n, queries, replace=False)] + rng.normal(scale=(4 / 3) / dim ** 0.5, size=(queries, dim)).astype(np.float32)
far /= np.linalg.norm(far, axis=1, keepdims=True)
far_recall, far_ms, _ = recall_of(out, projected[:n], keys[:n], far)
plain = ix.Searcher(out, base=True)  # --base / --compare: the plain embeddings, exact
base_times = []
for v in base[rng.choice(n, 20, replace=False)]:
    t = time.perf_counter()
    plain.nearest(v, 10)
    base_times.append(time.perf_counter() - t)
plain.close()
del plain
import gc, threading, psutil
gc.collect()
sampled, stop = [0], threading.Event()

def sample():  # the update's own peak: ru_maxrss would keep the searches' mapped pages
    while not stop.wait(0.05):
        sampled[0] = max(sampled[0], psutil.Process().memory_info().rss)

sampler = threading.Thread(target=sample)
sampler.start()
start = time.perf_counter()
done = update_index(out, items[:n + grow], base[:n + grow], projected[:n + grow], meta, weights)
grown = time.perf_counter() - start
stop.set()
sampler.join()
recall_after, _, searched_after = recall_of(out, projected[:n + grow], keys[:n + grow], q)
print(json.dumps({"recall": recall, "far": far_recall, "far_ms": far_ms, "seconds": seconds, "parts": build_parts, "ms": ms, "rss_mb": peak, "held_mb": held,
                  "base_ms": float(np.median(base_times) * 1e3), "ef": searched["expansion_search"], "calibrated": searched["recall@10"],
                  "exact": searched.get("exact"), "grow": grow, "grow_s": grown,
                  "updated": done is not None, "recall_after": recall_after,
                  "rss_after_mb": sampled[0] / 2**20}))
"""


def size_lines(sizes: list[int]) -> None:
    """One line per size: the whole index step of a projection (oxidize's
    ``write_index``: the projected graph, 256-d, calibrated to recall 0.99; the plain
    embeddings, 384-d like the default model's, and the projected vectors as f16 rows; the item table and its
    lexical index), clustered stand-in vectors, recall of the projected search on 300
    items held out of the index (and on 300 items moved by noise, far from every item), the
    exact search of the plain embeddings (``--base``); then 1% more items added in place
    (``update_index``)."""
    header(f"Index per size: what a projection's index step costs and finds ({DIM}-d projected, "
           f"{BASE_DIM}-d plain)")
    from oxidize.search.index import EXACT_MAX

    for n in sizes:
        r = json.loads(run([python(), "-c", SIZE_LINE, str(n), str(DIM), str(BASE_DIM)]).stdout)
        how = "exact" if n <= EXACT_MAX else f"expansion {r['ef']}, calibrated recall {r['calibrated']:.3f}"
        how += f"; queries far from every item: recall@10 {r['far']:.3f}, {r['far_ms']:.2f} ms"
        print(f"items {n}: recall@10 {r['recall']:.3f}, build {r['seconds']:.1f} s, peak {r['rss_mb']:.0f} MB, "
              f"warm query {r['ms']:.2f} ms  ({how}; --base exact {r['base_ms']:.1f} ms; +{r['grow']:,} items "
              f"{'added in place' if r['updated'] else 'REBUILT'} in {r['grow_s']:.1f} s, recall@10 then "
              f"{r['recall_after']:.3f}, peak of the update {r['rss_after_mb']:.0f} MB; the vectors and items "
              f"alone {r['held_mb']:.0f} MB; the build's parts: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in r["parts"].items()) + ")", flush=True)


def build_figures(sizes: list[int]) -> None:
    header("Index build from stand-in vectors (256-d, clustered)")
    print(f"{'items':>9} {'M':>3} {'ef':>4} {'vectors/s':>10} {'build s':>8} {'peak MB':>8} "
          f"{'recall@10':>9} {'hnsw ms/q':>9} {'exact ms/q':>10}")
    from oxidize.search.index import EXPANSION_SEARCH

    for n in sizes:
        for conn, ef in (SETTINGS if n <= 100_000 else SETTINGS[:1]):
            proc = run([python(), "-c", BUILD, str(n), str(DIM), str(conn), str(ef), str(EXPANSION_SEARCH)])
            r = json.loads(proc.stdout)
            print(f"{n:>9,} {conn:>3} {ef:>4} {r['rate']:>10,.0f} {r['seconds']:>8.1f} {r['rss_mb']:>8.0f} "
                  f"{r['recall']:>9.3f} {r['hnsw_ms']:>9.2f} {r['exact_ms']:>10.2f}", flush=True)


def make_project(root: Path, n: int, texts=None) -> tuple[Path, Path]:
    """A project with recipe x:semantic on the default model, a random 384→1024→256
    projection and an index of ``n`` stand-in items; returns (weights, projected .npy)."""
    import numpy as np

    from oxidize.embed.models import fingerprint_record, resolve_model
    from oxidize.search.index import write_index
    from oxidize.search.population import Item
    from oxidize.projection import project, write_weights

    (root / "recipes/x").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    (root / "recipes/x/oxidize.yaml").write_text(
        "version: 1\neventlog: events.jsonl\nprojections:\n  semantic:\n    layers: [384, 1024, 256]\n")
    (root / "recipes/x/events.jsonl").write_text("")
    out = root / "build/x/semantic"
    out.mkdir(parents=True)
    (root / "build/x/model.json").write_text(json.dumps(fingerprint_record(resolve_model("all-minilm-l6-v2", None))))
    rng = np.random.default_rng(0)
    w = {"w1": rng.normal(scale=0.05, size=(HIDDEN, BASE_DIM)).astype(np.float32),
         "b1": np.zeros(HIDDEN, np.float32),
         "w2": rng.normal(scale=0.05, size=(DIM, HIDDEN)).astype(np.float32),
         "b2": np.zeros(DIM, np.float32),
         "w0": rng.normal(scale=0.05, size=(DIM, BASE_DIM)).astype(np.float32)}
    write_weights(out / "weights.safetensors", w)
    base = rng.normal(size=(n, BASE_DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    projected = project(w, base).astype(np.float32)
    items = [Item(i + 1, i + 1, "session.decision", f"s{i // 20}", "2025-01-01",
                  texts[i] if texts else f"stand-in text {i}") for i in range(n)]
    write_index(out, items, base, projected, {"count_note": "stand-in"})
    np.save(root / "projected.npy", projected)
    return out / "weights.safetensors", root / "projected.npy"


def cold_figures(n: int, repeats: int) -> None:
    from oxidize.embed.models import resolve_model

    header(f"Cold query at {n:,} items: `oxidize query` vs a plain onnxruntime + numpy script")
    resolved = resolve_model("all-minilm-l6-v2", None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights, vectors = make_project(root, n)
        text = "why did the cache grow past the limit"
        run([python(), "-m", "oxidize.engine.cli", "query", "-k", "10", text], cwd=root)  # fills the graph cache
        times = interleaved({
            "oxidize query": lambda: run([python(), "-m", "oxidize.engine.cli", "query", "-k", "10", text], cwd=root),
            "plain script": lambda: run([python(), "-c", BASELINE, str(resolved.model_file),
                                         str(resolved.tokenizer_file), str(weights), str(vectors), text]),
        }, repeats=repeats)
        for name, seconds in times.items():
            print(f"  {name:<14} {seconds:6.3f} s")
        print(f"  ratio {times['oxidize query'] / times['plain script']:.2f}× (goal ≤ 1×)")


def warm_figures(n: int, repeats: int) -> None:
    import numpy as np

    from oxidize.search import open_search

    header(f"Warm query latency at {n:,} items (a ProjectionSearch held open)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, n)
        search = open_search("x:semantic", root)
        texts = [f"query number {i} about the cache and the build" for i in range(repeats)]
        search.query(texts[0], 10)
        full, index_only = [], []
        for text in texts:
            t = time.perf_counter()
            search.query(text, 10)
            full.append(time.perf_counter() - t)
        searcher = search.searcher()
        rng = np.random.default_rng(1)
        for _ in range(repeats):
            v = rng.normal(size=DIM).astype(np.float32)
            t = time.perf_counter()
            searcher.search(v, 10)
            index_only.append(time.perf_counter() - t)
        print(f"  query (embed + project + search + table): median {statistics.median(full) * 1e3:.1f} ms")
        print(f"  index search + table only:                median {statistics.median(index_only) * 1e3:.2f} ms"
              f" ({'exact' if n <= __import__('oxidize.search.index').search.index.EXACT_MAX else 'HNSW'})")


def _real_texts() -> tuple[list[str], list[str]]:
    """patina-dev.db's notes and commit messages, and oxidize's questions ([] without the data)."""
    import sqlite3

    from benchmarks._common import DATA_DB, REPO

    if not DATA_DB.is_file():
        return [], []
    db = sqlite3.connect(f"file:{DATA_DB}?mode=ro", uri=True)
    texts = []
    for (data,) in db.execute("SELECT data FROM eventlog"):
        d = json.loads(data)
        text = d.get("content") or d.get("message")
        if isinstance(text, str) and len(text.strip()) > 20:
            texts.append(" ".join(text.split()))
    questions = [q["query"] for f in sorted((REPO / "benchmarks/queries").glob("patina-dev-*.json"))
                 for q in json.loads(f.read_text())["queries"]]
    return texts, questions


def hybrid_figures(sizes: list[int], repeats: int) -> None:
    import random
    import sqlite3

    from benchmarks._common import sentence
    from oxidize.search import lexical
    from oxidize.search import open_search

    header("Warm query by mode: hybrid (lexical + projection + raw) against dense; the lexical index's build")
    real, questions = _real_texts()
    for n in sizes:
        rng = random.Random(n)
        texts = ([f"{real[i % len(real)]} (n{i})" for i in range(n)] if real
                 else [sentence(rng, i) for i in range(n)])
        if not questions:
            questions = [f"why {sentence(rng, 0).split(' (')[0].lower()}?" for _ in range(repeats)]
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            start = time.perf_counter()
            make_project(root, n, texts)
            total = time.perf_counter() - start
            db = sqlite3.connect(root / "build/x/semantic/index.sqlite")
            db.execute("DROP TABLE lexical")
            start = time.perf_counter()
            lexical.create(db)
            db.commit()
            fts = time.perf_counter() - start
            db.close()
            search = open_search("x:semantic", root)
            modes = {mode: (lambda mode=mode: [search.query(q, 10, mode=mode, snippets=False)
                                               for q in questions]) for mode in ("dense", "lexical", "hybrid")}
            times = interleaved(modes, repeats=3)
            per = {mode: t / len(questions) * 1e3 for mode, t in times.items()}
            print(f"  items {n:,}: warm query dense {per['dense']:.2f} ms, lexical {per['lexical']:.2f} ms, "
                  f"hybrid {per['hybrid']:.2f} ms = {per['hybrid'] / per['dense']:.2f}× dense (goal ≤ 1.5×); "
                  f"lexical index {fts:.2f} s of writing the index ({total:.1f} s with the stand-in "
                  f"projection and both vector graphs)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="")
    parser.add_argument("--hybrid", action="store_true", help="only the hybrid-against-dense figures")
    parser.add_argument("--lines", action="store_true", help="only the one-line-per-size figures")
    args = parser.parse_args(argv)
    if args.lines:
        size_lines([int(s) for s in args.sizes.split(",") if s] or [10_000, 100_000, 1_000_000])
        return
    if args.hybrid:
        os.environ.setdefault("OXIDIZE_QUIET", "1")
        hybrid_figures([int(s) for s in args.sizes.split(",") if s] or [10_000, 100_000], repeats=50)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([10_000, 100_000] if args.quick
                                                             else [10_000, 100_000, 1_000_000])
    os.environ.setdefault("OXIDIZE_QUIET", "1")
    size_lines(sizes)
    build_figures(sizes)
    cold_figures(100_000 if not args.quick else 10_000, repeats=3 if args.quick else 5)
    warm_figures(max(sizes), repeats=20 if args.quick else 100)


if __name__ == "__main__":
    main()
