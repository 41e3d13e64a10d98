"""Search on people's questions: every search of the fusion menu on a repository's own history
questions and on question sets written for it, as a user of the default recipe gets them.

    python -m benchmarks.bench_search --repo PATH [--cut REF] [--name NAME] [SET.json ...]

Builds the README's recipe (``eventlog: {git: …}``, ``temporal``) over a clone of ``--repo``
at ``--cut`` (default HEAD) in ``--project`` (default /tmp/oxidize-bench-search/NAME), then
prints MRR@10 of every search of the menu (``oxidize.search.fusion.MENU``) on the build's
history questions and on each set, and what the build chose. The sets oxidize keeps for this
(``benchmarks/queries/``, README there) were written for click, httpx and patina at the
commits named there; the ``*-later`` sets are the subjects of the commits after that cut.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks._common import header, python, run


def build(repo: Path, cut: str, project: Path, name: str) -> Path:
    clone = project / "repo.git"
    if not clone.is_dir():
        project.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(clone)], check=True)
        subprocess.run(["git", "--git-dir", str(clone), "update-ref", "HEAD", cut], check=True)
    recipe = project / "recipes" / name / "oxidize.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(f"version: 1\neventlog: {{git: {clone}}}\nprojections:\n  temporal:\n")
    (project / "dodo.py").write_text("from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa: F401\n")
    run([python(), "-m", "doit"], cwd=project)
    return project


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a git repository (a clone)")
    parser.add_argument("--cut", default="HEAD", help="the commit the history is built up to")
    parser.add_argument("--name", default="repo", help="the recipe's name")
    parser.add_argument("--project", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="delete the project first")
    parser.add_argument("sets", nargs="*", type=Path)
    args = parser.parse_args(argv)
    project = args.project or Path("/tmp/oxidize-bench-search") / args.name
    if args.fresh and project.exists():
        shutil.rmtree(project)
    header(f"search on people's questions: {args.repo} at {args.cut}")
    build(args.repo.resolve(), args.cut, project, args.name)
    sys.path.insert(0, str(project))
    from oxidize.search import open_search
    from oxidize.search.choice import choose, score_menu
    from oxidize.search.fusion import MENU
    from oxidize.search.queryset import load_query_set

    search = open_search(f"{args.name}:temporal", project)
    sets = [project / "build" / args.name / "temporal" / "history_queries.json", *args.sets]
    rows: dict[str, dict[str, float]] = {}
    for path in sets:
        query_set = load_query_set(path)
        scores = score_menu(search, list(query_set.queries))
        rows[query_set.name] = {name: scores.summary(name)["mrr@10"] for name in scores.names}
        choice = choose(scores)
        print(f"{query_set.name} ({len(query_set.queries)} questions): the rule would choose "
              f"{choice.search} ({choice.why})")
    print(f"\nthe build answers with: {search.fusion('auto').name}\n")
    names = list(rows)
    print("| search | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for fusion in MENU:
        best = {n: max(rows[n].values()) for n in names}
        print(f"| {fusion.name} | " + " | ".join(
            (f"**{rows[n][fusion.name]:.3f}**" if rows[n][fusion.name] == best[n] else f"{rows[n][fusion.name]:.3f}")
            for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
