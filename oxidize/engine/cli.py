"""The ``oxidize`` console command: doit, with the oxidize loader and commands.

``oxidize`` builds every recipe of the project in the current directory, exactly as
``doit`` would with ``loader = "oxidize"`` configured; every doit command works
(``oxidize list``, ``oxidize info R:P.train``, ``oxidize -n 2``). ``oxidize --help`` and
``oxidize --version`` speak for oxidize, not doit.
"""

from __future__ import annotations

import sys

HELP = """\
oxidize {version} — learned embedding projections built incrementally from an event log

usage: oxidize [COMMAND] [OPTIONS] [ARGS]

  oxidize                      build every recipe of this project (like `doit`)
  oxidize R | R:P              build one recipe, or one projection of it
  oxidize list [--all]         list recipes (with --all: every task)
  oxidize stale [--check] [--json] [--locked]
                               what is stale, and why
  oxidize query [-p R:P] [-k N] [--mode auto|hybrid|dense|lexical|NAME] [--base | --compare] [--json] TEXT...
                               search a projection's index with a text (words + meaning)
  oxidize bench [-p R:P] [--json] SET.json...
                               score the search on query sets (patina's bench format)
  oxidize cache-key [R...]     one sha256 of every build input (for CI caches)
  oxidize info TASK            a task's inputs and targets
  oxidize help COMMAND         a command's options; `oxidize help` lists doit's own commands

Recipes: recipes/<name>/oxidize.yaml, recipes/<name>.yaml, .patina/oxidize.yaml.
Outputs: build/<recipe>/<projection>/ (weights, projection.onnx, index.usearch, metrics).
Everything else doit does works too: `-n 2` runs tasks in parallel.
"""


def main(argv: list[str] | None = None) -> int:
    """Run doit with :class:`oxidize.engine.loader.OxidizeLoader`; return its exit code."""
    from oxidize import __version__

    args = sys.argv[1:] if argv is None else argv
    if args in (["--help"], ["-h"]):
        sys.stdout.write(HELP.format(version=__version__))
        return 0
    if args == ["--version"]:
        import doit

        sys.stdout.write(f"oxidize {__version__} (doit {'.'.join(map(str, doit.__version__))})\n")
        return 0
    from oxidize.engine.loader import OxidizeLoader

    return _main_class()(OxidizeLoader()).run(args)


def _main_class():
    """doit's ``DoitMain``, except how it reads ``NAME=VALUE`` arguments as doit variables:
    after ``query`` or ``bench`` every argument is the command's (``oxidize query "a=b"``
    searches for it), and an empty argument is no variable (doit itself fails on ``''``
    with an IndexError before any command runs)."""
    from doit.doit_cmd import DoitMain, reset_vars, set_var

    class OxidizeMain(DoitMain):
        def process_args(self, cmd_args):
            reset_vars()
            out = []
            for position, arg in enumerate(cmd_args):
                if cmd_args[:position] and cmd_args[0] in ("query", "bench"):
                    out.append(arg)
                elif arg and arg[0] != "-" and "=" in arg:
                    set_var(*arg.split("=", 1))
                else:
                    out.append(arg)
            return out

    return OxidizeMain


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
