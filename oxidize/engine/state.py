"""Where doit keeps its state for an oxidize project: ``build/.doit.db``, in SQLite.

doit's own SQLite backend, with two changes that a build tool needs:

* the folder is created first — doit opens its state file before any task runs, and on a
  fresh clone ``build/`` does not exist yet;
* a generous busy timeout, so two doit processes on one project (``doit -n 2`` next to a
  ``doit stale``, or two terminals) wait for each other instead of failing after 5 s;
* each task's record is committed as soon as doit has saved it, not only when the run
  ends: after a ``kill -9`` (or a crash, or a power cut) the next run skips every task that
  had finished, instead of redoing the whole run. doit's ``save_success`` records
  ``deps:`` last, so a record is written only once it is complete;
* a damaged file (cut short, overwritten: SQLite's "malformed" / "not a database", found at
  open or by ``PRAGMA quick_check``) is moved to ``damaged/`` beside it with one warning
  line, and a new state starts: every task runs once more, and the embedding cache keeps
  that from embedding anything again (oxidize/util/quarantine.py);
* a record equal to the one read at the start of the run is not written again: a no-op
  ``doit`` still "runs" every group task (``R``, ``R:P``) and saves it, and committing those
  twelve unchanged records (a sync each) took ~11 ms of a ~170 ms no-op on a 3 × 3 project.

Registered under doit's ``doit.BACKEND`` entry point as ``oxidize``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from doit.dependency import SqliteDB

#: Seconds a doit process waits for another one holding the state database.
BUSY_TIMEOUT_S = 120


class StateDB(SqliteDB):
    """doit's SqliteDB that creates its folder and waits on a busy database."""

    desc = "SQLite state under build/ (oxidize)"

    def __init__(self, *args, **kwargs):
        #: task id → its record, encoded, as in the file (to skip unchanged writes)
        self._stored: dict[str, str] = {}
        self._warned = False
        super().__init__(*args, **kwargs)

    def _get_task_data(self, task_id):
        import sqlite3

        try:
            data = super()._get_task_data(task_id)
        except sqlite3.Error as exc:
            # After a state write that found no room, SQLite may refuse reads on the same
            # connection ("disk I/O error"): the task then counts as never run, and runs.
            from oxidize.util.atomic import out_of_room

            if out_of_room(exc, Path(self.name).parent) is None:
                raise
            self._warn_no_room(out_of_room(exc, Path(self.name).parent))
            return {}
        if data:
            # encoded, because doit saves ``deps:`` as a tuple and reads it back as a list
            self._stored[task_id] = self.codec.encode(data)
        return data

    def _sqlite3(self, name):
        folder = os.path.dirname(name)
        if folder:
            if os.path.lexists(folder) and not os.path.isdir(folder):
                from doit.exceptions import InvalidDodoFile

                raise InvalidDodoFile(f"oxidize: {folder} is a file, not a folder; oxidize keeps "
                                      f"doit's state there: move it away or delete it, then run again")
            os.makedirs(folder, exist_ok=True)
        try:
            return self._checked(name)
        except Exception as exc:  # doit's DatabaseException, or sqlite3's own
            from oxidize.util.quarantine import is_damage, move_aside

            if not is_damage(exc) or not os.path.exists(name):
                raise
            dest = move_aside(name)
            print(f"oxidize: warning: doit's state {name} was damaged ({_cause(exc)}); moved it to "
                  f"{dest} and started a new one: every step runs once more, embeddings come "
                  f"from the cache", file=sys.stderr, flush=True)
            return self._checked(name)

    def _checked(self, name):
        import sqlite3

        conn = super()._sqlite3(name)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        try:
            row = conn.execute("PRAGMA quick_check").fetchone()  # doit's rows are dicts
            result = next(iter(row.values())) if isinstance(row, dict) else row[0]
        except sqlite3.DatabaseError:
            conn.close()
            raise
        if result != "ok":
            conn.close()
            raise sqlite3.DatabaseError(f"database disk image is malformed ({result})")
        return conn

    def set(self, task_id, dependency, value):
        super().set(task_id, dependency, value)
        if dependency == "deps:":  # the last key doit's save_success records for a task
            encoded = self.codec.encode(self._cache[task_id])
            if encoded != self._stored.get(task_id):
                with self._room():
                    self._conn.execute("insert or replace into doit values (?,?)", (task_id, encoded))
                    self._conn.commit()
                    self._stored[task_id] = encoded
            self._dirty.discard(task_id)

    def dump(self):
        with self._room():
            super().dump()

    def remove(self, task_id):
        with self._room():
            super().remove(task_id)

    def _room(self):
        """A state write with no room (full disk, quota, file size limit) is one warning, not a
        traceback: the outputs are written, and the next ``doit`` checks those steps again."""
        import contextlib
        import sqlite3

        state = self

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except sqlite3.Error as exc:
                from oxidize.util.atomic import out_of_room

                cause = out_of_room(exc, Path(state.name).parent)
                if cause is None:
                    raise
                with contextlib.suppress(sqlite3.Error):
                    state._conn.rollback()
                state._warn_no_room(cause)

        return guard()

    def _warn_no_room(self, cause: str) -> None:
        if not self._warned:
            self._warned = True
            print(f"oxidize: warning: cannot save doit's state in {self.name}: {cause}; "
                  f"the next `doit` checks these steps again", file=sys.stderr, flush=True)


def _cause(exc: BaseException) -> str:
    """The last line of doit's wrapped message ("…Original error: database disk image is
    malformed"), or the exception itself."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text.split("Original error: ")[-1]
