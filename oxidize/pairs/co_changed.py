"""``co_changed`` pairs: files changed together are similar.

Formula (what the triplets teach): for an anchor file ``a``, a positive ``p`` changed
together with ``a`` in at least ``training.min_count`` commits and a negative ``n`` never
changed together with ``a``, the projection learns ``d(a, p) + margin < d(a, n)``. Files
that keep changing together implement one feature; the signal is free and label-less, as
``same_session`` is for notes. This is patina's ``temporal`` projection.

Where the counts come from:
    the ``co_changes(file_a, file_b, count)`` table when the log has one with rows (patina's
    ``scrape`` writes it, leaving out commits that touch more than 50 files). Otherwise
    they are computed the same way from ``git.commit`` events' ``data.files``: each commit
    touching 2 to :data:`MAX_COMMIT_FILES` distinct files adds one to each of its file
    pairs. (A 300-file reformat says nothing about which files belong together.) A pair
    stored in both directions counts once, with the larger count.

Related, positive, negative:
    two files are *related* when they changed together at least once, *positive* when at
    least ``training.min_count`` times. A negative for anchor ``a`` is a file with no
    co-change with ``a`` at all; files changed together only once or twice (below
    ``min_count``) are neither. **Default ``min_count: 2``**, from patina's own log
    (patina-dev.db, 754 commits): count ≥ 1 gives 14,527 pairs over 1,106 files, most of
    them one-off passengers of a single 30–50-file commit (every such commit alone adds
    ~1,000 pairs); count ≥ 2 keeps 2,237 pairs over 442 files that changed together
    *again* — the repeat is what separates "belong together" from "were in the same
    big commit"; count ≥ 3 drops to 214 files, too few to train a 1024-wide layer.

Texts:
    a file is embedded as a description built from its path alone (the log has no file
    contents): ``src/commands/init.rs`` → ``"file src/commands/init.rs: commands init, rust
    source"`` — the path, then the words of its directories and name (``_``, ``-``, ``.`` and
    camelCase split; ``src`` dropped; ``mod`` → ``module``), then what the extension or the
    well-known name means (:func:`describe_file`). The texts table holds every file with at
    least one positive, **sorted by path**, so the table and the fallback give the same
    output and ``training.holdout`` never changes ``texts.jsonl``.

Held-out split (:mod:`oxidize.pairs.split`):
    each file is its own group, dated by its **first** ``git.commit`` (lowest ``seq``):
    the files born latest are held out. Held-out queries are held-out files, relevant =
    their co-changed held-out files (count ≥ ``min_count``). A file the log's commits
    never mention (only in the table) trains. With ``holdout: 0`` no ``git.commit`` event
    is read when the table is there.

Sampling: :mod:`oxidize.pairs.graph` (uniform anchor over training files with a positive
and a possible negative; uniform positive; uniform negative among never-co-changed
files). ``training.event_types`` and ``min_chars`` are not used.

Relations: ``same_commit`` pairs the *commit messages* of commits that share files;
``same_session`` pairs session notes.
"""

from __future__ import annotations

import re
from typing import Any

from oxidize.errors import EventLogError
from oxidize.pairs import PairSet

PAIR_TYPE = "co_changed"
#: Commits touching more files than this add no co-change pairs (as in patina).
MAX_COMMIT_FILES = 50

#: What a file name ending says, for the file's description.
EXTENSIONS = {
    "rs": "rust source", "py": "python source", "go": "go source", "c": "C source", "h": "C header",
    "cc": "C++ source", "cpp": "C++ source", "hpp": "C++ header", "java": "java source",
    "kt": "kotlin source", "swift": "swift source", "rb": "ruby source", "js": "javascript source",
    "mjs": "javascript source", "ts": "typescript source", "tsx": "typescript react component",
    "jsx": "javascript react component", "sh": "shell script", "bash": "shell script", "zsh": "shell script",
    "md": "markdown document", "rst": "restructured text document", "txt": "text file",
    "toml": "TOML configuration", "yaml": "YAML configuration", "yml": "YAML configuration",
    "json": "JSON data", "jsonl": "JSON lines data", "xml": "XML data", "csv": "CSV data",
    "sql": "SQL script", "db": "database file", "sqlite": "database file", "lock": "lock file",
    "tmpl": "template", "j2": "template", "html": "HTML page", "css": "stylesheet", "scss": "stylesheet",
    "nix": "nix expression", "proto": "protocol buffer definition", "ipynb": "jupyter notebook",
    "png": "image", "svg": "vector image", "jpg": "image", "gz": "compressed archive", "zip": "archive",
}
#: Well-known file names (lower case) and what they are.
SPECIAL_NAMES = {
    "cargo.toml": "rust package manifest", "cargo.lock": "rust dependency lock file",
    "pyproject.toml": "python project configuration", "setup.py": "python package setup",
    "package.json": "node package manifest", "go.mod": "go module definition",
    "readme.md": "readme, project overview", "readme": "readme, project overview",
    "changelog.md": "changelog", "license": "license text", "makefile": "makefile build rules",
    "dockerfile": "docker image build file", ".gitignore": "git ignore rules",
    "claude.md": "instructions for the claude assistant", "main.rs": "rust program entry point",
    "lib.rs": "rust library root", "mod.rs": "rust module root", "__init__.py": "python package init",
}
#: Directory names that say nothing about what a file is about.
_NOISE_DIRS = frozenset({"src", ".", ""})
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _words(part: str) -> list[str]:
    return [w.lower() for chunk in _WORD_SPLIT.split(part) for w in _CAMEL.split(chunk) if w]


def describe_file(path: str) -> str:
    """A text a sentence model can use for a file known only by its path.

    ``src/commands/init.rs`` → ``"file src/commands/init.rs: commands init, rust source"``;
    ``src/commands/scrape/mod.rs`` → ``"… : commands scrape module, rust module root"``.
    """
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    name = parts[-1] if parts else path
    dirs = [p for p in parts[:-1] if p.lower() not in _NOISE_DIRS]
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    if not stem:  # ".gitignore"
        stem, ext = name, ""
    words: list[str] = []
    for part in dirs:
        words += _words(part)
    stem_words = ["module"] if stem.lower() == "mod" else _words(stem)
    for word in stem_words:
        if not words or words[-1] != word:  # scrape/scrape.rs → "scrape" once
            words.append(word)
    kind = SPECIAL_NAMES.get(name.lower()) or EXTENSIONS.get(ext.lower()) or (
        f"{ext.lower()} file" if ext else "file")
    about = " ".join(words)
    return f"file {path}: {about}, {kind}" if about else f"file {path}: {kind}"


def file_texts(log) -> dict[str, str]:
    """Texts of files described from their content, where the log has them (the
    ``file_texts`` table of a log scraped from git: oxidize/gitlog/), by path; ``{}`` else —
    a file then keeps its path text (:func:`describe_file`). A log that is not scraped but
    lives in a repository (a patina checkout) has them beside it: ``log.described_files``,
    the ``file_texts.sqlite`` the build wrote (:func:`oxidize.gitlog.scrape.describe_files`)."""
    rows = log.table("file_texts") if hasattr(log, "table") else None
    beside = getattr(log, "described_files", None)
    if not rows and beside is not None:
        import sqlite3

        db = sqlite3.connect(f"file:{beside}?mode=ro", uri=True)
        try:
            rows = [{"path": p, "text": t} for p, t in db.execute("SELECT path, text FROM file_texts")]
        finally:
            db.close()
    return {r["path"]: r["text"] for r in rows or ()
            if isinstance(r.get("path"), str) and isinstance(r.get("text"), str) and r["text"]}


def file_definitions(log) -> list[dict]:
    """What each file at HEAD defines, where the log knows it (the ``definitions`` table of a
    scraped repository, or of the described files beside a patina checkout's log:
    oxidize/gitlog/scrape.py), as ``{path, name, kind, text, documented}`` rows
    (``documented``: it has a doc comment, or methods); ``[]`` else."""
    rows = log.table("definitions") if hasattr(log, "table") else None
    beside = getattr(log, "described_files", None)
    if not rows and beside is not None:
        import sqlite3

        db = sqlite3.connect(f"file:{beside}?mode=ro", uri=True)
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'definitions'").fetchone():
                rows = [{"path": p, "name": n, "kind": k, "doc": d, "members": m, "text": x}
                        for p, n, k, d, m, x in db.execute("SELECT path, name, kind, doc, members, text "
                                                           "FROM definitions ORDER BY rowid")]
        finally:
            db.close()
    return [{**r, "documented": bool(r.get("doc")) or r.get("members") not in (None, "", "[]")}
            for r in rows or () if all(isinstance(r.get(k), str) and r[k] for k in ("path", "name", "kind", "text"))]


def _commit_files(data: dict) -> list[str] | None:
    files = data.get("files")
    if not isinstance(files, list):
        return None
    return list(dict.fromkeys(f for f in files if isinstance(f, str) and f))


def commit_records(log: Any) -> list[dict]:
    """``{files, timestamp, seq, sha, message, author}`` of every ``git.commit`` event with a
    file list (``files`` distinct), in ``seq`` order; without such events, of every row of
    patina's ``commits`` / ``commit_files`` tables (:func:`commit_table`, ``seq`` 0: not an
    event, no author)."""
    commits = []
    for event in log.events(("git.commit",)):
        files = _commit_files(event.data)
        if files is not None:
            commits.append({"files": files, "timestamp": event.timestamp, "seq": event.seq,
                            "sha": event.source_id, "message": event.data.get("message"),
                            "author": event.data.get("author")})
    if not commits:
        commits = [{"files": files, "timestamp": timestamp, "seq": 0, "sha": sha, "message": message,
                    "author": None} for sha, message, files, timestamp in commit_table(log)]
    return commits


def read_commits(log: Any) -> list[tuple[list[str], str, int]]:
    """``(distinct files, timestamp, seq)`` of each of :func:`commit_records`."""
    return [(c["files"], c["timestamp"], c["seq"]) for c in commit_records(log)]


def commit_table(log: Any) -> list[tuple[str, str, list[str], str]]:
    """``(sha, message, distinct files, timestamp)`` from patina's materialised ``commits``
    (sha, message, timestamp) and ``commit_files`` (sha, file_path) tables, oldest first —
    what patina keeps when its log has no ``git.commit`` events; ``[]`` without the tables."""
    table = getattr(log, "table", None)
    rows = table("commits") if table else None
    file_rows = table("commit_files") if rows else None
    if not rows or not file_rows:
        return []
    files: dict[str, dict[str, None]] = {}
    for row in file_rows:
        sha, path = row.get("sha"), row.get("file_path")
        if isinstance(sha, str) and isinstance(path, str) and path:
            files.setdefault(sha, {})[path] = None
    out = []
    for row in rows:
        sha = row.get("sha")
        if isinstance(sha, str) and sha in files:
            message = row.get("message")
            out.append((sha, message if isinstance(message, str) else "", list(files[sha]),
                        str(row.get("timestamp") or "")))
    out.sort(key=lambda commit: commit[3])  # stable: rowid order within a timestamp
    return out


def count_from_commits(commits: list[tuple[list[str], str, int]]) -> list[tuple[str, str, int]]:
    """Co-change counts computed like patina's ``co_changes`` table, sorted ``(a, b, n)`` with a < b."""
    import numpy as np

    ids: dict[str, int] = {}
    chunks = []
    triu: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for files, _, _ in commits:
        k = len(files)
        if k < 2 or k > MAX_COMMIT_FILES:
            continue
        f = np.fromiter((ids.setdefault(name, len(ids)) for name in files), dtype=np.int64, count=k)
        if k not in triu:
            triu[k] = np.triu_indices(k, 1)
        i, j = triu[k]
        chunks.append(np.stack([f[i], f[j]], axis=1))
    if not chunks:
        return []
    pairs = np.sort(np.concatenate(chunks), axis=1)
    codes, counts = np.unique(pairs[:, 0] * len(ids) + pairs[:, 1], return_counts=True)
    names = list(ids)
    rows = [(names[a], names[b], int(n)) for a, b, n in
            zip((codes // len(ids)).tolist(), (codes % len(ids)).tolist(), counts.tolist())]
    return sorted((a, b, n) if a < b else (b, a, n) for a, b, n in rows)


def generate(log: Any, training: Any, label: str = "") -> PairSet:
    """Build the ``co_changed`` pair set of one projection (see the module docstring).

    Args:
        log: an open :class:`~oxidize.eventlog.EventLog`.
        training: the projection's ``TrainingConfig``; reads ``min_count``, ``holdout``,
            ``pairs`` and ``seed``.
        label: prefix of the summary line printed to stdout.

    Raises:
        EventLogError: no co-change counts at all, none reaching ``min_count``, or no file
            left that can be an anchor.
    """
    import numpy as np

    from oxidize.pairs.graph import graph_pairset
    from oxidize.pairs.history import History
    from oxidize.pairs.split import heldout_groups, holdout_fraction

    min_count = int(getattr(training, "min_count", 2))
    holdout = holdout_fraction(training)
    commits = commit_records(log)
    if commits:
        table = count_from_commits([(c["files"], c["timestamp"], c["seq"]) for c in commits])
        source = "git.commit files" if any(c["seq"] for c in commits) else "commits and commit_files tables"
    else:
        table = log.co_changes() if hasattr(log, "co_changes") else None
        source = "co_changes table"
    if not table:
        raise EventLogError(
            f"{log.path}: no co-changes for co_changed pairs: the log has no `co_changes` table "
            f"with rows and its {len(commits):,} git.commit event(s) with data.files have no two "
            f"files changed together (commits of more than {MAX_COMMIT_FILES} files are skipped)")

    counts = _undirected(table)
    strong = [key for key, n in counts.items() if n >= min_count]
    if not strong:
        top = max(counts.values(), default=0)
        raise EventLogError(f"{log.path}: no file pair changed together at least {min_count} times "
                            f"(training.min_count; the most is {top}, from the {source}); "
                            f"lower training.min_count")
    files = sorted({f for pair in strong for f in pair})
    index = {f: i for i, f in enumerate(files)}

    first_events: list = [None] * len(files)
    if holdout > 0:
        for commit in commits:  # in seq order: the first one wins
            for f in commit["files"]:
                i = index.get(f)
                if i is not None and first_events[i] is None:
                    first_events[i] = (commit["timestamp"], commit["seq"])
    heldout = heldout_groups(first_events, holdout, log.path)

    # The history cut: the latest commits, as many as training.holdout's share of them, are
    # left out of the counts training sees and ask the history questions instead
    # (oxidize.pairs.history); a later commit adds nothing to training. (The held-out files
    # above are the file → file test; a file born after the cut has no training edge either.)
    described = file_texts(log)
    train_counts, history = counts, History("later commit subjects → the files they changed")
    later = heldout_groups([(c["timestamp"], c["seq"]) for c in commits], holdout, log.path) \
        if commits else np.zeros(0, dtype=bool)
    if not commits:
        history.note = "the log has only a co_changes table, no commits to ask from"
    elif later.any():
        train_counts = _undirected(count_from_commits([(c["files"], c["timestamp"], c["seq"])
                                                       for c, late in zip(commits, later.tolist()) if not late]))
        history = _history([c for c, late in zip(commits, later.tolist()) if late], commits,
                           set(described) or None)
    else:
        history.note = "nothing held out: training.holdout is 0"

    def edges(pairs) -> np.ndarray:
        return np.array([(index[a], index[b]) for a, b in pairs if a in index and b in index],
                        dtype=np.int64).reshape(-1, 2)

    positive = edges(key for key, n in train_counts.items() if n >= min_count)
    related = edges(key for key, n in train_counts.items() if n > 0)
    texts = [described.get(f) or describe_file(f) for f in files]
    return graph_pairset(
        log, training, label, pair_type=PAIR_TYPE, noun="files", texts=texts,
        positive=positive, related=related, first_events=first_events, heldout=heldout,
        eval_positive=edges(strong), history=history,
        summary={"source": source, "min_count": min_count, "files": len(files)},
        detail=f" ({source}, min_count {min_count})")


def _undirected(table) -> dict[tuple[str, str], int]:
    """Counts by unordered pair; a pair stored both ways counts once, with the larger count."""
    counts: dict[tuple[str, str], int] = {}
    for a, b, n in table:
        if a == b:
            continue
        key = (a, b) if a < b else (b, a)
        counts[key] = max(counts.get(key, 0), int(n))
    return counts


def _history(later: list[dict], commits: list[dict], present: set[str] | None):
    from oxidize.pairs.history import commit_file_questions, common_files

    return commit_file_questions(later, common_files(c["files"] for c in commits), present)
