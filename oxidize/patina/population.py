"""What patina indexes for each projection name, keyed and worded as patina does.

patina's ``scry`` turns an index key back into a row by the key's range, so an index made for
patina must use exactly its keys, and (for the vectors to mean what patina's own build would
make) exactly its texts. The queries below are patina's (``src/commands/oxidize/mod.rs``,
``dependency.rs``, ``temporal.rs`` at ``acb8b69``), run through a read-only connection:

| name         | key                          | rows                                                  |
|--------------|------------------------------|-------------------------------------------------------|
| `semantic`   | `seq`                        | session decision/pattern/goal/work/context, content > 20 chars |
|              | 1,000,000,000 + rowid        | `function_facts` with a name                           |
|              | 2,000,000,000 + rowid        | `patterns` (⋈ `pattern_fts`)                           |
|              | 3,000,000,000 + rowid        | `commits` with a message > 30 chars                    |
|              | 4,000,000,000 + rowid        | `beliefs` with status `active`                         |
|              | 5,000,000,000 + seq          | `forge.issue` / `forge.pr` events with a title         |
| `temporal`   | position in the sorted files of `co_changes`  | every file of `co_changes`            |
| `dependency` | position in the sorted names of `call_graph`  | every caller and callee of `call_graph` |

Where patina's own query would fail on a missing table (a log without ``function_facts``),
the part is left out and counted as absent; ``temporal`` and ``dependency`` cannot be keyed
at all without their table, and say so.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from oxidize.engine.layout import PATINA_NAMES
from oxidize.errors import EventLogError

CODE_OFFSET = 1_000_000_000
PATTERN_OFFSET = 2_000_000_000
COMMIT_OFFSET = 3_000_000_000
BELIEF_OFFSET = 4_000_000_000
FORGE_OFFSET = 5_000_000_000

SESSION_TYPES = ("session.decision", "session.pattern", "session.goal", "session.work",
                 "session.context")
#: patina's ``MAX_FUNCTION_NAME_LEN`` (bytes of UTF-8) in ``function_to_text``.
MAX_FUNCTION_NAME_BYTES = 200
#: patina's ``temporal::file_to_text`` kinds, by extension.
FILE_KINDS = {"rs": "Rust source", "ts": "TypeScript source", "js": "JavaScript source",
              "py": "Python source", "go": "Go source", "md": "Markdown document",
              "yaml": "YAML config", "yml": "YAML config", "toml": "TOML config",
              "json": "JSON data", "sh": "Shell script"}


@dataclass
class Population:
    """patina's index population for one name: ``keys[i]`` is the key of ``texts[i]``;
    ``parts`` counts rows per part, ``absent`` names the tables the database lacks."""

    keys: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    parts: dict[str, int] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    #: temporal and dependency: the file path or call-graph name of each row
    names: list[str] = field(default_factory=list)

    def add(self, part: str, rows) -> None:
        count = 0
        for key, text in rows:
            self.keys.append(int(key))
            self.texts.append(text)
            count += 1
        self.parts[part] = count

    def summary(self) -> str:
        """``1,234 session notes + 0 functions …`` for the export line."""
        said = " + ".join(f"{n:,} {part}" for part, n in self.parts.items())
        return said + (f" (no {', '.join(self.absent)} table)" if self.absent else "")


def read_population(db_path: Path | str, name: str) -> Population:
    """patina's population for projection ``name`` (one of :data:`PATINA_NAMES`) in ``db_path``.

    Raises:
        EventLogError: the database cannot be opened or read, or lacks the table that keys
            ``temporal`` (``co_changes``) or ``dependency`` (``call_graph``).
    """
    if name not in PATINA_NAMES:
        raise ValueError(f"patina has no index for projection {name!r}")
    path = Path(db_path)
    uri = "file:" + quote(str(path.resolve()), safe="/") + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as err:
        raise EventLogError(f"cannot open {path} read-only: {err}") from None
    try:
        conn.execute("BEGIN")  # one snapshot for every part
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        population = Population()
        if name == "semantic":
            _semantic(conn, tables, population)
        elif name == "temporal":
            _require(path, tables, "co_changes", name, "patina scrape git")
            population.names = [str(f) for (f,) in conn.execute(
                "SELECT DISTINCT file_a FROM co_changes UNION SELECT DISTINCT file_b FROM co_changes ORDER BY 1")]
            population.add("files", ((i, file_text(f)) for i, f in enumerate(population.names)))
        else:
            _require(path, tables, "call_graph", name, "patina scrape code")
            population.names = [str(f) for (f,) in conn.execute(
                "SELECT DISTINCT caller FROM call_graph UNION SELECT DISTINCT callee FROM call_graph ORDER BY 1")]
            population.add("functions", ((i, function_text(f)) for i, f in enumerate(population.names)))
        return population
    except sqlite3.Error as err:
        raise EventLogError(f"{path}: cannot read patina's {name} rows: {err}") from None
    finally:
        conn.close()


def _require(path: Path, tables: set[str], table: str, name: str, how: str) -> None:
    if table not in tables:
        raise EventLogError(f"{path} has no `{table}` table, which keys patina's {name} index "
                            f"(patina's scry finds a {name} hit by its position there); "
                            f"`{how}` writes it")


def _semantic(conn: sqlite3.Connection, tables: set[str], population: Population) -> None:
    marks = ", ".join("?" * len(SESSION_TYPES))
    population.add("session notes", conn.execute(
        f"SELECT seq, json_extract(data, '$.content') AS content FROM eventlog "
        f"WHERE event_type IN ({marks}) AND content IS NOT NULL AND length(content) > 20 "
        f"ORDER BY seq", SESSION_TYPES))
    for table, part, offset, sql, text, patina_needs_it in _SEMANTIC_TABLES:
        if table in tables:
            population.add(part, ((offset + rowid, text(*rest)) for rowid, *rest in conn.execute(sql)))
        elif patina_needs_it:
            population.absent.append(table)
    population.add("forge items", (
        (FORGE_OFFSET + seq, _forge_text(event_type, number, title, body))
        for seq, event_type, number, title, body in conn.execute(
            "SELECT seq, event_type, source_id, json_extract(data, '$.title') AS title, "
            "json_extract(data, '$.body') AS body FROM eventlog "
            "WHERE event_type IN ('forge.issue', 'forge.pr') AND title IS NOT NULL")))


def _commit_text(sha, message) -> str:
    return f"Commit {sha[:7]}: {message}"


def _function_fact_text(file, name, parameters, return_type, is_public, is_async) -> str:
    text = f"Function `{name}` in file `{file}`"
    if is_public:
        text += ", public"
    if is_async:
        text += ", async"
    if parameters:
        text += f", parameters: {parameters}"
    if return_type:
        text += f", returns: {return_type}"
    return text


def _pattern_text(pattern_id, title, purpose, content, tags, file_path) -> str:
    text = f"Pattern: {title} - {pattern_id}"
    if purpose is not None:
        text += f". Purpose: {purpose}"
    if tags:
        text += f". Tags: {tags}"
    if content is not None:
        text += f". Content: {str(content)[:500]}"
    return text + f". File: {file_path}"


def _belief_text(belief_id, statement, persona, facets, confidence, entrenchment) -> str:
    text = f"Belief: {belief_id} - {statement}. Persona: {persona}"
    if facets:
        text += f". Facets: {facets}"
    return text + f". Confidence: {float(confidence):.2f}, Entrenchment: {entrenchment}"


def _forge_text(event_type: str, number, title, body) -> str:
    kind = "PR" if event_type == "forge.pr" else "Issue"
    head = f"{kind} #{number}: {title}"
    return f"{head}\n{body}" if body else head


#: The semantic parts read from patina's materialised tables: (table, part, key offset, SQL
#: whose first column is the rowid, text of the other columns, whether patina's own query
#: fails without the table — such a table is named as absent).
_SEMANTIC_TABLES = (
    ("function_facts", "functions", CODE_OFFSET,
     "SELECT rowid, file, name, parameters, return_type, is_public, is_async FROM function_facts "
     "WHERE name != ''", _function_fact_text, True),
    ("patterns", "patterns", PATTERN_OFFSET,
     "SELECT p.rowid, p.id, p.title, p.purpose, f.content, p.tags, p.file_path "
     "FROM patterns p LEFT JOIN pattern_fts f ON p.id = f.id", _pattern_text, False),
    ("commits", "commits", COMMIT_OFFSET,
     "SELECT rowid, sha, message FROM commits WHERE message IS NOT NULL AND length(message) > 30 "
     "ORDER BY rowid", _commit_text, True),
    ("beliefs", "beliefs", BELIEF_OFFSET,
     "SELECT rowid, id, statement, persona, facets, confidence, entrenchment FROM beliefs "
     "WHERE status = 'active'", _belief_text, False),
)


def file_text(path: str) -> str:
    """patina's text of a file: ``File: src/main.rs (Rust source)``."""
    extension = path.rsplit(".", 1)[-1]
    return f"File: {path} ({FILE_KINDS.get(extension, 'file')})"


def function_text(name: str) -> str:
    """patina's text of a call-graph name: ``Function: commands::init (Rust function)``; names
    longer than 200 UTF-8 bytes are cut at a character boundary, as patina does."""
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_FUNCTION_NAME_BYTES:
        name = raw[:MAX_FUNCTION_NAME_BYTES].decode("utf-8", "ignore")
    if "::" in name:
        kind = "Rust function"
    elif "." in name:
        kind = "method call"
    elif name[:1].isupper():
        kind = "type or constructor"
    else:
        kind = "function"
    return f"Function: {name} ({kind})"
