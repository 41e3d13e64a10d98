"""Incremental embedding: after 1% new session events, the embed step embeds only the new texts.

Run: ``python -m benchmarks.bench_incremental``. Copies ``shared/data/patina-dev.db`` into a
temporary project (fresh embedding cache), builds one recipe with ``doit`` (default model,
1 training epoch), appends 1% new session events (new sessions of decision/pattern/
observation notes, 5 per session), builds again, and compares the embed step's time
(as it reports it: ``embedded N texts, M from the cache (…, X s)``) in the two builds.
Goal: the second embed step embeds exactly the new texts and takes ≤ 10% of the first.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from benchmarks._common import DATA_DB, header, make_eventlog, oxidize_env, python, run

RECIPE = """version: 1
eventlog: patina.db
projections:
  semantic:
    layers: [384, 256, 64]
    epochs: 1
    batch_size: 256
"""
LINE = re.compile(r"embedded ([\d,]+) texts, ([\d,]+) from the cache \(([\d,]+) in the table, ([\d.]+)s\)")


def embed_line(out: str) -> tuple[int, int, int, float]:
    m = LINE.search(out)
    if not m:
        raise RuntimeError(f"no embed summary in the build output:\n{out[-3000:]}")
    n = [int(g.replace(",", "")) for g in m.groups()[:3]]
    return n[0], n[1], n[2], float(m.group(4))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="(same run; it is short)")
    parser.parse_args(argv)
    header("incremental embedding: +1% session events")
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent")
        return {}
    env = oxidize_env()
    with tempfile.TemporaryDirectory(prefix="oxidize-incr-") as tmp:
        root = Path(tmp)
        (root / "recipes").mkdir()
        (root / "dodo.py").write_text("from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa: F401\n")
        (root / "recipes" / "dev.yaml").write_text(RECIPE)
        db = root / "recipes" / "patina.db"
        shutil.copy(DATA_DB, db)
        with sqlite3.connect(db) as conn:
            count, max_seq = conn.execute("SELECT COUNT(*), MAX(seq) FROM eventlog").fetchone()
        first = embed_line(run([python(), "-m", "doit"], cwd=root, env=env).stdout)
        added = max(1, count // 100)
        make_eventlog(db, added, per_session=5, seed=7, start_seq=max_seq + 1, session_offset=10_000_000)
        second = embed_line(run([python(), "-m", "doit"], cwd=root, env=env).stdout)
    new_texts = second[2] - first[2]
    ratio = second[3] / first[3]
    print(f"{'build':>12} {'texts':>6} {'embedded':>8} {'cached':>6} {'embed s':>8}")
    print(f"{'first':>12} {first[2]:6} {first[0]:8} {first[1]:6} {first[3]:8.2f}")
    print(f"{'+1% events':>12} {second[2]:6} {second[0]:8} {second[1]:6} {second[3]:8.2f}")
    exact = second[0] == new_texts
    print(f"{added} events appended → {new_texts} new texts in the table; embedded {second[0]} "
          f"({'exactly the new ones' if exact else 'NOT exactly the new ones'})")
    print(f"goal ≤ 10% of the full embed step: {'met' if ratio <= 0.10 and exact else 'NOT met'} "
          f"({100 * ratio:.1f}%)")
    return {"full_s": first[3], "incremental_s": second[3], "ratio": ratio, "exact": exact,
            "new_texts": new_texts}


if __name__ == "__main__":
    main()
