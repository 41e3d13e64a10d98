"""No-op rebuild: ``doit`` on an up-to-date oxidize project vs ``doit`` on a one-task dodo file.

Run: ``python -m benchmarks.bench_noop [--repeats 15]``. Builds, in a temporary folder, a
project of 3 recipes × 3 projections (a small generated event log, 1 epoch, tiny layers) once,
then times ``python -m doit`` with everything up to date, alternating with ``python -m doit``
on a project whose ``dodo.py`` holds one up-to-date task with one file_dep and one target (the
floor: doit's own start-up). Prints both medians and the ratio. Goal: ratio ≤ 1.5.

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from benchmarks._common import REPO, header, interleaved, oxidize_env, python, run

RECIPE = """version: 1
eventlog: ../../events.jsonl
projections:
{projections}
"""
PROJECTION = """  {name}:
    layers: [384, 32, 16]
    epochs: 1
    batch_size: 32
    training:
      pair_type: same_session
      pairs: 200
      seed: {seed}
"""
BASELINE_DODO = '''DOIT_CONFIG = {"dep_file": ".doit.db", "backend": "sqlite3", "verbosity": 0}


def task_one():
    return {"actions": ["cp input.txt output.txt"], "file_dep": ["input.txt"], "targets": ["output.txt"]}
'''


def make_project(root: Path) -> None:
    shutil.copy(REPO / "recipes" / "example" / "events.jsonl", root / "events.jsonl")
    (root / "dodo.py").write_text("from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa: F401\n")
    for r in range(3):
        projections = "".join(PROJECTION.format(name=name, seed=r * 10 + p)
                              for p, name in enumerate(("semantic", "topics", "notes")))
        d = root / "recipes" / f"r{r}"
        d.mkdir(parents=True)
        (d / "oxidize.yaml").write_text(RECIPE.format(projections=projections))


def make_baseline(root: Path) -> None:
    (root / "dodo.py").write_text(BASELINE_DODO)
    (root / "input.txt").write_text("hello\n")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE as set (every run compiles oxidize's modules)")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else args.repeats
    header("no-op rebuild: oxidize project (3 recipes x 3 projections) vs one-task dodo.py")
    with tempfile.TemporaryDirectory(prefix="oxidize-noop-") as tmp:
        env = oxidize_env()
        if not args.no_bytecode_cache:
            # As on a user's machine: .pyc files are written once and reused. They go to a
            # temporary prefix, so the work tree is left alone.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        print(f"bytecode cache: {'off (PYTHONDONTWRITEBYTECODE)' if args.no_bytecode_cache else 'on'}")
        proj, base = Path(tmp) / "project", Path(tmp) / "baseline"
        proj.mkdir()
        base.mkdir()
        make_project(proj)
        make_baseline(base)
        run([python(), "-m", "doit"], cwd=proj, env=env)  # the real build (once)
        run([python(), "-m", "doit"], cwd=base, env=env)
        out = run([python(), "-m", "doit"], cwd=proj, env=env).stdout
        ran = [line for line in out.splitlines() if line.startswith(".")]
        if ran:
            raise RuntimeError(f"the second build was not a no-op: {ran}")
        medians = interleaved({
            "baseline": lambda: run([python(), "-m", "doit"], cwd=base, env=env),
            "oxidize": lambda: run([python(), "-m", "doit"], cwd=proj, env=env),
            "oxidize list": lambda: run([python(), "-m", "doit", "list"], cwd=proj, env=env),
        }, repeats=repeats)
    ratio = medians["oxidize"] / medians["baseline"]
    print(f"{'':>24} {'median s':>9} {'× baseline':>10}")
    for name, label in (("baseline", "doit, 1-task dodo.py"), ("oxidize", "doit, 3×3 oxidize no-op"),
                        ("oxidize list", "doit list, 3×3 oxidize")):
        print(f"{label:>24} {medians[name]:9.3f} {medians[name] / medians['baseline']:10.2f}")
    print(f"goal ≤ 1.5× baseline: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.2f}×, {repeats} runs each)")
    return {"baseline_s": medians["baseline"], "noop_s": medians["oxidize"], "ratio": ratio,
            "list_s": medians["oxidize list"]}


if __name__ == "__main__":
    main()
