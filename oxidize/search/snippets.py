"""Snippets a person can read: the part of a hit's text that answers the query.

A hit's first hundred characters are often a content-free lead-in ("Quick summary for
whoever reads these notes next, …"). :func:`best_snippet` shows instead the sentence that
shares the most query words (compared by a light stem, so "stored" meets "store"); when no
sentence shares a word — a hit the dense side found by meaning — the caller's ``nearest``
picks the sentence closest to the query by embedding. :func:`mark` highlights the matched
words on a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from oxidize.search.lexical import query_terms

WIDTH = 100
_WORD = re.compile(r"[^\W_]+")
# A sentence ends at . ! ? ; or : followed by a space, or at a line break / list marker.
_BREAK = re.compile(r"(?<=[.!?;:])\s+|\s+(?=[-*•]\s)")
_SUFFIXES = ("ations", "ation", "ings", "ing", "edly", "ies", "ed", "es", "ly", "s")


def stem(word: str) -> str:
    """A light stem (``storing``/``stored``/``stores`` → ``stor``); enough to find the
    query's words in a sentence, not a linguistic analysis."""
    word = word.lower()
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def query_stems(query: str) -> set[str]:
    return {stem(term) for term in query_terms(query)}


def _matches(word: str, stems: set[str]) -> bool:
    return stem(word) in stems


def best_snippet(text: str, query: str, width: int = WIDTH,
                 nearest: Callable[[list[str]], int] | None = None) -> str:
    """At most ``width`` characters of ``text`` (whitespace folded) around its sentence that
    matches ``query`` best; ``…`` marks a cut. ``nearest(sentences)`` returns the index of
    the sentence closest to the query, asked only when no sentence shares a query word."""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    stems = query_stems(query)
    starts = [0] + [m.end() for m in _BREAK.finditer(line)]
    spans = [(s, e) for s, e in zip(starts, starts[1:] + [len(line)]) if line[s:e].strip()]
    scores = []
    for s, e in spans:
        words = [w for w in _WORD.findall(line[s:e]) if _matches(w, stems)]
        scores.append((len({stem(w) for w in words}), len(words)))
    best = max(range(len(spans)), key=lambda i: (scores[i], -i)) if spans else 0
    if spans and scores[best] == (0, 0):
        best = 0
        if nearest is not None and len(spans) > 1:
            best = nearest([line[s:e].strip() for s, e in spans])
    start = spans[best][0] if spans else 0
    sentence_end = spans[best][1] if spans else len(line)
    if sentence_end - start > width and stems:
        # A long sentence: start a little before its first matching word.
        for m in _WORD.finditer(line, start, sentence_end):
            if _matches(m.group(), stems):
                start = max(start, m.start() - width // 4)
                break
    return _cut(line, start, width)


def _cut(line: str, start: int, width: int) -> str:
    if start > 0:
        # begin on a word boundary
        while start < len(line) and start > 0 and not line[start - 1].isspace():
            start += 1
    prefix = "…" if start > 0 else ""
    room = width - len(prefix)
    body = line[start:]
    if len(body) > room:
        body = body[:room - 1].rstrip() + "…"
    return prefix + body


def mark(snippet: str, query: str, before: str = "\033[1m", after: str = "\033[0m") -> str:
    """``snippet`` with every word matching ``query`` wrapped in ``before``/``after`` (bold
    on a terminal)."""
    stems = query_stems(query)
    if not stems:
        return snippet
    return _WORD.sub(lambda m: f"{before}{m.group()}{after}" if _matches(m.group(), stems)
                     else m.group(), snippet)
