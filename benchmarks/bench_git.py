"""Scraping a git repository against ``git log --name-only`` over it, side by side.

    python -m benchmarks.bench_git [--repo PATH | --synthetic 50000]

The commits part of ``R:eventlog`` (oxidize/gitlog/scrape.py: the log streamed into SQLite
and ``co_changes``) timed against plain ``git log --name-only`` on the same repository, best
of three each; then the file texts (every file at HEAD described from its content) on their
own. Default repository: this one. ``--synthetic N`` first writes a repository of ``N``
commits with ``git fast-import`` (1–6 files each out of 3,000 in 150 folders, one line
changed per file, a sentence of a message) in a temporary folder, for a history larger than
any at hand.
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


def synthetic_repository(path: Path, commits: int, seed: int = 0) -> Path:
    """A repository of ``commits`` commits written with ``git fast-import`` (see above)."""
    import random

    rng = random.Random(seed)
    words = ("cache index build query store parse render retry config session token graph "
             "worker queue fetch merge plan cost limit").split()
    files = [f"pkg{d}/{rng.choice(words)}_{f}.py" for d in range(150) for f in range(20)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    proc = subprocess.Popen(["git", "-C", str(path), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    out = proc.stdin
    for i in range(1, commits + 1):
        message = f"{rng.choice(words)} {rng.choice(words)}: change {i}\n".encode()
        head = (f"commit refs/heads/main\nmark :{i}\ncommitter Dev <dev@example.com> "
                f"{1_600_000_000 + 60 * i} +0000\ndata {len(message)}\n").encode() + message
        if i > 1:
            head += f"from :{i - 1}\n".encode()
        out.write(head)
        folder = rng.randrange(150)
        for path_ in {files[folder * 20 + rng.randrange(20)] for _ in range(rng.randint(1, 6))}:
            body = f'"""{path_}"""\ndef f():\n    return {i}\n'.encode()
            out.write(f"M 100644 inline {path_}\ndata {len(body)}\n".encode() + body + b"\n")
        out.write(b"\n")
    out.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    subprocess.run(["git", "-C", str(path), "reset", "-q", "--hard"], check=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="scrape a generated repository of N commits instead")
    parser.add_argument("--quick", action="store_true", help="the same run")
    args = parser.parse_args(argv)
    from oxidize.gitlog import scrape as scraper

    if args.synthetic:
        made = tempfile.TemporaryDirectory()
        start = time.perf_counter()
        args.repo = synthetic_repository(Path(made.name) / "repo", args.synthetic)
        print(f"a synthetic repository of {args.synthetic:,} commits written in "
              f"{time.perf_counter() - start:.1f} s: {args.repo}")

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
