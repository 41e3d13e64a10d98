"""Progress lines for long work (embedding, training), written to stderr.

doit captures a task's stdout but lets stderr through, so progress written here is seen
while the task runs. On a terminal the line is redrawn in place; elsewhere (CI logs) a
line is printed at most every ``min_interval`` seconds, plus the final one.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Report ``done`` out of ``total`` units of work with a rate and an ETA.

    Args:
        total: how many units (texts, triplets, epochs) the work has.
        label: what is being done, e.g. ``"example:semantic embed"``.
        unit: the name of one unit, for the rate (``"texts"``).
        stream: where to write; stderr by default.
        min_interval: seconds between two printed lines when not on a terminal.
    """

    def __init__(self, total: int, label: str, unit: str = "items", stream: TextIO | None = None,
                 min_interval: float = 5.0):
        self.total = max(int(total), 0)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = 0.2 if self.tty else min_interval
        self.start = time.perf_counter()
        self.last_print = 0.0
        self.done = 0

    def update(self, done: int, extra: str = "") -> None:
        """Set the amount done so far and print a line if it is time to."""
        self.done = done
        now = time.perf_counter()
        if done < self.total and now - self.last_print < self.min_interval:
            return
        self.last_print = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * done / self.total if self.total else 100.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        line = (f"{self.label}: {done}/{self.total} {self.unit} ({pct:3.0f}%), "
                f"{rate:,.0f} {self.unit}/s, {elapsed:.1f}s elapsed"
                + (f", ~{eta:.0f}s left" if done < self.total else "")
                + (f" {extra}" if extra else ""))
        if self.tty:
            end = "\n" if done >= self.total else ""
            self.stream.write("\r\x1b[K" + line + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
