"""Scraping a git repository against ``git log --name-only`` over it, side by side.

    python -m benchmarks.bench_git [--repo PATH]

The commits part of ``R:eventlog`` (oxidize/gitlog/scrape.py: the log streamed into SQLite
and ``co_changes``) timed against plain ``git log --name-only`` on the same repository, best
of three each; then the file texts (every file at HEAD described from its content) on their
own. Default repository: this one.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import REPO, header


def best(func, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--quick", action="store_true", help="the same run")
    args = parser.parse_args(argv)
    from oxidize.gitlog import scrape as scraper

    header(f"Scraping {args.repo} against git log --no-renames --name-only")
    head = scraper.head_state(args.repo)
    with tempfile.TemporaryDirectory() as tmp:
        def commits_only():
            db = sqlite3.connect(Path(tmp) / "log.sqlite")
            db.executescript("DROP TABLE IF EXISTS eventlog; DROP TABLE IF EXISTS co_changes; "
                             "DROP TABLE IF EXISTS file_texts; DROP TABLE IF EXISTS scrape;")
            scraper._schema(db)
            n = scraper._commits(args.repo, head, db, 0, say=lambda line: None)
            scraper._co_changes(db)
            db.commit()
            db.close()
            return n

        n = commits_only()
        git_log = best(lambda: subprocess.run(["git", "-C", str(args.repo), "log", "--no-renames", "--name-only"],
                                              capture_output=True, check=True))
        ours = best(commits_only)
        print(f"  {n:,} commits: git log --no-renames --name-only {git_log:.2f} s, scrape (commits + co_changes) "
              f"{ours:.2f} s = {ours / git_log:.2f}× (goal ≤ 2×)")
        db = sqlite3.connect(Path(tmp) / "log.sqlite")
        start = time.perf_counter()
        described, skipped = scraper._file_texts(args.repo, db)
        print(f"  file texts at HEAD: {described:,} described in {time.perf_counter() - start:.2f} s "
              f"(skipped: {skipped or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
