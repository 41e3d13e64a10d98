"""Quality sweep on ``patina-dev.db``: which training settings rank *later* data best.

Run: ``python -m benchmarks.bench_quality [--quick] [--types semantic,temporal,same_commit]``.

For each pair type the real pairs step runs on the dev log (time split: the latest 20 % of
the groups held out, the older half of them validating, the newest half testing), the
texts are embedded once with the default model (through an embedding cache kept in
``$TMPDIR/oxidize-bench-quality``), and then each configuration of a small grid is trained
with the real trainer: the start map (``init``), the learning rate, the penalty on the
distance from the start and the training notes. Printed per configuration: the chosen start
and epoch (picked on validation only), then **test** MRR@10, P@10, R@10 of the projection,
its ratio to the base embedding, and the seconds it took; base and random once per type.

Not a test: it prints figures; docs/benchmarks.md ("Quality") keeps a reference run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks._common import DATA_DB, header

PATIENCE = [3]
TYPES = {
    "semantic": ("same_session", {}),
    # the notes semantic trained on before it trained on all six types
    "semantic-3types": ("same_session", {"event_types": ("session.decision", "session.observation",
                                                          "session.pattern")}),
    "temporal": ("co_changed", {}),
    "same_commit": ("same_commit", {}),
}


def _pairs(kind: str):
    from oxidize.eventlog import open_eventlog
    from oxidize.pairs import generate_pairs
    from oxidize.recipe import parse_recipe

    pair_type, extra = TYPES[kind]
    recipe = parse_recipe({"version": 1, "projections": {"p": {"training": {"pair_type": pair_type}}}},
                          DATA_DB, "bench")
    training = replace(recipe.projection("p").training, **extra)
    with open_eventlog(DATA_DB) as log:
        return generate_pairs(log, training, label=kind), training


def _embed(texts: list[str]):
    from oxidize.embed.cache import EmbeddingCache, embed_with_cache
    from oxidize.embed.encoder import Encoder
    from oxidize.embed.models import fingerprint, resolve_model

    resolved = resolve_model("all-minilm-l6-v2", None)
    folder = Path(tempfile.gettempdir()) / "oxidize-bench-quality"
    folder.mkdir(exist_ok=True)
    made = []

    def factory():
        if not made:
            made.append(Encoder(resolved, graph_cache_dir=folder / "onnx"))
        return made[0]

    with EmbeddingCache(folder / "embeddings.sqlite", fingerprint(resolved), resolved.spec.dim) as cache:
        vectors, _ = embed_with_cache(texts, cache, factory)
    return vectors


def hard_triplets(emb, pairset, seed: int):
    """``pairset``'s triplets with mined hard negatives (graph pair types have no groups)."""
    from oxidize.train.negatives import mine_hard_negatives

    groups = pairset.groups if pairset.groups is not None else np.full(len(emb), -1)
    related = pairset.related if pairset.related is not None else np.zeros((0, 2))
    return mine_hard_negatives(emb, pairset.triplets, groups, related, seed)[0]


def sweep(kind: str, grid: list[dict], epochs: int) -> None:
    from oxidize.evaluate import compare
    from oxidize.pairs import REFERENCE_STARTS
    from oxidize.train.trainer import DEFAULT_TEMPERATURE, train_projection

    pairset, training = _pairs(kind)
    emb = _embed(pairset.texts)
    base = compare(emb, pairset.heldout)
    if base["heldout_queries"] == 0:
        print(f"{kind}: no test queries")
        return
    b, r = base["base"], base["random"]
    header(f"{kind}: {len(pairset.texts):,} texts, {len(pairset.triplets):,} triplets, "
           f"{base['heldout_queries']} test queries, {pairset.stats.get('validation_queries')} validation")
    val_base = compare(emb, pairset.validation)["base"]
    print(f"  base   mrr@10 {b['mrr@10']:.4f}  p@10 {b['p@10']:.4f}  r@10 {b['r@10']:.4f}"
          f"  (validation mrr@10 {val_base['mrr@10'] if val_base else float('nan'):.4f})")
    print(f"  random mrr@10 {r['mrr@10']:.4f}  p@10 {r['p@10']:.4f}  r@10 {r['r@10']:.4f}")
    print(f"  {'neg':<6} {'loss':<8} {'init':<8} {'lr':>7} {'penalty':>7} {'start':<8} {'epoch':>5} {'val start':>9} "
          f"{'val best':>8} {'test mrr':>8} {'p@10':>6} {'r@10':>6} {'×base':>6} {'s':>5}")
    hard = None
    for config in grid:
        start = time.perf_counter()
        triplets = pairset.triplets
        if config.get("negatives") == "hard":
            if hard is None:
                hard = hard_triplets(emb, pairset, 42)
            triplets = hard
        result = train_projection(
            emb, triplets, hidden=1024, out=256, epochs=epochs, batch_size=32,
            learning_rate=config["lr"], margin=0.2, seed=42, init=config["init"],
            heldout=pairset.validation, patience=PATIENCE[0], start_penalty=config["penalty"], progress=False,
            loss=config["loss"], temperature=config.get("temperature", DEFAULT_TEMPERATURE),
            report=pairset.heldout, reference_start=REFERENCE_STARTS[training.pair_type])
        seconds = time.perf_counter() - start
        m = compare(emb, pairset.heldout, result.weights)["projection"]
        val = result.heldout_mrr
        print(f"  {config.get('negatives', 'random'):<6} {config['loss']:<8} {config['init']:<8} {config['lr']:>7g} {config['penalty']:>7g} "
              f"{result.config['init']['w0']:<8} {result.chosen_epoch if result.chosen_epoch is not None else '-':>5} "
              f"{val[0] if val else float('nan'):>9.4f} {max(val) if val else float('nan'):>8.4f} "
              f"{m['mrr@10']:>8.4f} {m['p@10']:>6.4f} {m['r@10']:>6.4f} "
              f"{m['mrr@10'] / b['mrr@10']:>6.3f} {seconds:>5.1f}  test by epoch "
              + " ".join(f"{v:.3f}" for v in result.test_mrr), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--inits", default="within,pca,auto")
    parser.add_argument("--lrs", default="1e-3,1e-4")
    parser.add_argument("--penalties", default="0,1")
    parser.add_argument("--losses", default="triplet,in_batch")
    parser.add_argument("--negatives", default="random,hard")
    parser.add_argument("--patience", type=int, default=3)
    args = parser.parse_args(argv)
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent")
        return
    os.environ.setdefault("OXIDIZE_BLAS_THREADS", "0")
    inits = ["auto"] if args.quick else args.inits.split(",")
    lrs = [1e-3] if args.quick else [float(v) for v in args.lrs.split(",")]
    penalties = [0.0] if args.quick else [float(v) for v in args.penalties.split(",")]
    losses = ["in_batch"] if args.quick else args.losses.split(",")
    negatives = ["random"] if args.quick else args.negatives.split(",")
    grid = [dict(negatives=neg, loss=loss, init=i, lr=lr, penalty=pen)
            for neg, loss, i, lr, pen in itertools.product(negatives, losses, inits, lrs, penalties)]
    PATIENCE[0] = args.patience or None
    for kind in args.types.split(","):
        sweep(kind, grid, args.epochs or (3 if args.quick else 10))


if __name__ == "__main__":
    main()
