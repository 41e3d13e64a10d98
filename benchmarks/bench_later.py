"""Quality on later data: build on the log as it was at a cut-off, score on what came after.

Run: ``python -m benchmarks.bench_later [--cuts 0.3,0.4,0.5,0.6,0.7,0.8,0.9]
[--types semantic,temporal,same_commit] [--set training.loss=triplet ...] [--later-types …]``.

Why a benchmark of its own: the held-out split of a build (:mod:`oxidize.pairs.split`) scores
a projection on the latest dozen sessions of the log it was trained on, a sample small enough
that one draw said 1.07× for ``semantic`` where five time folds say 1.01×. The goal
is measured the way a user meets a projection: trained on the log of today, used on the
sessions and commits of the following weeks. This script does that on ``patina-dev.db``:

* For each cut (a share of the log's sessions, by start time), the log is copied into a
  temporary file with every event at or after the cut's moment deleted, and without the
  ``co_changes`` table (it has no dates, so it would tell the build about later commits;
  the counts are recomputed from the remaining ``git.commit`` events, as patina does).
* The projection is built from that copy exactly as a build does — pairs, the recipe's
  training defaults (or ``--set`` overrides), validation on the copy's own latest part —
  with the default model through an embedding cache in ``$TMPDIR/oxidize-bench-quality``.
* **Later data**: ``semantic`` — the notes of every session of the full log that starts
  after the cut, relevant when from the same session; ``temporal`` — every file first
  committed after the cut, relevant when changed together with it at least ``min_count``
  times in the full log's commits; ``same_commit`` — the messages of the commits made
  after the cut, relevant when their commits share at least ``min_count`` files. Ranked
  among the later items only.
* Printed per cut: the later data's size, MRR@10 of the base embedding, of the start map
  (epoch 0) and of the built projection, their ratios, and the epoch and start the build
  chose; then the mean ratio over the cuts.

Not a test: it prints figures; docs/benchmarks.md ("Quality on later data") keeps a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import DATA_DB, header

TYPES = {"semantic": "same_session", "temporal": "co_changed", "same_commit": "same_commit"}
#: Default cuts: shares of the log's sessions (by start time) the build may see.
CUTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LAYERS = [384, 1024, 256]
EPOCHS = 10


#: Projection keys ``--set`` may override besides ``training.*``.
PROJECTION_KEYS = ("epochs", "batch_size")


def _training(pair_type: str, overrides: dict):
    """The recipe defaults of a projection of ``pair_type``, with ``overrides`` applied."""
    from oxidize.recipe import parse_recipe

    block = {"pair_type": pair_type, **{k: v for k, v in overrides.items() if k not in PROJECTION_KEYS}}
    spec = {"layers": LAYERS, "epochs": EPOCHS, "training": block,
            **{k: v for k, v in overrides.items() if k in PROJECTION_KEYS}}
    recipe = parse_recipe({"version": 1, "projections": {"p": spec}}, DATA_DB, "bench")
    return recipe.projection("p")


def _moment(timestamp: str, seq: int) -> float:
    from oxidize.pairs.split import parse_timestamp

    return parse_timestamp(timestamp, seq, DATA_DB)


def cut_moments(shares) -> list[float]:
    """The start time of the session at each share of the log's sessions (``session.started``
    events, by time): fixed moments, whatever the projections' settings."""
    from oxidize.eventlog import open_eventlog

    with open_eventlog(DATA_DB) as log:
        starts = sorted(_moment(e.timestamp, e.seq) for e in log.events(("session.started",)))
    return [starts[int(share * len(starts))] for share in shares]


def truncated_log(moment: float, folder: Path) -> Path:
    """A copy of the dev log without the events at or after ``moment`` and without ``co_changes``."""
    copy = folder / f"log-{int(moment)}.db"
    shutil.copyfile(DATA_DB, copy)
    con = sqlite3.connect(copy)
    try:
        late = [(seq,) for seq, stamp in con.execute("SELECT seq, timestamp FROM eventlog")
                if _moment(stamp, seq) >= moment]
        con.executemany("DELETE FROM eventlog WHERE seq = ?", late)
        con.execute("DROP TABLE IF EXISTS co_changes")
        con.commit()
    finally:
        con.close()
    return copy


def later_semantic(moment: float, training, types: tuple[str, ...] = ()) -> tuple[list[str], np.ndarray]:
    """Texts of the full log's sessions that start at or after ``moment``, and their
    (query, relevant) pairs: two notes of one session. ``types``: the note types of the
    later data (default: the projection's own ``event_types``)."""
    from oxidize.eventlog import open_eventlog
    from oxidize.pairs.same_session import collect_sessions
    from oxidize.pairs.split import pairs_within_groups

    firsts: list = []
    types = types or tuple(training.event_types)
    with open_eventlog(DATA_DB) as log:
        texts, owner, _ = collect_sessions(log, types, training.min_chars, firsts)
    late = np.array([_moment(t, s) >= moment for t, s in firsts], dtype=bool)
    keep = late[np.asarray(owner)]
    rows = np.flatnonzero(keep)
    group = np.asarray(owner)[rows]
    return [texts[i] for i in rows], pairs_within_groups(group, np.ones(len(rows), dtype=bool))


def later_temporal(moment: float, training, types=()) -> tuple[list[str], np.ndarray]:
    """Descriptions of the files first committed at or after ``moment``, and their
    (query, relevant) pairs: changed together at least ``min_count`` times."""
    from oxidize.eventlog import open_eventlog
    from oxidize.pairs.co_changed import count_from_commits, describe_file, read_commits

    with open_eventlog(DATA_DB) as log:
        commits = read_commits(log)
    born: dict[str, float] = {}
    for files, stamp, seq in commits:
        when = _moment(stamp, seq)
        for name in files:
            born[name] = min(born.get(name, when), when)
    late = {name for name, when in born.items() if when >= moment}
    edges = [(a, b) for a, b, n in count_from_commits(commits)
             if n >= training.min_count and a in late and b in late]
    files = sorted({name for edge in edges for name in edge})
    index = {name: i for i, name in enumerate(files)}
    pairs = [(index[a], index[b]) for a, b in edges] + [(index[b], index[a]) for a, b in edges]
    return [describe_file(name) for name in files], np.array(sorted(pairs), dtype=np.int32).reshape(-1, 2)


def later_same_commit(moment: float, training, types=()) -> tuple[list[str], np.ndarray]:
    """Messages of the commits made at or after ``moment``, and their (query, relevant)
    pairs: two commits sharing at least ``min_count`` files."""
    from oxidize.eventlog import open_eventlog
    from oxidize.pairs.same_commit import read_commits, shared_file_counts

    with open_eventlog(DATA_DB) as log:
        messages, files, firsts, _ = read_commits(log, training.min_chars)
    late = [i for i, (stamp, seq) in enumerate(firsts) if _moment(stamp, seq) >= moment]
    pairs, shared = shared_file_counts([files[i] for i in late])
    edges = pairs[shared >= training.min_count]
    used = np.unique(edges)
    index = {int(c): i for i, c in enumerate(used)}
    out = [(index[int(a)], index[int(b)]) for a, b in edges] + [(index[int(b)], index[int(a)]) for a, b in edges]
    return [messages[late[int(c)]] for c in used], np.array(sorted(out), dtype=np.int32).reshape(-1, 2)


LATER = {"semantic": later_semantic, "temporal": later_temporal, "same_commit": later_same_commit}


def build(log_path: Path, projection, label: str):
    """Pairs, embeddings and trained weights of ``projection`` on the log at ``log_path``."""
    from oxidize.eventlog import open_eventlog
    from oxidize.pairs import REFERENCE_STARTS, generate_pairs
    from oxidize.train.trainer import train_projection

    t = projection.training
    with open_eventlog(log_path) as log:
        pairset = generate_pairs(log, t, label=label)
    emb = embed(pairset.texts)
    triplets = pairset.triplets
    if t.negatives == "hard":
        from benchmarks.bench_quality import hard_triplets

        triplets = hard_triplets(emb, pairset, t.seed)
    result = train_projection(
        emb, triplets, hidden=LAYERS[1], out=LAYERS[2], epochs=projection.epochs,
        batch_size=projection.batch_size, learning_rate=t.learning_rate, margin=t.margin,
        seed=t.seed, optimizer=t.optimizer, momentum=t.momentum, weight_decay=t.weight_decay,
        label=label, init=t.init, heldout=pairset.validation, patience=t.patience,
        start_penalty=t.start_penalty, loss=t.loss, temperature=t.temperature, progress=False,
        reference_start=REFERENCE_STARTS[t.pair_type])
    return emb, triplets, result


def start_map(emb, triplets, result) -> dict[str, np.ndarray]:
    """The weights of epoch 0: the chosen start map, the residual switched off."""
    from oxidize.train.start import linear_init

    w0, b2 = linear_init(emb, triplets, LAYERS[2], result.config["init"]["w0"])
    weights = {k: np.array(v) for k, v in result.weights.items()}
    weights["w0"], weights["b2"] = w0.astype(np.float32), b2.astype(np.float32)
    weights["w2"][...] = 0
    return weights


def embed(texts: list[str]) -> np.ndarray:
    from benchmarks.bench_quality import _embed

    return np.asarray(_embed(texts))


def _value(text: str):
    """A ``--set`` value as YAML reads it, except that ``1e-4`` is a number (YAML 1.1 wants ``1.0e-4``)."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", default=",".join(map(str, CUTS)))
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--set", action="append", default=[], metavar="training.KEY=VALUE",
                        help="override a training key (or epochs, batch_size) of the recipe "
                             "defaults (repeatable)")
    parser.add_argument("--later-types", default="",
                        help="semantic: the note types of the later data, comma-separated "
                             "(default: the projection's own event_types)")
    args = parser.parse_args(argv)
    later_types = tuple(args.later_types.split(",")) if args.later_types else ()
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent")
        return {}
    os.environ.setdefault("OXIDIZE_BLAS_THREADS", "0")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.removeprefix("training.")] = _value(value)
        if key.endswith("event_types"):
            overrides["event_types"] = value.split(",")
    from oxidize.evaluate import compare

    shares = [float(v) for v in args.cuts.split(",")]
    moments = cut_moments(shares)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="oxidize-later-") as tmp:
        logs = [truncated_log(m, Path(tmp)) for m in moments]
        for kind in args.types.split(","):
            projection = _training(TYPES[kind], overrides)
            later = LATER[kind]
            header(f"{kind}: built on the log before each cut, scored on everything after it"
                   + (f" ({', '.join(args.set)})" if args.set else "")
                   + (f"; later notes of types {args.later_types}" if kind == "semantic" and later_types else ""))
            print(f"  {'cut':>4} {'later items':>11} {'queries':>7} {'base':>6} {'start':>6} {'built':>6} "
                  f"{'start×':>6} {'built×':>6} {'init':<7} {'epoch':>5} {'s':>5}")
            rows = []
            for share, moment, log_path in zip(shares, moments, logs):
                began = time.perf_counter()
                emb, triplets, result = build(log_path, projection, f"{kind}@{share}")
                texts, pairs = later(moment, projection.training, later_types)
                later_emb = embed(texts)
                built = compare(later_emb, pairs, result.weights)
                start = compare(later_emb, pairs, start_map(emb, triplets, result))["projection"]
                base = built["base"]["mrr@10"]
                row = {"share": share, "items": len(texts), "queries": built["heldout_queries"],
                       "base": base, "start": start["mrr@10"], "built": built["projection"]["mrr@10"],
                       "init": result.config["init"]["w0"], "epoch": result.chosen_epoch}
                rows.append(row)
                print(f"  {share:>4} {row['items']:>11,} {row['queries']:>7,} {base:>6.3f} {row['start']:>6.3f} "
                      f"{row['built']:>6.3f} {row['start'] / base:>6.3f} {row['built'] / base:>6.3f} "
                      f"{row['init']:<7} {row['epoch'] if row['epoch'] is not None else '-':>5} "
                      f"{time.perf_counter() - began:>5.1f}", flush=True)
            mean_start = np.mean([r["start"] / r["base"] for r in rows])
            mean_built = np.mean([r["built"] / r["base"] for r in rows])
            print(f"  mean ratio to the base over {len(rows)} cuts: start map {mean_start:.3f}×, "
                  f"built {mean_built:.3f}×", flush=True)
            results[kind] = rows
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
