"""A fake patina checkout, as patina's ``scrape`` and ``init`` leave one (``../shared/PATINA.md``).

* ``.patina/oxidize.yaml`` — patina's own recipe, byte for byte (:data:`PATINA_RECIPE`);
* ``.patina/config.toml`` — ``[embeddings] model = "e5-base-v2"``;
* ``.patina/local/data/patina.db`` — the ``eventlog`` (session notes of the five kinds patina
  indexes, ``git.commit``, ``code.function`` / ``code.call`` in patina's shapes with the same
  function names in several files, ``forge.issue`` / ``forge.pr``) and the tables patina
  materialises beside it: ``commits``, ``commit_files``, ``co_changes``, ``function_facts``,
  ``call_graph``, ``patterns`` with ``pattern_fts``, ``beliefs``;
* ``$HOME/.patina/cache/models/e5-base-v2/`` — a tiny 768-dimensional model (``tiny_model``)
  where patina keeps E5; the caller redirects ``HOME``.

Texts are made of the tiny model's words. Each session has two topic words and shares a
pool of noise words with every other session, so the raw embedding is dominated by noise a
projection can learn to ignore.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from eventlog_factory import SCHEMA, _insert
from tiny_model import WORDS, make_tiny_model

#: patina's ``.patina/oxidize.yaml`` at acb8b69, unchanged.
PATINA_RECIPE = """\
# Oxidize Recipe - Phase 2 MVP
# Build embeddings and projections from unified eventlog

version: 1
embedding_model: e5-base-v2

projections:
  # Semantic projection - observations from same session are similar
  semantic:
    layers: [768, 1024, 256]
    epochs: 10
    batch_size: 32

  # Temporal projection - files that co-change are related
  temporal:
    layers: [768, 1024, 256]
    epochs: 10
    batch_size: 32

  # Dependency projection - functions that call each other are related
  dependency:
    layers: [768, 1024, 256]
    epochs: 10
    batch_size: 32
"""

TABLES = """
CREATE TABLE commits (sha TEXT PRIMARY KEY, message TEXT, author_name TEXT, author_email TEXT,
                      timestamp TEXT, branch TEXT);
CREATE TABLE commit_files (sha TEXT, file_path TEXT, change_type TEXT, lines_added INTEGER,
                           lines_removed INTEGER, PRIMARY KEY (sha, file_path));
CREATE TABLE function_facts (file TEXT NOT NULL, name TEXT NOT NULL, takes_mut_self BOOLEAN,
                             takes_mut_params BOOLEAN, returns_result BOOLEAN, returns_option BOOLEAN,
                             is_async BOOLEAN, is_unsafe BOOLEAN, is_public BOOLEAN,
                             parameter_count INTEGER, generic_count INTEGER, parameters TEXT,
                             return_type TEXT, PRIMARY KEY (file, name));
CREATE TABLE call_graph (caller TEXT NOT NULL, callee TEXT NOT NULL, file TEXT NOT NULL,
                         call_type TEXT DEFAULT 'direct', line_number INTEGER,
                         PRIMARY KEY (caller, callee, file, line_number));
CREATE TABLE patterns (id TEXT PRIMARY KEY, title TEXT NOT NULL, layer TEXT, status TEXT,
                       purpose TEXT, tags TEXT, file_path TEXT NOT NULL);
CREATE VIRTUAL TABLE pattern_fts USING fts5(id UNINDEXED, title, content);
CREATE TABLE beliefs (id TEXT PRIMARY KEY, statement TEXT NOT NULL, persona TEXT NOT NULL,
                      facets TEXT, confidence REAL, entrenchment TEXT, status TEXT, file_path TEXT);
"""

SESSION_KINDS = ("session.decision", "session.pattern", "session.goal", "session.work",
                 "session.context")
FILES = ["src/main.rs", "src/lib.rs", "src/cache.rs", "src/model.rs", "src/log.rs", "README.md",
         "Cargo.toml", "scripts/build.sh", "docs/notes.md", "tools/plot.py"]
MODULES = ["src/cache.rs", "src/model.rs", "src/log.rs", "src/lib.rs"]


def make_patina_checkout(root: Path, home: Path, sessions: int = 24, notes: int = 8,
                         seed: int = 3, int8_weights: bool = False) -> Path:
    """Write the checkout under ``root`` and E5's stand-in under ``home``; return ``root``.
    ``int8_weights``: a model whose products oxidize runs on int8 kernels (tiny_model)."""
    rng = random.Random(seed)
    (root / ".patina/local/data").mkdir(parents=True)
    (root / ".patina/oxidize.yaml").write_text(PATINA_RECIPE)
    (root / ".patina/config.toml").write_text('[project]\nname = "fake"\n\n[embeddings]\nmodel = "e5-base-v2"\n')
    make_tiny_model(home / ".patina/cache/models/e5-base-v2", dim=768, int8_weights=int8_weights)
    topics = [WORDS[i:i + 2] for i in range(40, 40 + 2 * 12, 2)]
    noise = WORDS[:40]
    rows = []
    for s in range(sessions):
        sid = f"20250{1 + s // 10}{s % 10:02d}-session"
        rows.append(("session.started", sid, f"layer/sessions/{sid}.md", {"title": f"session {s}"}))
        for i in range(notes):
            words = list(topics[s % len(topics)]) + rng.sample(noise, 7)
            rng.shuffle(words)
            rows.append((SESSION_KINDS[i % len(SESSION_KINDS)], sid, f"layer/sessions/{sid}.md",
                         {"content": " ".join(words)}))
        rows.append(("session.decision", sid, f"layer/sessions/{sid}.md", {"content": "too short"}))
    commits = []
    for c in range(30):
        group = MODULES[c % 2 * 2: c % 2 * 2 + 2] + [rng.choice(FILES)]
        files = sorted(set(group))
        sha = f"{c + 1:07x}" + "ab" * 16 + "0"
        message = " ".join(rng.sample(WORDS[:60], 8))
        commits.append((sha, message, files))
        rows.append(("git.commit", sha, None, {"message": message, "author": "dev", "files": files}))
    functions, calls = _code(rng)
    for file, name, is_pub, params, ret in functions:
        rows.append(("code.function", f"{file}::{name}", file,
                     {"file": file, "name": name, "is_public": is_pub, "is_async": False,
                      "is_unsafe": False, "takes_mut_self": False, "takes_mut_params": False,
                      "returns_result": ret.startswith("Result"), "returns_option": False,
                      "parameter_count": len(params), "generic_count": 0, "parameters": params,
                      "return_type": ret}))
    for file, caller, callee, line in calls:
        rows.append(("code.call", f"{file}::{caller}→{callee}", file,
                     {"caller": caller, "callee": callee, "file": file, "call_type": "direct",
                      "line_number": line}))
    rows.append(("forge.issue", "7", None, {"title": "cache misses on rebuild", "body": "the cache is cold"}))
    rows.append(("forge.pr", "8", None, {"title": "fix the cache", "body": ""}))
    rows.append(("forge.issue", "9", None, {"body": "no title here"}))

    db = root / ".patina/local/data/patina.db"
    conn = sqlite3.connect(db)
    conn.executescript(SCHEMA + TABLES)
    _insert(conn, rows, 1)
    co: dict[tuple[str, str], int] = {}
    for sha, message, files in commits:
        conn.execute("INSERT INTO commits VALUES (?, ?, 'dev', 'dev@x', '2025-01-01T00:00:00Z', 'main')",
                     (sha, message))
        conn.executemany("INSERT INTO commit_files VALUES (?, ?, 'M', 1, 0)", [(sha, f) for f in files])
        for i, a in enumerate(files):
            for b in files[i + 1:]:
                co[(a, b)] = co.get((a, b), 0) + 1
    conn.execute("INSERT INTO commits VALUES ('ffffffffff', 'short', 'dev', 'x', '', 'main')")
    conn.executemany("INSERT INTO co_changes VALUES (?, ?, ?)", [(a, b, n) for (a, b), n in co.items()])
    conn.executemany("INSERT INTO function_facts (file, name, is_public, is_async, parameters, return_type) "
                     "VALUES (?, ?, ?, 0, ?, ?)",
                     [(f, n, p, json.dumps(params), r) for f, n, p, params, r in functions])
    conn.executemany("INSERT INTO call_graph VALUES (?, ?, ?, 'direct', ?)", calls)
    conn.execute("INSERT INTO patterns VALUES ('cache-first', 'Cache first', 'core', 'active', "
                 "'embed once', 'cache,build', 'layer/core/cache-first.md')")
    conn.execute("INSERT INTO pattern_fts VALUES ('cache-first', 'Cache first', 'the cache is the build')")
    conn.executemany("INSERT INTO beliefs VALUES (?, ?, 'architect', 'build', 0.875, 'high', ?, 'b.md')",
                     [("b1", "the cache is fast", "active"), ("b2", "the log is slow", "retired")])
    conn.commit()
    conn.close()
    return root


def _code(rng: random.Random):
    """Functions with the same names in several files (``new``, ``run``), and calls by bare name."""
    functions, calls = [], []
    for k, file in enumerate(MODULES):
        functions += [(file, "new", True, ["x: u32"], "Self"), (file, "run", True, ["&self"], "Result<()>"),
                      (file, f"helper_{k}", False, [], "u32")]
        calls += [(file, "run", "new", 10), (file, "run", f"helper_{k}", 11), (file, "new", "Vec::new", 3)]
    calls.append(("src/main.rs", "main", "run", 5))
    functions.append(("src/main.rs", "main", False, [], ""))
    return functions, calls
