"""The ``oxidize`` console command: doit, with the oxidize loader and commands.

``oxidize`` builds every recipe of the project in the current directory, exactly as
``doit`` would with ``loader = "oxidize"`` configured; every doit command works
(``oxidize list``, ``oxidize info R:P.train``, ``oxidize -n 2``).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run doit with :class:`oxidize.engine.loader.OxidizeLoader`; return its exit code."""
    from doit.doit_cmd import DoitMain

    from oxidize.engine.loader import OxidizeLoader

    args = sys.argv[1:] if argv is None else argv
    return DoitMain(OxidizeLoader()).run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
