"""Why a target is stale, as data and as words: the reason dataclasses and :func:`render`.

The first and third of :mod:`oxidize.engine.staleness`'s three pieces: **reasons are small frozen
dataclasses**, one per kind, each with a ``kind`` string for JSON (:func:`to_json`),
carrying values (old and new key values, event counts, paths relative to the project root)
and never prose; and **one function words them all**, :func:`render` — no other module
builds reason prose. The check that finds them is :class:`oxidize.engine.staleness.StaleChecker`,
which re-exports every name here.

Standard library only: ``doit stale`` must start as fast as ``doit list``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Reason:
    """Base of every reason; ``kind`` names it in JSON."""

    kind: ClassVar[str] = "reason"


@dataclass(frozen=True)
class NeverBuilt(Reason):
    """doit has no record of a successful run of this task."""

    kind: ClassVar[str] = "never_built"


@dataclass(frozen=True)
class InputReplaced(Reason):
    """An input file (the event log) is another file now, with other content, although its
    size and modification time are the same (``cp -p``, ``rsync -t``, a re-pointed link)."""

    kind: ClassVar[str] = "input_replaced"
    path: str


@dataclass(frozen=True)
class LastBuildFailed(Reason):
    """The task's last run failed (recorded by :mod:`oxidize.engine.reporter`)."""

    kind: ClassVar[str] = "last_build_failed"
    message: str


@dataclass(frozen=True)
class RecipeKeyChanged(Reason):
    """A recipe key the task reads has a new value (``None`` = absent on that side)."""

    kind: ClassVar[str] = "recipe_key_changed"
    key: str
    old: Any
    new: Any


@dataclass(frozen=True)
class GitHistoryMoved(Reason):
    """The scraped repository's HEAD moved: ``commits`` new ones on ``branch``, or a
    rewritten history (the old HEAD is no longer an ancestor)."""

    kind: ClassVar[str] = "git_history_moved"
    repo: str
    old: str
    new: str
    commits: int | None
    branch: str
    rewritten: bool


@dataclass(frozen=True)
class EventLogChanged(Reason):
    """The event log's content changed; counts are ``None`` where they cannot be known."""

    kind: ClassVar[str] = "eventlog_changed"
    path: str
    old_count: int | None = None
    new_count: int | None = None
    old_max_seq: int | None = None
    new_max_seq: int | None = None


@dataclass(frozen=True)
class ModelFileChanged(Reason):
    """A file of the embedding model (``model.onnx``, ``tokenizer.json``) changed."""

    kind: ClassVar[str] = "model_file_changed"
    path: str


@dataclass(frozen=True)
class InputChanged(Reason):
    """Another input file changed, and no task will rebuild it."""

    kind: ClassVar[str] = "input_changed"
    path: str


@dataclass(frozen=True)
class InputsChanged(Reason):
    """The set of input files is not the one last built from (e.g. another model directory)."""

    kind: ClassVar[str] = "inputs_changed"
    added: tuple[str, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class InputMissing(Reason):
    """An input file does not exist (building will fail until it does)."""

    kind: ClassVar[str] = "input_missing"
    path: str


@dataclass(frozen=True)
class ModelMissing(Reason):
    """The recipe's embedding model cannot be found, so its files cannot be checked."""

    kind: ClassVar[str] = "model_missing"
    model: str


@dataclass(frozen=True)
class UpstreamRebuilt(Reason):
    """An input file is the output of a task that is stale itself."""

    kind: ClassVar[str] = "upstream_rebuilt"
    path: str
    task: str


@dataclass(frozen=True)
class TargetMissing(Reason):
    """An output file does not exist."""

    kind: ClassVar[str] = "target_missing"
    path: str


@dataclass(frozen=True)
class TargetModified(Reason):
    """An output file no longer holds what the build wrote (edited or replaced by hand)."""

    kind: ClassVar[str] = "target_modified"
    path: str


@dataclass(frozen=True)
class VersionChanged(Reason):
    """The task was built by another oxidize version."""

    kind: ClassVar[str] = "version_changed"
    old: str | None
    new: str


@dataclass(frozen=True)
class CheckerChanged(Reason):
    """doit's file checker (``check_file_uptodate``) is not the one last used."""

    kind: ClassVar[str] = "checker_changed"
    old: str
    new: str


@dataclass(frozen=True)
class AlwaysRuns(Reason):
    """The task declares no input doit could check, so doit always runs it."""

    kind: ClassVar[str] = "always_runs"


@dataclass(frozen=True)
class Unexplained(Reason):
    """doit would run the task, but none of the reasons above applies."""

    kind: ClassVar[str] = "unexplained"


@dataclass(frozen=True)
class LockMissing(Reason):
    """``--locked``: the recipe has no committed lock file."""

    kind: ClassVar[str] = "lock_missing"
    path: str


@dataclass(frozen=True)
class LockDiffers(Reason):
    """``--locked``: one field of the committed lock differs from the current build."""

    kind: ClassVar[str] = "lock_differs"
    path: str
    field: str
    committed: str | None
    built: str | None


def to_json(reason: Reason) -> dict[str, Any]:
    """``{"kind": ..., **fields}``; tuples become lists."""
    return {"kind": reason.kind, **asdict(reason)}


def _value(value: Any) -> str:
    """A recipe value as the user wrote it (JSON: lists, null, true/false)."""
    return json.dumps(value, ensure_ascii=False)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _log_change(r: EventLogChanged) -> str:
    head = f"the event log {r.path} changed"
    if None in (r.old_count, r.new_count):
        return head
    counts = f"{r.old_count:,} → {r.new_count:,} events"
    if None not in (r.old_max_seq, r.new_max_seq) and r.old_max_seq != r.new_max_seq:
        counts += f", last seq {r.old_max_seq} → {r.new_max_seq}"
    if r.new_count > r.old_count:
        return f"{head}: {_plural(r.new_count - r.old_count, 'event')} added ({counts})"
    if r.new_count < r.old_count:
        return f"{head}: {_plural(r.old_count - r.new_count, 'event')} removed ({counts})"
    if r.old_max_seq != r.new_max_seq:
        return f"{head}: events replaced ({counts})"
    return f"{head}: events edited in place (still {_plural(r.new_count, 'event')})"


def render(reason: Reason) -> str:
    """The one place reasons become words. Paths are as doit names them (root-relative)."""
    match reason:
        case NeverBuilt():
            return "never built"
        case InputReplaced(path=path):
            return (f"the event log {path} was replaced by a file with other content "
                    f"(same size and modification time)")
        case LastBuildFailed(message=message):
            return f"last build failed: {message.splitlines()[0] if message else 'no message'}"
        case GitHistoryMoved(repo=repo, new=str() as new) if new == "missing" or new.startswith("no-head"):
            return (f"{repo} is no longer a folder" if new == "missing" else
                    f"{repo} has no commit on its current branch (an orphan or new branch)")
        case GitHistoryMoved(repo=repo, old=old, new=new, rewritten=True):
            return (f"the history of {repo} was rewritten: {old[:10]} is no longer an ancestor "
                    f"of HEAD {new[:10]}")
        case GitHistoryMoved(repo=repo, commits=int() as n, branch=branch):
            return f"{n} new commit{'s' if n != 1 else ''} on {branch} in {repo}"
        case GitHistoryMoved(repo=repo, new=new):
            return f"the HEAD of {repo} moved to {new[:10]}"
        case RecipeKeyChanged(key=key, old=None, new=new):
            return f"recipe key {key} was added: {_value(new)}"
        case RecipeKeyChanged(key=key, old=old, new=None):
            return f"recipe key {key} was removed (was {_value(old)})"
        case RecipeKeyChanged(key=key, old=old, new=new):
            return f"recipe key {key} changed from {_value(old)} to {_value(new)}"
        case EventLogChanged():
            return _log_change(reason)
        case ModelFileChanged(path=path):
            return f"the embedding model file {path} changed"
        case InputChanged(path=path):
            return f"input {path} changed"
        case InputsChanged(added=added, removed=removed):
            parts = []
            if added:
                parts.append("now reads " + ", ".join(added))
            if removed:
                parts.append("no longer reads " + ", ".join(removed))
            return "its input files changed: " + "; ".join(parts)
        case InputMissing(path=path):
            return f"input {path} does not exist"
        case ModelMissing(model=model):
            return f"embedding model '{model}' not found (building says where it was looked for)"
        case UpstreamRebuilt(path=path, task=task):
            return f"input {path} will be rebuilt by {task}"
        case TargetMissing(path=path):
            return f"output {path} is missing"
        case TargetModified(path=path):
            return f"output {path} was modified since it was built"
        case VersionChanged(old=old, new=new):
            return f"built by oxidize {old or 'unknown'}, this is oxidize {new}"
        case CheckerChanged(old=old, new=new):
            return f"doit's file checker changed from {old} to {new}"
        case AlwaysRuns():
            return "has no inputs doit can check, so it always runs"
        case LockMissing(path=path):
            return f"no lock file {path}; run `doit` and commit it"
        case LockDiffers(path=path, field=field, committed=committed, built=built):
            return f"{path}: {field}: committed {committed or '(absent)'} vs built {built or '(absent)'}"
        case Unexplained():
            return "unexplained: doit would run it, but oxidize cannot say why"
    raise TypeError(f"no wording for {reason!r}")  # pragma: no cover - a new kind needs a case
