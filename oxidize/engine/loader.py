"""doit integration: the loader plugin and the task creator for a project's ``dodo.py``.

Two ways in, one task graph (:func:`oxidize.engine.tasks.task_dicts`):

* **A loader plugin.** oxidize registers ``OxidizeLoader`` under doit's ``doit.LOADER``
  entry point as ``oxidize``. Any project with oxidize installed builds its recipes with
  plain ``doit`` and no ``dodo.py`` by adding to its ``pyproject.toml``::

      [tool.doit]
      loader = "oxidize"

* **A dodo file.** ``from oxidize.loader import DOIT_CONFIG, task_oxidize`` in a ``dodo.py``
  (this repository's own ``dodo.py`` does that).
"""

from __future__ import annotations

from pathlib import Path

from doit.cmd_base import TaskLoader2
from doit.exceptions import InvalidDodoFile
from doit.loader import generate_tasks

from oxidize.errors import OxidizeError


def _accept_empty_arguments() -> None:
    """Let an empty argument through doit's command line (``doit query ''``).

    doit's ``DoitMain.process_args`` reads ``arg[0]`` of every argument to find ``NAME=VALUE``
    variables and raised IndexError on ``''`` before any command ran. This is that method
    with ``arg[:1]``; it is installed when the oxidize loader is imported, which the
    ``oxidize`` command and ``loader = "oxidize"`` projects do before doit parses arguments
    (a project's ``dodo.py`` is imported too late for it).
    """
    from doit.doit_cmd import DoitMain, reset_vars, set_var

    def process_args(self, cmd_args):
        reset_vars()
        args = []
        for arg in cmd_args:
            if arg[:1] != "-" and "=" in arg:
                name, value = arg.split("=", 1)
                set_var(name, value)
            else:
                args.append(arg)
        return args

    DoitMain.process_args = process_args


_accept_empty_arguments()

#: doit settings every oxidize project uses: state under build/, in SQLite (see
#: oxidize/engine/state.py: safe when two doit processes touch it).
def _state_file() -> str:
    """doit's state in the project's build folder (``.patina/local/oxidize/`` in a patina
    checkout: oxidize/engine/layout.py); a dodo.py imports this in the project root."""
    from oxidize.engine.layout import build_dir

    return f"{build_dir()}/.doit.db"


DOIT_CONFIG = {
    "dep_file": _state_file(),
    "backend": "oxidize",
    "reporter": "oxidize",
}


def task_oxidize():
    """Build every oxidize recipe of this project."""
    from oxidize.engine import buildlock
    from oxidize.engine.tasks import task_dicts

    root = Path.cwd()
    try:
        from oxidize.engine.layout import check_folders

        check_folders(root)
        # `doit`/`doit -n 2`/`forget` wait for another build of the project; `list`,
        # `info` and `stale` do not (see oxidize/engine/buildlock.py).
        runs_tasks = buildlock.needs_lock(buildlock.current_command())
        if runs_tasks:
            from oxidize.embed.executor import selected_executor

            selected_executor(root)  # a bad $OXIDIZE_EXECUTOR is one line before any step runs
            buildlock.acquire(root)
            from oxidize.engine import interrupt

            interrupt.install()
        # A recipe whose event log is missing is reported before anything runs, but only
        # when the build would run its tasks: `doit a` still builds `a` beside a broken `b`.
        check = None
        if runs_tasks:
            check = {arg.split(":", 1)[0] for arg in buildlock.current_task_args()} or True
        yield from task_dicts(root, check_inputs=check)
    except OxidizeError as err:
        raise InvalidDodoFile(f"oxidize: {err}") from None


class OxidizeLoader(TaskLoader2):
    """Load the task graph of every recipe under the current directory."""

    def setup(self, opt_values):
        self.root = Path.cwd()

    def load_doit_config(self):
        return {**DOIT_CONFIG, "dep_file": _state_file()}

    def load_tasks(self, cmd, pos_args):
        return generate_tasks("oxidize", task_oxidize(), task_oxidize.__doc__)


def with_oxidize_defaults(options) -> list[dict]:
    """doit option dicts with oxidize's settings (:data:`DOIT_CONFIG`) as their defaults, so
    that ``doit help stale`` shows what oxidize really uses (``build/.doit.db``…)."""
    return [dict(opt, default=DOIT_CONFIG[opt["name"]]) if opt.get("name") in DOIT_CONFIG else opt
            for opt in options]
