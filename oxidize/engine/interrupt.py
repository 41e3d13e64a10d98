"""Ctrl-C during a build: one line and exit code 130, not doit's and Python's tracebacks.

Installed by the loader for commands that run tasks, after the build lock is taken. Every
output is written to a temporary name and renamed into place (oxidize/util/atomic.py), the
embedding cache and doit's state commit as they go, and the next build removes stray
temporaries: stopping at once loses nothing but the step that was running. Worker
processes of ``doit -n 2`` (forked after this is installed) stop silently; the process that
installed it prints the line. A SIGINT that was ignored when the build started (a shell's
background job) stays ignored.
"""

from __future__ import annotations

import os
import signal

MESSAGE = ("oxidize: interrupted; nothing half-written — the next `doit` resumes from the last "
           "finished step (finished embedding batches are kept in the cache)\n")


def install() -> None:
    """Route SIGINT to :func:`_stop` in this process and the workers it forks."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # ignored, or someone else's: leave it
    main = os.getpid()

    def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
        if os.getpid() == main:
            import multiprocessing

            for child in multiprocessing.active_children():  # `-n 2`'s workers, if only we got it
                child.kill()
            os.write(2, MESSAGE.encode("utf-8"))
        os._exit(130)

    signal.signal(signal.SIGINT, _stop)
