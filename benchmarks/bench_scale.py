"""Scale and memory: 10k → 100k → 1M observation events through pairs, embeddings, training.

Run: ``python -m benchmarks.bench_scale [--sizes 10000,100000,1000000] [--quick]``.

For each size a generated SQLite event log (short varied sentences, sessions of 20, all
texts unique) is built with ``doit`` one task at a time (``R:model``, ``R:P.pairs``,
``R:P.embed``, ``R:P.train``), each in its own process under ``/usr/bin/time``: wall time and
peak RSS per step. The model is a **stand-in**: the tiny deterministic ONNX model of
``tests/tiny_model.py`` with 384 outputs (the real all-MiniLM-L6-v2 would take hours at
1M texts on 2 cores; its rate is measured by bench_embed.py). Training: 1 epoch,
batch 256, the default number of triplets (10 per text, at most 200,000).

Goal: peak RSS of every step ≤ 1.5 × the embedding matrix + 300 MB.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import REPO, header, make_eventlog, oxidize_env, python, run

RECIPE = """version: 1
embedding_model: tiny384
model_dir: {model_dir}
eventlog: events.db
projections:
  semantic:
    layers: [384, 1024, 256]
    epochs: 1
    batch_size: 256
"""
STEPS = ("model", "semantic.pairs", "semantic.embed", "semantic.train")


def timed_task(cwd: Path, task: str, env) -> tuple[float, float]:
    proc = run(["/usr/bin/time", "-f", "TIME %e %M", python(), "-m", "doit", task], cwd=cwd, env=env)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("TIME ")][-1]
    _, secs, kb = line.split()
    return float(secs), int(kb) / 1024


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--quick", action="store_true", help="sizes 10000,100000")
    args = parser.parse_args(argv)
    sizes = [10_000, 100_000] if args.quick else [int(x) for x in args.sizes.split(",")]
    header("scale and memory (stand-in model: tests/tiny_model.py, 384 dims)")
    sys.path.insert(0, str(REPO))
    from tests.tiny_model import make_tiny_model

    results = {}
    with tempfile.TemporaryDirectory(prefix="oxidize-scale-") as tmp:
        model_dir = make_tiny_model(Path(tmp) / "tiny384", dim=384)
        env = oxidize_env()
        print(f"{'events':>9} {'step':>15} {'seconds':>8} {'peak RSS MB':>11} {'matrix MB':>9} "
              f"{'RSS/(1.5·matrix+300)':>21}", flush=True)
        for n in sizes:
            proj = Path(tmp) / f"p{n}"
            (proj / "recipes").mkdir(parents=True)
            (proj / "dodo.py").write_text("from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa: F401\n")
            (proj / "recipes" / "scale.yaml").write_text(RECIPE.format(model_dir=model_dir))
            t0 = time.perf_counter()
            make_eventlog(proj / "recipes" / "events.db", n)
            gen = time.perf_counter() - t0
            matrix_mb = n * 384 * 4 / 2**20
            row = {}
            for step in STEPS:
                secs, rss = timed_task(proj, f"scale:{step}", env)
                row[step] = (secs, rss)
                print(f"{n:>9,} {step:>15} {secs:8.2f} {rss:11.0f} {matrix_mb:9.0f} "
                      f"{rss / (1.5 * matrix_mb + 300):21.2f}", flush=True)
            results[n] = row
            print(f"{'':>9} (event log generated in {gen:.1f}s)", flush=True)
    if len(sizes) > 1:
        print("growth per 10× events (time ratio):")
        for step in STEPS:
            ratios = [results[b][step][0] / max(results[a][step][0], 1e-9) for a, b in zip(sizes, sizes[1:])]
            print(f"  {step:>15}: " + ", ".join(f"{r:.1f}×" for r in ratios))
    worst = max(rss / (1.5 * n * 384 * 4 / 2**20 + 300) for n, row in results.items() for _, rss in row.values())
    print(f"goal peak RSS ≤ 1.5×matrix+300MB: {'met' if worst <= 1 else 'NOT met'} (worst {worst:.2f} of the bound)")
    return {"results": results, "worst": worst}


if __name__ == "__main__":
    main()
