"""The embed step through a local 2-worker Dask cluster against the same step in this process.

Run: ``python -m benchmarks.bench_dask [--sizes 10000,100000] [--shard 2048] [--repeats N] [--quick]``
(needs ``pip install -e '.[dask]'``).

Same machine, same cores, the default model: no speedup is expected, only overhead. Rows:

* **in-process**: ``embed_with_cache`` into an empty cache with oxidize's encoder (what a
  build does without ``$OXIDIZE_EXECUTOR``);
* **dask:local:2**: the same call with the embed work sent to a ``LocalCluster`` of 2 worker
  processes, 1 thread each, in shards of ``--shard`` texts (the cluster is started before
  the timer; its start-up is reported on its own line);
* **scheduler cost per task**: 2,000 no-op tasks submitted and gathered, per task.

Texts are stand-ins: patina-dev.db's session texts, each made distinct by a numbered suffix,
cycled to the size asked. The goal: dask:local:2 ≤ 1.15× in-process wall time.
The last line projects the per-worker rate to N workers and 10^7 texts.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import header
from benchmarks.bench_embed import load_texts


def stand_in_texts(n: int) -> list[str]:
    base = load_texts(None)
    return [f"{base[i % len(base)]} ({i // len(base)})" for i in range(n)]


GRAPHS = Path(tempfile.mkdtemp(prefix="bench-dask-graphs-"))


def embed_once(texts: list[str], executor, resolved, record) -> float:
    """One embed step into an empty cache; the optimised graph is cached across calls, as in
    a build folder (so the in-process row pays a session load, not an optimisation)."""
    from oxidize.embed.cache import EmbeddingCache, embed_with_cache
    from oxidize.embed.executor import EncoderFactory

    with tempfile.TemporaryDirectory() as tmp:
        factory = EncoderFactory(resolved, record, record["fingerprint"], GRAPHS, executor)
        with EmbeddingCache(Path(tmp) / "cache.sqlite", record["fingerprint"], record["dim"]) as cache:
            start = time.perf_counter()
            embed_with_cache(texts, cache, factory)
            return time.perf_counter() - start


def scheduler_cost(client, tasks: int = 2000) -> float:
    start = time.perf_counter()
    client.gather(client.map(_noop, range(tasks), pure=False))
    return (time.perf_counter() - start) / tasks


def _noop(i: int) -> int:
    return i


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--shard", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs per row, interleaved (default: 3 up to 20,000 texts, else 1)")
    parser.add_argument("--quick", action="store_true", help="1,000 texts only")
    args = parser.parse_args(argv)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("bench_dask: Dask is not installed (pip install -e '.[dask]'); skipped")
        return

    from oxidize.embed import dask_executor
    from oxidize.embed.executor import SHARD_TEXTS, Executor
    from oxidize.embed.models import fingerprint_record, resolve_model

    resolved = resolve_model("all-minilm-l6-v2")
    record = fingerprint_record(resolved)
    shard = args.shard or SHARD_TEXTS
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    header(f"embed step: in-process vs a local 2-worker Dask cluster (default model, shard {shard})")
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    print(f"cluster start-up: {time.perf_counter() - start:.2f}s (2 worker processes)")
    dask_executor._clients[(None,)] = client  # the benchmark's cluster, reached as 'dask'
    remote = Executor("dask", source="bench", shard_texts=shard)
    local = Executor("local")
    try:
        embed_once(stand_in_texts(200), remote, resolved, record)  # workers open their sessions
        embed_once(stand_in_texts(200), local, resolved, record)  # the graph cache is filled
        per_task = scheduler_cost(client)
        print(f"scheduler cost per task: {per_task * 1000:.2f} ms (2,000 no-op tasks, submit + gather)")
        print(f"{'texts':>8} {'in-process':>12} {'dask:local:2':>13} {'ratio':>6} {'texts/s/worker':>15}")
        per_worker = None
        for n in sizes:
            texts = stand_in_texts(n)
            runs = args.repeats or (3 if n <= 20_000 else 1)
            t_local, t_dask = [], []
            for _ in range(runs):  # interleaved, medians: load drift hits both rows alike
                t_local.append(embed_once(texts, local, resolved, record))
                t_dask.append(embed_once(texts, remote, resolved, record))
            t_local, t_dask = statistics.median(t_local), statistics.median(t_dask)
            per_worker = n / t_dask / 2
            print(f"{n:>8,} {t_local:>11.1f}s {t_dask:>12.1f}s {t_dask / t_local:>5.2f}× {per_worker:>15,.0f}",
                  flush=True)
        if per_worker:
            shards = -(-10**7 // shard)
            print(f"projected: N workers of this kind embed ~{per_worker:,.0f}·N texts/s; 10^7 texts take "
                  + ", ".join(f"{10**7 / (per_worker * w) / 3600:.1f} h on {w}" for w in (2, 8, 32))
                  + f" ({shards:,} shards; scheduler time {shards * per_task:.0f}s in all)")
    finally:
        client.close()
        cluster.close()
        dask_executor._clients.clear()
    print(f"(cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
