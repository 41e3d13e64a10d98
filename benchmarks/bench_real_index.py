"""Recall of the index on real projected vectors, not stand-ins.

    python -m benchmarks.bench_real_index [--items 100000] [--project DIR] [--vectors DIR]
                                          [--expansions 1024,2048,4096]

Makes ``--items`` realistic notes (each two to four sentences drawn from patina-dev.db's
notes, so the words and topics are a real project's, and no two notes are the same),
embeds them once with the default model (kept in ``--vectors``, outside the repository, and
reused by later runs), projects them with the ``semantic`` weights of the dev build
(``benchmarks.bench_fusion``'s project, built if absent) and writes the index as the index
step does. Then recall@10 of the graph search against exact search, on real questions
(oxidize's question sets) and on held-back notes used as queries, beside what the
calibration recorded; with ``--expansions``, the same at each of those search expansions
too (what the calibrated one costs against what the queries would need).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import DATA_DB, REPO, header


def realistic_notes(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` distinct notes made of patina-dev's sentences, and 300 real notes held back."""
    db = sqlite3.connect(f"file:{DATA_DB}?mode=ro", uri=True)
    notes = []
    for (data,) in db.execute("SELECT data FROM eventlog WHERE event_type LIKE 'session.%'"):
        content = json.loads(data).get("content")
        if isinstance(content, str) and len(content.split()) >= 6:
            notes.append(" ".join(content.split()))
    rng = random.Random(seed)
    rng.shuffle(notes)
    held, source = notes[:300], notes[300:]
    sentences = [s for note in source for s in re.split(r"(?<=[.!?])\s+", note) if len(s.split()) >= 4]
    out, seen = [], set()
    while len(out) < n:
        text = " ".join(rng.sample(sentences, rng.randint(2, 4)))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out, held


def _digest(texts: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def embedded(texts: list[str], encoder, folder: Path, block: int = 2048):
    """The texts' passage embeddings, computed once and kept in ``folder``; a kept run of
    fewer notes (the same notes begin a longer list) is reused for its part."""
    import numpy as np

    path = folder / f"notes-{len(texts)}.npy"
    if path.is_file() and path.with_suffix(".sha256").is_file() \
            and path.with_suffix(".sha256").read_text() == _digest(texts):
        return np.load(path)
    out = np.empty((len(texts), encoder.dim), np.float32)
    done_before = 0
    for kept in sorted(folder.glob("notes-*.npy"), key=lambda p: -int(p.stem.split("-")[1])):
        m = int(kept.stem.split("-")[1])
        digest = kept.with_suffix(".sha256")
        if m < len(texts) and digest.is_file() and digest.read_text() == _digest(texts[:m]):
            out[:m] = np.load(kept)
            done_before = m
            break
    start = time.perf_counter()
    for lo in range(done_before, len(texts), block):
        out[lo:lo + block] = encoder.encode(texts[lo:lo + block], kind="passage")
        done = min(lo + block, len(texts))
        print(f"  embedded {done:,}/{len(texts):,} "
              f"({(done - done_before) / (time.perf_counter() - start):.0f} texts/s)", file=sys.stderr, flush=True)
    np.save(path, out)
    path.with_suffix(".sha256").write_text(_digest(texts))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--project", type=Path, default=Path("/tmp/oxidize-bench-fusion"))
    parser.add_argument("--vectors", type=Path, default=Path("/tmp/oxidize-real-vectors"))
    parser.add_argument("--expansions", default="",
                        help="comma-separated search expansions measured beside the calibrated one")
    args = parser.parse_args(argv)
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent")
        return 0
    sys.path.insert(0, str(REPO))
    import numpy as np

    from benchmarks.bench_fusion import SETS, build_project
    from oxidize.search import index as ix
    from oxidize.search.recall import exact_top
    from oxidize.search.population import Item
    from oxidize.projection import project
    from oxidize.search.queryset import load_query_set
    from oxidize.search import open_search

    header(f"Index recall on real projected vectors ({args.items:,} realistic notes)")
    build_project(args.project)  # incremental: only what is missing or stale is built
    search = open_search("dev:semantic", args.project)
    encoder = search.encoder()
    texts, held = realistic_notes(args.items)
    args.vectors.mkdir(parents=True, exist_ok=True)
    base = embedded(texts, encoder, args.vectors)
    projected = project(search.weights, base).astype(np.float32)
    questions = [q.query for path in SETS.values() for q in load_query_set(path).queries]
    queries = {"questions": questions, "held-back notes": held}
    items = [Item(i + 1, i + 1, "session.decision", f"s{i // 20}", "2025-01-01", text)
             for i, text in enumerate(texts)]
    keys = np.arange(1, len(items) + 1, dtype=np.uint64)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ix.write_index(Path(tmp), items, base, projected, {"model_fingerprint": "real"})
        seconds = time.perf_counter() - start
        searcher = ix.Searcher(Path(tmp))
        print(f"  index step {seconds:.1f} s; recorded: {json.dumps(searcher.searched)}")
        calibrated = searcher.graph.expansion_search
        others = [int(e) for e in args.expansions.split(",") if e.strip()]
        for label, texts_ in queries.items():
            q = project(search.weights, encoder.encode(texts_, kind="query")).astype(np.float32)
            truth = [set(keys[r].tolist()) for r in exact_top(projected, q, 10)]
            for expansion in [calibrated, *others]:
                searcher.graph.expansion_search = expansion
                recall, median = _measured(searcher, q, truth)
                at = "" if expansion == calibrated else f" at expansion {expansion}"
                print(f"  {label} ({len(q)}){at}: recall@10 {recall:.3f}, median query {median:.2f} ms")
    return 0


def _measured(searcher, queries, truth) -> tuple[float, float]:
    """Recall@10 of ``searcher`` against ``truth`` (sets of keys), and its median query (ms)."""
    import numpy as np

    times, found = [], []
    for v in queries:
        t = time.perf_counter()
        found.append({key for key, _ in searcher.nearest(v, 10)})
        times.append(time.perf_counter() - t)
    return float(np.mean([len(f & e) / 10 for f, e in zip(found, truth)])), float(np.median(times)) * 1e3


if __name__ == "__main__":
    sys.exit(main())
