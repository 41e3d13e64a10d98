"""Why a target is stale: reasons as data, one check that finds them, one function that words them.

doit already decides *whether* a task runs. This module answers *why*, for ``doit stale``,
in the user's terms — "recipe key ``projections.semantic.epochs`` changed from 10 to 20",
"the event log ``events.db`` changed: 3 events added" — instead of doit's "an uptodate
object evaluates to false".

Three pieces, kept apart on purpose (doit's ``DependencyStatus`` vs ``Info.get_reasons``,
Cargo's ``DirtyReason`` vs ``present_to``):

* **Reasons are small frozen dataclasses**, one per kind, each with a ``kind`` string
  for JSON (:func:`to_json`). They carry values (old and new key values, event counts,
  paths relative to the project root), never prose.
* **One check**, :meth:`StaleChecker.check`, with an ``explain`` switch: without it, it
  stops at the first reason (enough to decide); with it, it collects all of them. It asks
  doit's own ``Dependency.get_status`` — so the verdict is exactly doit's, including its
  MD5 checker (a ``touch`` that leaves content unchanged is not a change) — and translates
  doit's reason keys into the dataclasses of :mod:`oxidize.engine.stale_reasons`, enriched with what
  :class:`oxidize.engine.fingerprint.StageInputs` saved (the old recipe keys, the version, the
  state of every target). If doit would run a task and none of these reasons applies,
  the answer is :class:`Unexplained`: improve the check rather than guess.
* **One function words them all**, :func:`render`. No other module builds reason prose.
  (Reasons and :func:`render` live in :mod:`oxidize.engine.stale_reasons`; this module re-exports them.)

Staleness is transitive, unlike doit's per-task status: when ``R:P.pairs`` must run, the
embeddings and weights built from its files are stale too (:class:`UpstreamRebuilt`),
found by following each ``file_dep`` to the task whose ``targets`` hold it.

Cost: one ``stat`` per input and output, as for doit's own no-op check; a file whose mtime
moved is hashed (doit's MD5, and sha256 for outputs); the event log is queried
(``count(*)``, ``max(seq)``, read-only) only when doit reports it changed. This module
imports nothing numerical: ``doit stale`` must start as fast as ``doit list``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oxidize.engine.fingerprint import (VALUES_KEY, RecordedFiles, StageInputs, changed_keys, input_unchanged,
                                        target_unchanged)
# The reasons and their wording (re-exported: ``staleness.render``, ``staleness.LockDiffers``…).
from oxidize.engine.stale_reasons import (AlwaysRuns, CheckerChanged, EventLogChanged, InputChanged,  # noqa: F401
                                   InputMissing, InputsChanged, LockDiffers, LockMissing,
                                   InputReplaced, LastBuildFailed, ModelFileChanged, ModelMissing, NeverBuilt,
                                   Reason,
                                   RecipeKeyChanged, TargetMissing, TargetModified, Unexplained,
                                   UpstreamRebuilt, VersionChanged, render, to_json)

def _same_size_and_mtime(path: str, stored: list | None) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(stored) and len(stored) == 6 and [st.st_size, st.st_mtime_ns] == stored[3:5]


# --------------------------------------------------------------------------- the check


#: Reasons of a lock task (``R:lock``) that only repeat what the stale targets of its
#: recipe already say. Such a lock is left out of the report while other tasks of its
#: recipe are listed: it is rewritten after any build that changed the recipe's outputs.
IMPLIED_FOR_LOCK = (UpstreamRebuilt, RecipeKeyChanged, EventLogChanged, InputChanged, InputsChanged)


@dataclass(frozen=True)
class Entry:
    """One task's verdict: ``stale`` with reasons, or ``up-to-date`` without."""

    task: str
    targets: tuple[str, ...]
    reasons: tuple[Reason, ...]
    #: A lock task stale only because other tasks of its recipe are (see IMPLIED_FOR_LOCK).
    folded: bool = False

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "status": "stale" if self.stale else "up-to-date",
                "targets": list(self.targets), "reasons": [to_json(r) for r in self.reasons]}


def _git_reason(settings: dict, old: str, new: str) -> Reason:
    """The scraped repository's HEAD moved: how many commits, or a rewritten history."""
    from oxidize.engine.stale_reasons import GitHistoryMoved
    from oxidize.gitlog.scrape import history_change

    repo = str(settings.get("git.repository", "the repository"))
    commits, branch, rewritten = history_change(Path(repo), old, new)
    return GitHistoryMoved(repo, old, new, commits, branch, rewritten)


def is_lock_task(name: str) -> bool:
    return name.endswith(":lock")


class StaleChecker:
    """Finds the reasons of every task of one loaded task graph (memoised per task).

    Args:
        dep_manager: doit's ``Dependency`` (its state database, read only: never closed
            or dumped here, so nothing is written back).
        tasks: every task by name, as doit loaded them.
        root: the project root (doit's working directory), to resolve relative paths.
    """

    def __init__(self, dep_manager, tasks: dict[str, Any], root: Path | str = "."):
        self.dep = dep_manager
        self.tasks = tasks
        self.root = Path(root)
        self.producer: dict[str, str] = {}
        for task in tasks.values():
            for target in task.targets:
                self.producer[target] = task.name
        # Inputs no task produces, by role: the event logs (read by pairs tasks) and the
        # model files (read by model tasks).
        self.eventlogs = {d for t in tasks.values() if t.name.endswith(".pairs")
                          for d in t.file_dep if d not in self.producer}
        self.model_files = {d for t in tasks.values() if t.name.endswith(":model")
                            for d in t.file_dep if d not in self.producer}
        self._memo: dict[tuple[str, bool], tuple[Reason, ...]] = {}
        self._busy: set[str] = set()
        self._log_stats: dict[str, tuple[int, int] | None] = {}
        from oxidize.engine.reporter import read_failures

        self.failures = read_failures(self.root)

    # -- public ----------------------------------------------------------------------

    def check(self, name: str, explain: bool = False) -> tuple[Reason, ...]:
        """The reasons task ``name`` is stale; empty when it is up to date.

        Cheapest first: doit's record (never built), then doit's own status (recipe keys
        and version through ``uptodate``, missing targets, changed inputs), then the
        upstream tasks. Without ``explain`` it returns at the first reason found.
        """
        if (name, True) in self._memo:
            return self._memo[(name, True)]
        if not explain and (name, False) in self._memo:
            return self._memo[(name, False)]
        if name in self._busy:  # a cycle: doit refuses those, so only a safety net
            return ()
        self._busy.add(name)
        try:
            found = tuple(self._check(self.tasks[name], explain))
        finally:
            self._busy.discard(name)
        self._memo[(name, explain)] = found
        return found

    def entries(self, names: list[str]) -> list[Entry]:
        """Entries for ``names`` (in that order); a lock stale only by implication is ``folded``."""
        out = []
        for name in names:
            reasons = self.check(name, explain=True)
            folded = bool(reasons) and is_lock_task(name) and self._implied(name, reasons)
            out.append(Entry(name, tuple(self.tasks[name].targets), reasons, folded))
        return out

    # -- internals -------------------------------------------------------------------

    def _implied(self, name: str, reasons: tuple[Reason, ...]) -> bool:
        """True when a lock task is stale only because other tasks of its recipe are."""
        if not all(isinstance(r, IMPLIED_FOR_LOCK) for r in reasons):
            return False
        basename = name.split(":", 1)[0]
        return any(self.check(other) for other in self.tasks
                   if other != name and other.startswith(basename + ":") and self.tasks[other].actions)

    def _check(self, task, explain: bool) -> list[Reason]:
        reasons: list[Reason] = []

        def add(reason: Reason) -> bool:
            """Record a reason; True when the caller should stop looking."""
            if reason not in reasons:
                reasons.append(reason)
            return not explain

        if task.name in self.failures:
            add(LastBuildFailed(self.failures[task.name]))
        if self.dep._get(task.name, "checker:") is None:
            if not reasons:
                add(NeverBuilt())
            return reasons

        status = self.dep.get_status(task, self.tasks, get_log=explain)
        doit_reasons = status.reasons if explain else {}

        for utd, _args, _kwargs in doit_reasons.get("uptodate_false", ()):
            found = self._uptodate_reasons(task, utd)
            for reason in found:
                if add(reason):
                    return reasons
        if doit_reasons.get("checker_changed"):
            if add(CheckerChanged(*doit_reasons["checker_changed"])):
                return reasons
        for target in doit_reasons.get("missing_target", ()):
            if add(TargetMissing(target)):
                return reasons
        added = tuple(doit_reasons.get("added_file_dep") or ())
        # A dropped input that no longer exists is said as "does not exist" (InputMissing).
        removed = tuple(d for d in doit_reasons.get("removed_file_dep") or () if (self.root / d).exists())
        if added or removed:
            if add(InputsChanged(added, removed)):
                return reasons
        for dep in doit_reasons.get("missing_file_dep", ()):
            if add(InputMissing(dep)):
                return reasons
        for dep in doit_reasons.get("changed_file_dep", ()):
            if dep in self.producer and self.check(self.producer[dep]):
                continue  # said below, as "will be rebuilt by"
            if add(self._changed_input(task, dep)):
                return reasons
        if doit_reasons.get("has_no_dependencies") and task.actions:
            if add(AlwaysRuns()):
                return reasons

        # Upstream: an input that a stale task will rewrite.
        for dep in sorted(task.file_dep):
            producer = self.producer.get(dep)
            if producer and producer != task.name and self.check(producer):
                if add(UpstreamRebuilt(dep, producer)):
                    return reasons

        if status.status != "up-to-date" and not reasons:
            if not explain:
                # Decision mode does not collect doit's reasons; explain once to tell.
                return list(self.check(task.name, explain=True))
            if not self._only_locked_mode(task, doit_reasons):
                add(Unexplained())
        return reasons

    @staticmethod
    def _only_locked_mode(task, doit_reasons: dict) -> bool:
        """True when doit would run the task only because locked mode always verifies."""
        from oxidize.engine.lockfile import LockedModeCheck

        falses = doit_reasons.get("uptodate_false") or ()
        others = [k for k, v in doit_reasons.items() if v and k != "uptodate_false"]
        return bool(falses) and not others and all(isinstance(u, LockedModeCheck) for u, _a, _k in falses)

    def _uptodate_reasons(self, task, utd) -> list[Reason]:
        """Translate one ``uptodate`` entry that evaluated false."""
        from oxidize import __version__
        from oxidize.engine.lockfile import LockedModeCheck

        if isinstance(utd, LockedModeCheck):
            # Under $OXIDIZE_LOCKED the lock task runs every time, but only to compare:
            # nothing is out of date because of it (`doit stale --locked` does that check).
            return []
        if isinstance(utd, StageInputs):
            stored = self.dep.get_values(task.name).get(VALUES_KEY) or {}
            found: list[Reason] = [_git_reason(utd.settings, old, new) if k == "git.HEAD" and old
                                   else RecipeKeyChanged(k, old, new)
                                   for k, old, new in changed_keys(stored.get("keys"), utd.settings)]
            if stored.get("version") != __version__:
                found.append(VersionChanged(stored.get("version"), __version__))
            saved = stored.get("targets") or {}
            for target in utd.targets:
                if not os.path.exists(target):
                    found.append(TargetMissing(target))
                elif not target_unchanged(target, saved.get(target)):
                    found.append(TargetModified(target))
            inputs = stored.get("inputs") or {}
            # Only what doit's own file check cannot see (same size and mtime): the rest is
            # reported as the event log's change, with its counts.
            changed = [i for i in utd.inputs if not input_unchanged(i, inputs.get(i))]
            found += [InputReplaced(i) for i in changed if _same_size_and_mtime(i, inputs.get(i))]
            return found or ([] if changed else [Unexplained()])
        if isinstance(utd, RecordedFiles):
            return [TargetMissing(p) if not os.path.exists(p) else TargetModified(p)
                    for p in utd.changed()] or [Unexplained()]
        if utd is False:
            return [self._unresolved_input(task)]
        return [Unexplained()]

    def _unresolved_input(self, task) -> Reason:
        """tasks.py sets ``uptodate: False`` when the event log or the model is absent."""
        from oxidize.errors import OxidizeError
        from oxidize.engine.discovery import load_recipes
        from oxidize.engine.tasks import eventlog_path

        basename = task.name.split(":", 1)[0]
        try:
            recipe = next((r for r in load_recipes(self.root) if r.name == basename), None)
        except OxidizeError:
            recipe = None
        if recipe is None:
            return AlwaysRuns()
        if task.name.endswith(".pairs"):
            path = eventlog_path(recipe, self.root)
            try:
                shown = str(Path(os.path.abspath(path)).relative_to(os.path.abspath(self.root)))
            except ValueError:
                shown = str(path)
            return InputMissing(shown)
        if task.name.endswith(":model"):
            return ModelMissing(recipe.embedding_model)
        return AlwaysRuns()

    def _changed_input(self, task, dep: str) -> Reason:
        if dep in self.eventlogs:
            return self._eventlog_change(task, dep)
        if dep in self.model_files:
            return ModelFileChanged(dep)
        return InputChanged(dep)

    def _eventlog_change(self, task, dep: str) -> EventLogChanged:
        """The log changed: compare the counts the pairs stage recorded with the log's now."""
        old = None
        for path in list(task.targets) + sorted(task.file_dep):
            if path.endswith("pairs.json"):
                try:
                    stats = json.loads((self.root / path).read_text(encoding="utf-8"))
                    old = (int(stats["event_count"]), int(stats["max_seq"]))
                    break
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        new = self._current_log_stats(dep)
        if old is None or new is None:
            return EventLogChanged(dep)
        return EventLogChanged(dep, old[0], new[0], old[1], new[1])

    def _current_log_stats(self, dep: str) -> tuple[int, int] | None:
        if dep not in self._log_stats:
            from oxidize.errors import OxidizeError
            from oxidize.eventlog import open_eventlog

            try:
                with open_eventlog(self.root / dep) as log:
                    stats = log.stats()
                self._log_stats[dep] = (stats.count, stats.max_seq)
            except OxidizeError:
                self._log_stats[dep] = None
        return self._log_stats[dep]
