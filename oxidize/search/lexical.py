"""The lexical side of search: SQLite FTS5 (BM25) over a projection's search population.

The full-text table ``lexical`` lives in ``index.sqlite`` beside ``items``, as an *external
content* FTS5 table over ``items.text`` (keyed by the item's stable key), so it is written in
the same temporary file as the table and renamed into place with it: the vector indexes,
the item table and the lexical index are always of one build.

Tokens: ``porter unicode61`` (words split on anything but letters and digits, folded to
lower case without diacritics, then Porter-stemmed), so "stored", "storing" and "store"
meet, and a path ``src/embed/cache.py`` is the words ``src embed cache py``.

A user's text is **never read as FTS5 syntax**. :func:`query_terms` keeps its words (letters
and digits only, lower case, common English function words and question words dropped,
at most :data:`MAX_TERMS` distinct ones), and :func:`match_expression` quotes each and joins
them with ``OR``: quotes, ``-``, ``*``, ``:``, ``NEAR``, ``AND``/``OR``, emoji or 100 KB of
text all search as plain words and never fail. BM25 (FTS5's ``bm25()``) ranks an item by
how many of the words it holds, weighted by their rarity, so an OR of all words is the
right query: a question rarely shares every word with its answer.
"""

from __future__ import annotations

import re
import sqlite3

#: The FTS5 table in ``index.sqlite``.
FTS_TABLE = "lexical"
TOKENIZER = "porter unicode61 remove_diacritics 2"
#: At most this many distinct words of a query are searched (the first ones): a pasted
#: page of text still answers in milliseconds.
MAX_TERMS = 32

_WORD = re.compile(r"[^\W_]+")
#: Words that say nothing about what is sought: English function words and the words of a
#: question's frame ("how do we …", "where is the code that …"). Chosen by meaning, not on
#: any query set.
STOPWORDS = frozenset("""
a an and are as at be been being but by can could did do does doing done for from had has
have having he her here hers him his how i if in into is it its itself me my no nor not of
off on once only or our ours out over own she should so some such than that the their them
then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself also any all just
about after again against before below between both each few more most other same during
above down further s t now ever get got make made let lets us use used using way ways
thing things something anything""".split())


class LexicalMissing(Exception):
    """The index table has no lexical part (written by an oxidize before 0.2)."""


def create(db: sqlite3.Connection) -> None:
    """Add the FTS5 table over ``items.text`` to the table being written (``items`` filled)."""
    db.execute(f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(text, content='items', "
               f"content_rowid='key', tokenize='{TOKENIZER}')")
    db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES('rebuild')")


def query_terms(text: str) -> list[str]:
    """The words of ``text`` that are searched: lower case, letters and digits, no stop words,
    distinct, in order, at most :data:`MAX_TERMS`."""
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or word in seen or (len(word) < 2 and not word.isdigit()):
            continue
        seen.add(word)
        terms.append(word)
        if len(terms) == MAX_TERMS:
            break
    return terms


def match_expression(terms: list[str]) -> str | None:
    """An FTS5 query matching any of ``terms``, each a quoted string (never an operator);
    ``None`` when there is no word to search."""
    if not terms:
        return None
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def has_lexical(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (FTS_TABLE,)).fetchone()
    return row is not None


def search(db: sqlite3.Connection, text: str, limit: int) -> list[tuple[int, float]]:
    """The ``limit`` best items for ``text`` by BM25, as ``(key, score)`` (higher is better).

    Raises:
        LexicalMissing: the table has no lexical index.
    """
    expression = match_expression(query_terms(text))
    if expression is None or limit <= 0:
        return []
    try:
        rows = db.execute(f"SELECT rowid, bm25({FTS_TABLE}) FROM {FTS_TABLE} WHERE {FTS_TABLE} "
                          f"MATCH ? ORDER BY bm25({FTS_TABLE}) LIMIT ?", (expression, limit)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise LexicalMissing(str(exc)) from None
        raise
    return [(int(key), -float(score)) for key, score in rows]
