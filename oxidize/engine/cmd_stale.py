"""``doit stale``: which targets are stale, and why — for people (text) and machines (JSON).

A doit command plugin (``doit.COMMAND`` entry point ``stale``), so it works in any project
with oxidize installed: ``doit stale`` and ``oxidize stale``. It loads the task graph like
``doit list``, asks :class:`oxidize.engine.staleness.StaleChecker` for the reasons of each task,
and prints them through :func:`oxidize.engine.staleness.render` — the only place reasons become
words. Reading only: doit's state database is opened but never written back.

Exit codes: 0 — done (with ``--check``: nothing is stale; with ``--locked``: the build
matches every lock); 1 — ``--check`` and something is stale, or ``--locked`` and a lock
differs or is missing; 3 — doit or oxidize could not load the project (a bad recipe, an
unknown task name), as for every doit command.
"""

from __future__ import annotations

import json
from pathlib import Path

from doit.cmd_base import DoitCmdBase
from doit.exceptions import InvalidCommand

from oxidize.errors import OxidizeError

opt_json = {"name": "json", "long": "json", "type": bool, "default": False,
            "help": "print a JSON list of {task, status, targets, reasons:[{kind, ...}]}"}
opt_check = {"name": "check", "long": "check", "type": bool, "default": False,
             "help": "exit 1 when anything is stale (for CI), 0 otherwise"}
opt_quiet = {"name": "quiet", "short": "q", "long": "quiet", "type": bool, "default": False,
             "help": "print nothing; only the exit code tells (use with --check / --locked)"}
opt_all = {"name": "show_all", "long": "all", "type": bool, "default": False,
           "help": "list up-to-date tasks too"}
opt_locked = {"name": "locked", "long": "locked", "type": bool, "default": False,
              "help": "also re-hash the build outputs and compare them with each recipe's "
                      "oxidize.lock; exit 1 naming every difference"}


def select(names: list[str], filters: list[str]) -> list[str]:
    """Task names matching any filter: a recipe (``a``), a projection (``a:semantic``), a task
    or any prefix containing ``:`` (``a:sem``). No filter keeps all."""
    if not filters:
        return list(names)

    def match(name: str, f: str) -> bool:
        return (name == f or name.startswith(f + ":") or name.startswith(f + ".")
                or (":" in f and name.startswith(f)))

    return [n for n in names if any(match(n, f) for f in filters)]


class Stale(DoitCmdBase):
    """List stale targets with their reasons."""

    name = "stale"
    doc_purpose = "list stale targets and why they are stale"
    doc_usage = "[RECIPE | RECIPE:PROJECTION | TASK ...]"
    doc_description = ("Without arguments every task of the project is checked. Up-to-date tasks\n"
                       "are listed only with --all. Exit code 1 with --check when anything is\n"
                       "stale, and with --locked when a build differs from its oxidize.lock.")
    cmd_options = (opt_json, opt_check, opt_quiet, opt_all, opt_locked)

    def get_options(self):
        from doit.cmdparse import CmdOption

        from oxidize.engine.loader import with_oxidize_defaults

        return [CmdOption(opt) for opt in with_oxidize_defaults(
            (*self.base_options, *self.loader.cmd_options, *self.cmd_options))]

    def _execute(self, pos_args=None, json=False, check=False, quiet=False, show_all=False, locked=False):
        from oxidize.engine import staleness

        tasks = {t.name: t for t in self.task_list}
        # Group tasks (no action: `R`, `R:P`) are not targets; they run whatever their deps run.
        names = [t.name for t in self.task_list if t.actions]
        chosen = select(names, pos_args or [])
        if pos_args and not chosen:
            raise InvalidCommand(f"no task matches {' '.join(pos_args)!r}; see `{self.bin_name} list --all`")
        root = Path.cwd()
        self.notes: list[str] = []
        try:
            checker = staleness.StaleChecker(self.dep_manager, tasks, root)
            entries = checker.entries(chosen)
            lock_reasons = self._lock_reasons(root, chosen) if locked else []
        except OxidizeError as err:
            raise InvalidCommand(f"oxidize: {err}") from None

        # A lock rewritten only because its recipe's stale targets are is listed with --all.
        shown = [e for e in entries if show_all or (e.stale and not e.folded)]
        stale = any(e.stale for e in entries)
        if not quiet:
            if json:
                self._print_json(shown, lock_reasons, locked)
            else:
                self._print_text(shown, entries, lock_reasons, locked, staleness.render)
        failed = (check and stale) or (locked and bool(lock_reasons))
        return 1 if failed else 0

    def _lock_reasons(self, root: Path, chosen: list[str]):
        """``--locked``: compare each chosen recipe's build outputs with its lock file."""
        from oxidize.engine import lockfile
        from oxidize.engine.staleness import LockDiffers, LockMissing
        from oxidize.engine.lock_text import flatten, read_lock
        from oxidize.engine.discovery import load_recipes
        from oxidize.engine.tasks import _rel

        recipes = {n.split(":", 1)[0] for n in chosen}
        reasons = []
        for recipe in load_recipes(root):
            if recipe.name not in recipes:
                continue
            path = lockfile.lock_path(recipe.path)
            shown = _rel(path, root)
            if not path.is_file():
                reasons.append(LockMissing(shown))
                continue
            built = flatten(lockfile.compute_lock(recipe, root))
            committed = read_lock(path, shown)
            diffs, note = lockfile.check(committed, built, strict=lockfile.strict())
            reasons += [LockDiffers(shown, field, old, new) for field, old, new in diffs]
            if note:
                self.notes.append(f"{shown}: {note}")
        return reasons

    def _print_json(self, shown, lock_reasons, locked) -> None:
        from oxidize.engine.staleness import to_json

        data: object = [e.to_json() for e in shown]
        if locked:
            data = {"tasks": data, "lock": [to_json(r) for r in lock_reasons]}
        self.outstream.write(json.dumps(data, indent=2, ensure_ascii=False, default=list) + "\n")

    def _print_text(self, shown, entries, lock_reasons, locked, render) -> None:
        out = self.outstream
        for entry in shown:
            out.write(f"{entry.task}{'' if entry.stale else ': up to date'}\n")
            for reason in entry.reasons:
                out.write(f"    {render(reason)}\n")
        n_stale = sum(e.stale for e in entries)
        if n_stale:
            folded = [e.task for e in entries if e.folded and e not in shown]
            also = f" and rewrites {', '.join(folded)}" if folded else ""
            out.write(f"{n_stale - len(folded)} of {len(entries)} task{'s' if len(entries) != 1 else ''} "
                      f"stale; `{self.bin_name}` rebuilds them{also}\n")
        else:
            out.write(f"nothing is stale ({len(entries)} task{'s' if len(entries) != 1 else ''} up to date)\n")
        if locked:
            if lock_reasons:
                out.write("the build does not match the lock:\n")
                for reason in lock_reasons:
                    out.write(f"    {render(reason)}\n")
            else:
                out.write("the build matches the lock\n")
            for note in self.notes:
                out.write(f"{note}\n")
