"""One build at a time per project: an advisory lock on ``build/.lock``.

Two ``doit`` runs on one project would both run the same tasks, race on the same targets
and both write doit's state. Every single write is safe on its own (targets are renamed
into place, the embedding cache and doit's state are SQLite with busy timeouts), but the
work is done twice and the outcome depends on who finishes last. So a command that runs
tasks or changes doit's state takes an exclusive lock first; a second one prints that it
waits for the other build, naming the lock file and the holder's pid, and continues when
the first has finished — like Cargo's "Blocking waiting for file lock on build directory".

Why it is safe:

* **Released by the OS.** The lock is ``fcntl.flock`` on an open file kept for the
  process's lifetime; the kernel drops it when the process exits, however it exits
  (``kill -9`` included). A stale lock file is therefore harmless: its content (the pid of
  the last holder) is only shown in the waiting message, never trusted.
* **Taken once, in the main process, while doit loads the tasks** — before any task runs.
  ``doit -n 2`` forks its workers after loading; a forked worker shares the parent's open
  file description and so *is* inside the lock, and no action ever takes it again (a second
  ``flock`` on a new descriptor from a worker would wait for its own parent).
* **Leftovers of a killed build are removed under the lock.** A ``kill -9`` can leave the
  temporary file of an :func:`oxidize.util.atomic.atomic_path` write (``.<target>.tmp-*``).
  It never looks like a target (doit checks the target's own name), and once this process
  holds the lock no other build can be writing one, so :func:`acquire` deletes them.
* **Only where it matters.** Commands that only read (``list``, ``info``, ``stale``,
  ``dumpdb``, ``help``…) never take it, so they work while a build runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from oxidize.errors import BuildError

try:  # POSIX only; elsewhere builds simply run unlocked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: The lock file, relative to the project root.
LOCK_FILE = "build/.lock"
#: doit commands that write targets or doit's state, besides those with ``execute_tasks``.
STATE_COMMANDS = frozenset({"run", "clean", "forget", "ignore", "reset-dep"})

# Open lock descriptors by absolute path, held until the process exits (never closed on purpose).
_held: dict[str, int] = {}


def needs_lock(cmd: object) -> bool:
    """True when the doit command ``cmd`` runs tasks or changes doit's state."""
    if cmd is None:
        return False
    name = getattr(cmd, "name", None) or type(cmd).__name__.lower()
    return bool(getattr(cmd, "execute_tasks", False)) or name in STATE_COMMANDS


def current_command() -> object | None:
    """The doit command object that is loading tasks right now, found on the call stack.

    A project's ``dodo.py`` star-imports :func:`oxidize.engine.loader.task_oxidize`, which doit
    calls without saying for which command; doit's task loaders hold it in a local named
    ``cmd``. ``None`` when not called from doit (then nothing is locked).
    """
    try:
        from doit.cmd_base import Command
    except ImportError:  # pragma: no cover
        return None
    frame = sys._getframe(1)
    while frame is not None:
        cmd = frame.f_locals.get("cmd")
        if isinstance(cmd, Command):
            return cmd
        frame = frame.f_back
    return None


def current_task_args() -> list[str]:
    """The task names given on the command line of the doit command loading tasks right now
    (doit's loaders hold them in a local named ``pos_args``); empty when none were given."""
    frame = sys._getframe(1)
    while frame is not None:
        args = frame.f_locals.get("pos_args")
        if isinstance(args, (list, tuple)):
            return [str(a) for a in args]
        frame = frame.f_back
    return []


def acquire(root: Path | str, stream: TextIO | None = None) -> Path | None:
    """Hold the project's build lock for the rest of this process; wait if another has it.

    Returns the lock file's path (``None`` where ``flock`` does not exist). Taking it
    again in the same process (or in a forked worker) returns at once.

    Raises:
        BuildError: the lock file cannot be created or locked (e.g. a read-only ``build/``).
    """
    if fcntl is None:  # pragma: no cover
        return None
    from oxidize.engine.layout import in_build

    path = Path(os.path.abspath(Path(root) / in_build(LOCK_FILE, root)))
    if str(path) in _held:
        return path
    stream = stream if stream is not None else sys.stderr
    shown = _shown(path, Path(root))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A bare descriptor, not a file object: nothing to flush or to warn about at exit,
        # and no O_TRUNC, so a holder's pid stays readable until we hold the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise BuildError(f"cannot create the build lock {shown}: {err.strerror or err}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            try:
                # The message is inside the try: Ctrl-C may come as soon as it is on screen.
                print(f"oxidize: waiting for another build of this project{who} to finish; "
                      f"it holds the lock {shown}", file=stream, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            except KeyboardInterrupt:  # Ctrl-C while waiting: a plain message, not a traceback
                os.close(fd)
                raise BuildError(f"interrupted while waiting for the lock {shown}; "
                                 "nothing was built") from None
            print("oxidize: the other build has finished; continuing", file=stream, flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BuildError:
        raise
    except OSError as err:
        os.close(fd)
        raise BuildError(f"cannot lock {shown}: {err.strerror or err}") from None
    except BaseException:
        os.close(fd)
        raise
    _held[str(path)] = fd
    remove_stale_temporaries(path.parent)
    return path


def remove_stale_temporaries(build_dir: Path) -> list[Path]:
    """Delete the ``.<name>.tmp-*`` files a killed build left under ``build_dir``; return them.

    Call only while holding the build lock: then no other process is writing one.
    """
    removed = []
    for folder, _dirs, files in os.walk(build_dir):
        for name in files:
            if name.startswith(".") and ".tmp-" in name:
                stale = Path(folder) / name
                try:
                    stale.unlink()
                except OSError:
                    continue
                removed.append(stale)
    return removed


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(os.path.abspath(root)))
    except ValueError:
        return str(path)
