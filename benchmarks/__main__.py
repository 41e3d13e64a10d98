"""Run every benchmark: ``python -m benchmarks [--quick] [--only noop,embed,...]``.

Each benchmark prints its own table with ratios against a baseline measured in the same run
(see docs/benchmarks.md). ``--quick`` runs each with fewer repeats and smaller inputs
(a smoke run, not figures to report).
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback

BENCHMARKS = {
    "noop": "benchmarks.bench_noop",
    "incremental": "benchmarks.bench_incremental",
    "embed": "benchmarks.bench_embed",
    "embed_time": "benchmarks.bench_embed_time",
    "train": "benchmarks.bench_train",
    "coldstart": "benchmarks.bench_coldstart",
    "scale": "benchmarks.bench_scale",
    "query": "benchmarks.bench_query",
    "index_settings": "benchmarks.bench_index_settings",
    "dask": "benchmarks.bench_dask",
    "build": "benchmarks.bench_build",
    "fusion": "benchmarks.bench_fusion",
    "git": "benchmarks.bench_git",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller inputs")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    failed = []
    for name in args.only.split(","):
        start = time.perf_counter()
        try:
            importlib.import_module(BENCHMARKS[name]).main(["--quick"] if args.quick else [])
        except Exception:  # noqa: BLE001 - report and go on with the next benchmark
            traceback.print_exc()
            failed.append(name)
        print(f"[{name}: {time.perf_counter() - start:.0f}s]", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
