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
* a record equal to the one read at the start of the run is not written again: a no-op
  ``doit`` still "runs" every group task (``R``, ``R:P``) and saves it, and committing those
  twelve unchanged records (a sync each) took ~11 ms of a ~170 ms no-op on a 3 × 3 project.

Registered under doit's ``doit.BACKEND`` entry point as ``oxidize``.
"""

from __future__ import annotations

import os

from doit.dependency import SqliteDB

#: Seconds a doit process waits for another one holding the state database.
BUSY_TIMEOUT_S = 120


class StateDB(SqliteDB):
    """doit's SqliteDB that creates its folder and waits on a busy database."""

    desc = "SQLite state under build/ (oxidize)"

    def __init__(self, *args, **kwargs):
        #: task id → its record, encoded, as in the file (to skip unchanged writes)
        self._stored: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    def _get_task_data(self, task_id):
        data = super()._get_task_data(task_id)
        if data:
            # encoded, because doit saves ``deps:`` as a tuple and reads it back as a list
            self._stored[task_id] = self.codec.encode(data)
        return data

    def _sqlite3(self, name):
        folder = os.path.dirname(name)
        if folder:
            os.makedirs(folder, exist_ok=True)
        conn = super()._sqlite3(name)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        return conn

    def set(self, task_id, dependency, value):
        super().set(task_id, dependency, value)
        if dependency == "deps:":  # the last key doit's save_success records for a task
            encoded = self.codec.encode(self._cache[task_id])
            if encoded != self._stored.get(task_id):
                self._conn.execute("insert or replace into doit values (?,?)", (task_id, encoded))
                self._conn.commit()
                self._stored[task_id] = encoded
            self._dirty.discard(task_id)
