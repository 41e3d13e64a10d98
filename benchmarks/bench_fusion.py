"""How to fuse the lexical and the dense lists: a grid of reciprocal-rank-fusion constants
scored on query sets (how oxidize/search/fusion.py's constants were chosen).

    python -m benchmarks.bench_fusion [--project DIR] [--quick]

Builds (or reuses) a project over patina-dev.db with the default recipe (``semantic`` and
``temporal``) and oxidize's own query sets (benchmarks/queries/), then for each query keeps
the top 100 of the lexical list, the projection's dense list and the raw embedding's dense
list once, and fuses them under every setting of the grid (RRF k, the lexical weight, the
pool size, and whether the raw dense list joins as a third list). It prints MRR@10 per set
and the mean over sets, best first, and the plain-RRF line for reference; then oxidize's
fusion with the raw list made as above 2,000 items (the raw cosine ranking of the
projection's N nearest and the lexical list's items, oxidize/search/vector_rows.py) for several N.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

from benchmarks._common import DATA_DB, REPO, header, run, python

SETS = {"semantic": REPO / "benchmarks/queries/patina-dev-sessions.json",
        "temporal": REPO / "benchmarks/queries/patina-dev-files.json"}
POOL = 100
#: Candidate counts from the projection's list tried for the re-ranked raw list.
RERANK_POOLS = (100, 300, 1000)


def build_project(project: Path) -> None:
    recipe = project / "recipes" / "dev" / "oxidize.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", f"eventlog: {DATA_DB}", "projections:"]
    for name, path in SETS.items():
        lines += [f"  {name}:", "    eval:", f"      queries: [{path}]"]
    recipe.write_text("\n".join(lines) + "\n")
    (project / "dodo.py").write_text("from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa: F401\n")
    run([python(), "-m", "doit"], cwd=project)


def lists(project: Path):
    """{projection: [(query, [lexical keys], [projection keys], [raw keys], {key: source id})]}"""
    from oxidize.search.queryset import load_query_set
    from oxidize.search import open_search

    out = {}
    for name, path in SETS.items():
        search = open_search(f"dev:{name}", project)
        searcher, base = search.searcher(False), search.searcher(True)
        rows = []
        for q in load_query_set(path).queries:
            from oxidize.projection import project as apply

            vector = search.embed_query(q.query)
            wide = [k for k, _ in searcher.nearest(apply(search.weights, vector[None])[0], max(RERANK_POOLS))]
            projected = wide[:POOL]
            raw = [k for k, _ in base.nearest(vector, POOL)]
            lexical = [k for k, _ in searcher.lexical(q.query, POOL)]
            reranked = {n: [k for k, _ in base.rerank(vector, wide[:n] + lexical, POOL)] for n in RERANK_POOLS}
            keys = set(projected) | set(raw) | set(lexical)
            ids = {row[0]: row[1] for row in searcher.db.execute(
                f"SELECT key, source_id FROM items WHERE key IN ({','.join('?' * len(keys))})",
                list(keys))} if keys else {}
            ids.update({row[0]: row[1] for row in searcher.db.execute(
                f"SELECT key, source_id FROM items WHERE key IN ({','.join('?' * len(wide))})", wide)})
            rows.append((q, lexical, projected, raw, ids, reranked))
        out[name] = rows
    return out


def mrr(rows, rank) -> float:
    total = 0.0
    for q, lexical, projected, raw, ids, reranked in rows:
        total += q.reciprocal_rank([ids[k] for k in rank(lexical, projected, raw, reranked)])
    return total / len(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("/tmp/oxidize-bench-fusion"))
    parser.add_argument("--quick", action="store_true", help="the same run (it is one build of the dev log)")
    args = parser.parse_args(argv)
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent")
        return 0
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    header("fusion constants on oxidize's query sets (patina-dev.db, default recipe)")
    build_project(args.project)
    data = lists(args.project)
    from oxidize.search import fusion
    from oxidize.search.fusion import fuse

    def single(which):
        return lambda lexical, projected, raw, _: {"lexical": lexical, "projection": projected,
                                                    "raw": raw}[which][:10]

    table = []
    for name in ("raw", "projection", "lexical"):
        table.append((f"{name} alone", {s: mrr(rows, single(name)) for s, rows in data.items()}))
    for k, w_lex, pool, with_raw in itertools.product((5, 10, 20, 30, 60, 100), (0.5, 0.75, 1.0, 1.5),
                                                     (20, 50, 100), (0.0, 0.5, 1.0)):
        def rank(lexical, projected, raw, _, k=k, w=w_lex, pool=pool, r=with_raw):
            lists = [(projected[:pool], 1.0), (lexical[:pool], w)] + ([(raw[:pool], r)] if r else [])
            return [key for key, *_ in fuse(lists, 10, rrf_k=k)]

        label = f"k {k:>3}, lexical weight {w_lex:<4}, pool {pool:>3}, raw list weight {with_raw}"
        table.append((label, {s: mrr(rows, rank) for s, rows in data.items()}))
    for label, scores in sorted(table, key=lambda t: -sum(t[1].values())):
        mean = sum(scores.values()) / len(scores)
        print(f"{label:<62} mean {mean:.3f}  " + "  ".join(f"{s} {v:.3f}" for s, v in scores.items()))
    header("oxidize's fusion, the raw list exact or re-ranked from candidates (above 2,000 items)")

    def ours(raw_of):
        def rank(lexical, projected, raw, reranked):
            return [key for key, *_ in fuse([(projected, fusion.DENSE_WEIGHT), (lexical, fusion.LEXICAL_WEIGHT),
                                             (raw_of(raw, reranked), fusion.RAW_WEIGHT)], 10)]
        return rank

    variants = [("the exact raw list", lambda raw, reranked: raw)]
    variants += [(f"re-ranked: the projection's {n} + the lexical {POOL}", lambda raw, reranked, n=n: reranked[n])
                 for n in RERANK_POOLS]
    for label, raw_of in variants:
        scores = {s: mrr(rows, ours(raw_of)) for s, rows in data.items()}
        print(f"{label:<62} mean {sum(scores.values()) / len(scores):.3f}  "
              + "  ".join(f"{s} {v:.3f}" for s, v in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
