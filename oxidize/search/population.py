"""The search population of a projection: every event a user would want back from a search.

Training reads only the texts that land in pairs; a search must find everything of the
projection's kind. One row per item, with a **stable key** (the same item keeps its key when
events are appended, so an index can be compared and diffed across builds):

| pair type       | items                                                         | key                          |
|-----------------|---------------------------------------------------------------|------------------------------|
| `same_session`  | session notes of ``index.event_types`` longer than `min_chars` | the event's `seq`            |
| `co_changed`, `commit_files` | every file at HEAD where the log knows them (a scraped repository, a patina checkout); else every file of the log's commits (and of its `co_changes` table); and what each file defines | :func:`stable_key` of the path (of ``path::name``) |
| `same_commit`   | every `git.commit` with a message longer than `min_chars`      | the event's `seq` (else :func:`stable_key` of the sha, from patina's `commits` table) |
| `caller_callee` | every function of `code.function` / `code.call` events        | :func:`stable_key` of the name |

Texts are the ones the pairs step embeds for the same item, so a text already embedded for
training costs nothing here (the embedding cache is content-addressed).

A file population also holds each file's **documented definitions** (classes, functions,
methods and types with a docstring or doc comment, or a class's methods;
oxidize/gitlog/definitions.py), ``source_id`` ``path::name``: people ask about code at that
grain ("which class decides how many blank lines go before a function"), and a definition's
docstring is a sentence its file's text may have no room for. A hit on a definition
**credits its file** (:func:`credited`): a file ranks by its best item, and the search shows
which definition matched. Undocumented definitions and Markdown sections are left out: on
three repositories' question sets (docs/benchmarks.md, "File texts") they added items that
outranked the answers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


#: Pair types whose search population is files (and their definitions).
FILE_POPULATIONS = frozenset({"co_changed", "commit_files"})
#: ``source_id`` separator of a definition: ``path::name``.
DEFINED_IN = "::"


def credited(source_id: str) -> str:
    """The file a file population's item answers for: itself, or the file it is defined in."""
    return source_id.split(DEFINED_IN, 1)[0]


@dataclass(frozen=True)
class Item:
    """One searchable item. ``seq``/``timestamp`` are its (first) event's; ``source_id`` is the
    session id, the commit sha, the file path or the function name."""

    key: int
    seq: int | None
    event_type: str
    source_id: str
    timestamp: str
    text: str


def stable_key(name: str) -> int:
    """A 63-bit key from ``name`` (the first 8 bytes of its sha256, top bit cleared): the same
    file or function gets the same key in every build, whatever else the log holds."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()[:8], "big") >> 1


def search_population(log: Any, projection: Any) -> list[Item]:
    """The items of ``projection``'s pair type in ``log`` (an open EventLog), in key order
    of first appearance. Raises EventLogError where the log cannot be read."""
    pair_type = projection.training.pair_type
    min_chars = int(projection.training.min_chars)
    if pair_type == "same_session":
        return _session_notes(log, projection.index.event_types, min_chars)
    if pair_type in FILE_POPULATIONS:
        return _files(log)
    if pair_type == "same_commit":
        return _commits(log, min_chars)
    if pair_type == "caller_callee":
        return _functions(log)
    raise ValueError(f"no search population for pair type {pair_type!r}")


def _session_notes(log: Any, event_types: tuple[str, ...], min_chars: int) -> list[Item]:
    items = []
    for event in log.events(event_types):
        content = event.data.get("content")
        if isinstance(content, str) and len(content.strip()) > min_chars:
            items.append(Item(event.seq, event.seq, event.event_type, event.source_id,
                              event.timestamp, content.strip()))
    return items


def _files(log: Any) -> list[Item]:
    from oxidize.pairs.co_changed import describe_file, file_definitions, file_texts, read_commits

    first: dict[str, tuple[int | None, str]] = {}
    for files, timestamp, seq in read_commits(log):
        for path in files:
            first.setdefault(path, (seq or None, timestamp))  # seq 0: from patina's commits table
    for a, b, _count in (log.co_changes() or []) if hasattr(log, "co_changes") else []:
        for path in (a, b):
            first.setdefault(path, (None, ""))
    described = file_texts(log)  # every file at HEAD of a scraped repository, from its content
    if described:  # the log knows what is at HEAD: a deleted file is no answer to a question
        first = {**{path: at for path, at in first.items() if path in described},
                 **{path: (None, "") for path in described if path not in first}}
    items = [Item(stable_key(path), seq, "file", path, timestamp, described.get(path) or describe_file(path))
             for path, (seq, timestamp) in first.items()]
    from oxidize.gitlog.definitions import EVENT_TYPES

    seen: set[str] = set()
    for row in file_definitions(log):
        if row["kind"] == "section" or not row["documented"]:
            continue
        name = f"{row['path']}{DEFINED_IN}{row['name']}"
        if name in seen or row["path"] not in first:  # overloads keep the first; a file gone
            continue
        seen.add(name)
        seq, timestamp = first[row["path"]]
        items.append(Item(stable_key(name), seq, EVENT_TYPES.get(row["kind"], f"code.{row['kind']}"), name,
                          timestamp, row["text"]))
    return items


def _commits(log: Any, min_chars: int) -> list[Item]:
    items = []
    for event in log.events(("git.commit",)):
        message = event.data.get("message")
        if isinstance(message, str) and len(message.strip()) > min_chars:
            items.append(Item(event.seq, event.seq, event.event_type, event.source_id,
                              event.timestamp, message.strip()))
    if not items:  # no git.commit events: patina's commits table, keyed by the sha
        from oxidize.pairs.co_changed import commit_table

        items = [Item(stable_key(sha), None, "git.commit", sha, timestamp, message.strip())
                 for sha, message, _files, timestamp in commit_table(log)
                 if len(message.strip()) > min_chars]
    return items


def _functions(log: Any) -> list[Item]:
    from oxidize.pairs.caller_callee import function_text
    from oxidize.pairs.code_graph import read_call_graph

    graph = read_call_graph(log)
    return [Item(stable_key(fid), fn.first[1] if fn.first else None, "function", fid,
                 fn.first[0] if fn.first else "", function_text(fn))
            for fid, fn in graph.functions.items()]
