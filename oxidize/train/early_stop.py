"""Stopping training that cannot win: validation checked within the first epoch.

On every real log measured (patina-dev, the project's full log, a patina checkout) both
default projections kept epoch 0, the start map, after three or four epochs that validation
rejected — 14 s of a 36 s build thrown away. Training's result replaces the start map only
when it beats it clearly (``EPOCH_CLEAR_Z``); this module stops it as soon as it is as clearly
*below* the start map with no sign of recovery.

The rule (:class:`EarlyStop`): validation is scored in the first epoch after
:data:`FIRST_CHECK_TRIPLETS` triplets and again each time their number doubles, and at each
of its :data:`CHECKS_PER_EPOCH` eighths; then after every epoch. The trainer ends a segment
at each mark, so the checks fall on the same minibatches however the epoch is segmented
(the segments follow the BLAS thread probes, which differ between machines). Training
stops when two checks in a row are below the start map by more than :data:`STOP_Z` standard
errors of the per-query difference (:func:`oxidize.evaluate.clearly_better`, reversed) and
the later one is not clearly better than the earlier (by :data:`RECOVERY_Z` errors: a rise
within noise is no recovery). Scoring reads the weights only, so where
training does win the weights come out byte for byte as without the checks.
"""

from __future__ import annotations

import numpy as np

from oxidize.evaluate import clearly_better

#: Checks of validation within the first epoch (after it: one per epoch). 8, not 4: the dev
#: build's incremental ``semantic`` training stops 46% into epoch 1, not 57%, and
#: ``bench_later``'s figures stay the same on every pair type (1.032×, 1.168×, 1.001×).
CHECKS_PER_EPOCH = 8
#: The first check of the first epoch, in triplets; the next come at twice as many, four
#: times, …. A fall below the start map shows from the first few hundred
#: triplets on: the dev build's ``semantic`` is 2.5 standard errors below it after 512 and
#: 1,024 (and stops there, 3% into epoch 1, where the eighths stopped it at 29%). Doubling
#: keeps the checks few: a check scores every validation query (20 ms there), and its first
#: epoch, if it ran whole, would hold 14 checks (0.28 s of ~5 s) where the eighths held 7.
FIRST_CHECK_TRIPLETS = 512
#: How clearly below the start map a check must be to count (standard errors): as clearly as
#: an epoch must be above it to be kept (``trainer.EPOCH_CLEAR_Z``). 2, not 3: the dev
#: build's incremental ``semantic`` training stops 29% into epoch 1, not 46%, and
#: every one of ``bench_later``'s 21 builds keeps the same weights, byte for byte.
STOP_Z = 2.0
#: How clearly a check must beat the one before to count as recovering.
RECOVERY_Z = 1.0
#: Training that hovers under the bar stops too: when after this many epochs no epoch has
#: come within :data:`REACH_Z` standard errors above the start map (the bar to keep one is
#: ``trainer.EPOCH_CLEAR_Z`` = 2), it stops and keeps the start map. Measured (validation z
#: per epoch, default recipes): where training wins, epoch 1 is already at z +2.7 to +3.1
#: (click, httpx: commit_files); where it loses, the first two epochs stay at +1.0/+1.1
#: (patina, commit_files) or -1.3/-1.2 (patina-dev, co_changed) and never rise after.
REACH_EPOCHS = 2
REACH_Z = 1.5


class EarlyStop:
    """Track validation checks against the start map's per-query ranks."""

    def __init__(self, start_ranks: np.ndarray, start_mrr: float, n_batches: int,
                 batch_size: int):
        self.start_ranks, self.start_mrr = start_ranks, start_mrr
        marks = {max(1, n_batches * i // CHECKS_PER_EPOCH) for i in range(1, CHECKS_PER_EPOCH)}
        triplets = FIRST_CHECK_TRIPLETS
        while triplets < n_batches * batch_size:
            marks.add(max(1, triplets // batch_size))
            triplets *= 2
        #: minibatch counts of the first epoch after which validation is checked
        self.marks = sorted(mark for mark in marks if mark < n_batches)
        self.below: list[float] = []  # the last checks' MRR while clearly below, in order
        self._last_ranks: np.ndarray | None = None
        self.stopped_at: tuple[int, int] | None = None  # (epoch, minibatches done)
        self.best_z = float("-inf")  # the best epoch's z over the start map so far
        self.out_of_reach = False

    def next_mark(self, epoch: int, done: int) -> int | None:
        """The first check after ``done`` minibatches of ``epoch`` (``None``: none left in it),
        where the trainer ends its segment."""
        if epoch != 1:
            return None
        return next((mark for mark in self.marks if mark > done), None)

    def due(self, epoch: int, done_before: int, done_after: int) -> bool:
        """Whether a check falls in the segment that took ``done_before`` to ``done_after``
        minibatches (first epoch only; epoch ends are checked by the caller)."""
        return epoch == 1 and any(done_before < mark <= done_after for mark in self.marks)

    def check(self, ranks: np.ndarray, mrr: float, epoch: int, done: int) -> bool:
        """Record one check; ``True`` when training should stop."""
        if not clearly_better(self.start_ranks, ranks, STOP_Z):
            self.below.clear()
            return False
        recovering = bool(self.below) and clearly_better(ranks, self._last_ranks, RECOVERY_Z)
        self.below.append(mrr)
        self._last_ranks = ranks
        if len(self.below) >= 2 and not recovering:
            self.stopped_at = (epoch, done)
            return True
        return False

    def epoch_end(self, z: float, epoch: int, kept_one: bool, n_batches: int) -> bool:
        """Record an epoch's z over the start map; ``True`` when training should stop because
        no epoch has come within reach of the bar after :data:`REACH_EPOCHS` epochs."""
        self.best_z = max(self.best_z, z)
        if epoch >= REACH_EPOCHS and not kept_one and self.best_z < REACH_Z:
            self.out_of_reach = True
            self.stopped_at = (epoch, n_batches)
            return True
        return False

    def words(self, n_batches: int, epochs: int, seconds: float) -> str:
        """What happened and what it saved, for the train line (``seconds``: spent training
        so far, validation checks not counted)."""
        epoch, done = self.stopped_at
        if self.out_of_reach:
            spared = seconds / max(epoch, 1) * (epochs - epoch)
            return (f"no epoch came within reach of the start map's {self.start_mrr:.4f}: the best was "
                    f"z {self.best_z:+.1f} after {epoch} epochs (an epoch is kept from z 2, training "
                    f"stops below z {REACH_Z:g}); stopped, sparing up to ~{spared:.0f}s of {epochs} epochs")
        at = f"{100 * done / n_batches:.0f}% into epoch {epoch}" if done < n_batches else f"after epoch {epoch}"
        trained = (epoch - 1) + done / n_batches
        left = max(0.0, epochs - trained)
        return (f"validation mrr@10 fell clearly below the start map's {self.start_mrr:.4f} "
                f"(to {self.below[-1]:.4f}, z {STOP_Z:g}) and did not recover; stopped {at}, "
                f"sparing up to ~{seconds / max(trained, 1e-9) * left:.0f}s of {epochs} epochs")
