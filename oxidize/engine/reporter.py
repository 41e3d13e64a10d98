"""What a user sees when a task fails: one ``oxidize:`` line naming the recipe, the projection
and the step, instead of doit's ``TaskFailed - taskid:…`` heading.

A ``doit.REPORTER`` plugin (``oxidize``, the default in :data:`oxidize.loader.DOIT_CONFIG`):
everything else prints as doit's console reporter does. It also keeps the last failure of
each task in ``build/.failures.json`` so that ``doit stale`` can say "last build failed: …"
instead of "never built" (a failed task has no record in doit's state). A success removes
the task's entry; a run without failures and without entries writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

from oxidize.engine.layout import FAILURES_FILE, in_build

#: The longest failure message kept per task (the first line is what ``stale`` shows).
_KEEP_CHARS = 500


def describe_task(name: str) -> str:
    """``"x:semantic.pairs"`` → ``"recipe x, projection semantic, step pairs"``."""
    recipe, _, rest = name.partition(":")
    if not rest:
        return f"recipe {recipe}"
    projection, dot, step = rest.rpartition(".")
    if not dot:  # R:model, R:lock, or the group task R:P
        return f"recipe {recipe}, step {rest}"
    return f"recipe {recipe}, projection {projection}, step {step}"


def read_failures(root: Path | str = ".") -> dict[str, str]:
    """The recorded last failure message of each task (empty when there is none)."""
    try:
        data = json.loads((Path(root) / in_build(FAILURES_FILE, root)).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class OxidizeReporter(ConsoleReporter):
    """doit's console reporter, with oxidize's failure lines and failure record."""

    desc = "console output; failures as one `oxidize:` line naming recipe, projection and step"

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self._recorded = read_failures()
        self._changed = False

    def add_failure(self, task, fail):
        message = fail.get_msg().strip()
        if isinstance(fail, TaskFailed) and message.startswith("oxidize: "):
            message = message[len("oxidize: "):]
        self._recorded[task.name] = message[:_KEEP_CHARS]
        self._changed = True
        super().add_failure(task, fail)

    def add_success(self, task):
        if self._recorded.pop(task.name, None) is not None:
            self._changed = True
        super().add_success(task)

    def _write_failure(self, result, write_exception=True):
        task, fail = result["task"], result["exception"]
        message = fail.get_msg().strip()
        where = f"{task.name} failed ({describe_task(task.name)})"
        if isinstance(fail, TaskFailed) and message.startswith("oxidize: "):
            # a user's mistake, already worded by oxidize: one line, no traceback
            self.write(f"oxidize: {where}: {message[len('oxidize: '):]}\n")
        elif write_exception:  # an unexpected error: its traceback helps whoever reports it
            self.write(f"oxidize: {where} with an unexpected error:\n{message}\n")
        else:
            self.write(f"oxidize: {where}\n")

    def complete_run(self):
        super().complete_run()
        if self._changed:
            self._save()

    def _save(self) -> None:
        from oxidize.util.atomic import write_text

        path = Path(in_build(FAILURES_FILE))
        try:
            if self._recorded:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text(path, json.dumps(self._recorded, indent=1, sort_keys=True) + "\n")
            elif path.exists():
                path.unlink()
        except OSError:
            pass  # only a record for `doit stale`: a read-only build folder keeps none
