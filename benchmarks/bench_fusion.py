"""The fusion menu on oxidize's own question sets for patina-dev.db: every search a build may
choose (``oxidize.search.fusion.MENU``), MRR@10 on each set, and what the choice rule picks.

    python -m benchmarks.bench_fusion [--project DIR]

Builds the dev recipe (``semantic`` with ``benchmarks/queries/patina-dev-sessions.json``,
``temporal`` with ``patina-dev-files.json``) in ``--project`` if absent, then ranks each
question once per list and every menu entry from those lists (``oxidize.search.choice``),
as the index step does with the history questions. Figures in docs/benchmarks.md,
"Search on people's questions".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks._common import DATA_DB, REPO, header, python, run

SETS = {"semantic": REPO / "benchmarks/queries/patina-dev-sessions.json",
        "temporal": REPO / "benchmarks/queries/patina-dev-files.json"}


def build_project(project: Path) -> None:
    recipe = project / "recipes" / "dev" / "oxidize.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    lines = ["version: 1", f"eventlog: {DATA_DB}", "projections:"]
    for name, path in SETS.items():
        lines += [f"  {name}:", "    eval:", f"      queries: [{path}]"]
    recipe.write_text("\n".join(lines) + "\n")
    (project / "dodo.py").write_text("from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa: F401\n")
    run([python(), "-m", "doit"], cwd=project)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("/tmp/oxidize-bench-fusion"))
    parser.add_argument("--quick", action="store_true", help="the same run (two small sets)")
    args = parser.parse_args(argv)
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent")
        return 0
    header("the fusion menu on oxidize's question sets for patina-dev.db")
    build_project(args.project)
    sys.path.insert(0, str(args.project))
    from oxidize.search import open_search
    from oxidize.search.choice import choose, score_menu
    from oxidize.search.fusion import MENU
    from oxidize.search.queryset import load_query_set

    rows = {}
    for name, path in SETS.items():
        search = open_search(f"dev:{name}", args.project)
        query_set = load_query_set(path)
        scores = score_menu(search, list(query_set.queries))
        rows[f"{name}: {query_set.name}"] = {n: scores.summary(n)["mrr@10"] for n in scores.names}
        choice = choose(scores)
        print(f"dev:{name} on {query_set.name}: the rule would choose {choice.search} ({choice.why}); "
              f"the build answers with {search.fusion('auto').name}")
    print("\n| search | " + " | ".join(rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    for fusion in MENU:
        print(f"| {fusion.name} | " + " | ".join(f"{r[fusion.name]:.3f}" for r in rows.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
