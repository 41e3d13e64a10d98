"""History questions: the latest part of the log, which training never sees, as a query set.

A build has no human-written questions, but its log holds what people said about their
work, in their words, with the answer beside it: a commit's subject and the files it
changed, a session's goal and the session's notes. The part of the log after the held-out
cut (:mod:`oxidize.pairs.split`) is such a set of questions about the project as it is
now, asked after everything training learned from. The pairs step writes it beside the
pairs, in patina's bench format (``history_queries.json``); the index step ranks each
search of the fusion menu on it and keeps the one that wins (:mod:`oxidize.search.choice`);
``gate: base`` and the patina export compare the projection with the raw embedding on it.

What each pair type asks:

* files (``co_changed``): each later commit's **subject → the files it changed**. Left out,
  and counted in the pairs line: merges, commits by bots, dependency bumps and releases
  (a subject like "Bump x from 1 to 2" names no file's purpose), commits of more than
  :data:`MAX_FILES` files (a reformat or a move), subjects of fewer than
  :data:`MIN_WORDS` words; and, as answers, changelogs and lock files (answering every
  question, they would make any search look right; :func:`common_files`) and files deleted
  since (where the log knows the files at HEAD, only those are searched).
* ``same_session``: each later session's **goals and title → its notes** (each goal note and
  the title that has at least :data:`MIN_WORDS` words is one question). A goal note is itself
  searchable, so it is excluded from the hits of its own question (``exclude_keys``,
  oxidize's own field; patina ignores it).
* ``same_commit``: each later commit's **subject → the commits that changed ≥ ``min_count``
  of the same files** (the earlier work on that code), its own message excluded.
* ``caller_callee``: none. Its items are functions whose texts hold their names and
  docstrings, the only words a question about them could be made from here; such
  questions would measure string matching, not search.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

HISTORY_FILE = "history_queries.json"
#: Commits changing more files than this ask no question (a reformat, a move, a rename sweep).
MAX_FILES = 10
#: A subject of fewer words says nothing a search can use ("wip", "fix tests").
MIN_WORDS = 3
#: A changelog or a lock file is never an answer: most changes touch it, so it would answer
#: every question and make any search look right. Known by its name …
BOOKKEEPING = re.compile(r"(^|/)((change(s|log)|history|news|release[-_ ]?notes|authors|contributors)"
                         r"(\.(md|rst|txt|markdown|adoc))?|[^/]*\.lock|package-lock\.json|pnpm-lock\.yaml)$", re.I)
#: … or by touching more than this share of all commits (on click, httpx and patina the
#: busiest source file is touched by 10 % of the commits, click's changelog by 19 %) …
COMMON_SHARE = 0.25
#: … provided it was touched this often at all (a tiny log has no such files).
COMMON_MIN_COMMITS = 10
#: At most this many questions (the latest): scoring the menu stays under a second or two.
MAX_QUESTIONS = 500

_BOT = re.compile(r"\[bot\]|dependabot|renovate|pre-commit-ci|github-actions|greenkeeper", re.I)
_BUMP = re.compile(r"^(merge\b|(chore|build|fix)\((deps|deps-dev)\)|(bump|update|upgrade)\s+\S+\s+(from|to|requirement)\b"
                   r"|bump\s+(version|to)\b|release\s+v?\d|(version|v)\s*\d+(\.\d+)+\b|prepare\s+(release|v?\d))",
                   re.I)


@dataclass
class History:
    """The questions of one projection and what was left out, by why."""

    kind: str                       # what the questions ask: "commit subject → files", …
    queries: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    note: str = ""                  # why there are none, when there are none

    def query_set(self, name: str) -> dict[str, Any]:
        """The bench-format object written to ``history_queries.json`` (an id that repeats —
        a log holding one commit twice — gets ``-2``, ``-3`` …: ids are unique in a set)."""
        queries, seen = [], Counter()
        for query in self.queries[-MAX_QUESTIONS:]:
            seen[query["id"]] += 1
            queries.append(query if seen[query["id"]] == 1 else {**query, "id": f"{query['id']}-{seen[query['id']]}"})
        return {"name": name, "kind": self.kind, "queries": queries,
                "left_out": dict(sorted(self.skipped.items())),
                **({"latest_only": len(self.queries)} if len(self.queries) > len(queries) else {}),
                **({"note": self.note} if self.note else {})}

    def line(self) -> str:
        """The pairs line's clause: how many questions and why others were left out."""
        if not self.queries:
            return f"no history questions ({self.note or 'none after the held-out cut'})"
        left = ", ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        kept = min(len(self.queries), MAX_QUESTIONS)
        return (f"{kept:,} history questions ({self.kind})" + (f"; left out {left}" if left else ""))


def subject(message: str) -> str:
    """A commit message's first line, stripped."""
    return message.strip().split("\n", 1)[0].strip()


def usable_subject(message: Any, author: Any) -> str | None:
    """Why a commit asks no question (a key of ``History.skipped``), or ``None``."""
    text = subject(message) if isinstance(message, str) else ""
    if isinstance(author, str) and _BOT.search(author):
        return "by bots"
    if _BUMP.match(text):
        return "merges, bumps or releases"
    if len(text.split()) < MIN_WORDS:
        return f"subjects under {MIN_WORDS} words"
    return None


def common_files(file_lists: Iterable[list[str]]) -> set[str]:
    """The changelogs and lock files of the commits (by name, :data:`BOOKKEEPING`) and the
    files more than :data:`COMMON_SHARE` of them touch (at least :data:`COMMON_MIN_COMMITS`
    times): never an answer."""
    counts: Counter = Counter()
    n = 0
    for files in file_lists:
        n += 1
        counts.update(set(files))
    return {f for f, c in counts.items()
            if BOOKKEEPING.search(f) or (c >= COMMON_MIN_COMMITS and c > COMMON_SHARE * n)}


def commit_file_questions(later: list[dict], common: set[str], present: set[str] | None = None) -> History:
    """Each later commit's subject → the files it changed (see the module docstring).

    ``later``: ``{sha, message, author, files}`` of the commits after the cut, oldest first;
    ``present``: the files at HEAD where the log knows them (only those are searched, so only
    those answer)."""
    history = History("later commit subjects → the files they changed")
    for commit in later:
        files = list(dict.fromkeys(f for f in commit.get("files") or () if isinstance(f, str) and f))
        why = usable_subject(commit.get("message"), commit.get("author"))
        if why is None and not files:
            why = "merges, bumps or releases"  # a merge lists no file of its own
        if why is None and len(files) > MAX_FILES:
            why = f"over {MAX_FILES} files"
        answers = [f for f in files if f not in common]
        if why is None and not answers:
            why = "touching only files most commits touch"
        if present is not None:
            answers = [f for f in answers if f in present]
            if why is None and not answers:
                why = "touching only files deleted since"
        if why is not None:
            history.skipped[why] += 1
            continue
        history.queries.append({"id": str(commit["sha"])[:12] or f"c{len(history.queries)}",
                                "query": subject(commit["message"]), "relevant_docs": answers})
    return history


def session_questions(log: Any, held_sessions: list[str]) -> History:
    """Each held-out session's goals and title → the session (see the module docstring)."""
    history = History("later session goals → their notes")
    wanted = set(held_sessions)
    asked: dict[str, list[tuple[str, list[int]]]] = {}
    for event in log.events(("session.started", "session.goal")):
        if event.source_id not in wanted:
            continue
        text = event.data.get("content" if event.event_type == "session.goal" else "title")
        if isinstance(text, str) and text.strip():
            # a goal note is itself searchable: its own question must not find it
            exclude = [event.seq] if event.event_type == "session.goal" else []
            asked.setdefault(event.source_id, []).append((" ".join(text.split()), exclude))
    for session in held_sessions:
        if session not in asked:
            history.skipped["sessions with no goal or title"] += 1
        seen: set[str] = set()
        for number, (text, exclude) in enumerate(asked.get(session, ()), 1):
            if len(text.split()) < MIN_WORDS:
                history.skipped[f"goals and titles under {MIN_WORDS} words"] += 1
            elif text not in seen:
                seen.add(text)
                history.queries.append({"id": f"{session}#{number}", "query": text, "relevant_docs": [session],
                                        **({"exclude_keys": exclude} if exclude else {})})
    if not held_sessions:
        history.note = "no session held out"
    return history
