"""Any git repository as an event log: its history scraped into patina's schema.

``eventlog: {git: PATH}`` in a recipe makes the task ``R:eventlog`` write
``build/R/eventlog.sqlite``:

* ``eventlog`` — one ``git.commit`` event per commit reachable from HEAD, oldest first:
  ``source_id`` the sha, ``timestamp`` the author date, ``data`` ``{sha, message, author,
  date, files}`` (the paths the commit touched, renames as delete + add); and patina's
  ``code.function`` / ``code.call`` events of the files at HEAD (oxidize/gitlog/code.py),
  dated by the last commit that touched their file, so ``caller_callee`` works; with
  ``notes: GLOB``, each matching Markdown file's session events (oxidize/gitlog/notes.py);
* ``co_changes(file_a, file_b, count)`` — how often two files changed in one commit
  (commits of more than :data:`MAX_FILES` files left out, as patina does);
* ``file_texts(path, blob, text)`` — every text file at HEAD described from its content
  (:mod:`oxidize.gitlog.describe`); files deleted from HEAD keep their path text in the
  search population (a question about a past change may still want them);
* ``scrape(name, value)`` — the HEAD scraped, for the next run.

Incremental: a rebuild reads only the commits after the HEAD it scraped last (``git log
OLD..HEAD``) and re-describes only files whose blob changed; a rewritten history (the old
HEAD no longer an ancestor: a force-push, a rebase) is said in one line and scraped again.
The repository is only read (``git log``, ``ls-tree``, ``cat-file``): never written. The
output is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

from oxidize.errors import EventLogError

#: Commits touching more files than this are left out of ``co_changes`` (bulk moves).
MAX_FILES = 50
#: Files larger than this are not read for their text.
MAX_FILE_BYTES = 1 << 20
_FORMAT = "%x1e%H%x1f%aI%x1f%an%x1f%B%x1f"


def git(repo: Path, *args: str) -> bytes:
    """Output of ``git -C repo args``; an EventLogError with git's own words on failure."""
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    except FileNotFoundError:
        raise EventLogError("git is not installed (needed for `eventlog: {git: …}`)") from None
    if proc.returncode != 0:
        said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise EventLogError(f"{repo}: git {args[0]} failed: {said[-1] if said else proc.returncode}")
    return proc.stdout


def head_state(repo: Path) -> str:
    """What the history is now, for up-to-date checks: HEAD's sha, or why there is none."""
    if not repo.is_dir():
        return "missing"
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD"],
                          capture_output=True)
    return proc.stdout.decode().strip() if proc.returncode == 0 else f"no-head-{proc.returncode}"


def history_change(repo: Path, old: str, new: str) -> tuple[int | None, str, bool]:
    """How HEAD moved from ``old`` to ``new``: (new commits or None, branch, rewritten)."""
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)

    branch = run("rev-parse", "--abbrev-ref", "HEAD").stdout.strip() or "HEAD"
    if run("merge-base", "--is-ancestor", old, new).returncode != 0:
        return None, branch, True
    count = run("rev-list", "--count", f"{old}..{new}")
    return (int(count.stdout) if count.returncode == 0 and count.stdout.strip().isdigit() else None,
            branch, False)


def scrape(repo: Path, out: Path, say=print, notes: str | None = None) -> dict:
    """Scrape ``repo`` into ``out`` (see the module docstring); return what was done."""
    repo = Path(repo)
    check_repository(repo)
    head = head_state(repo)
    if git(repo, "rev-parse", "--is-shallow-repository").strip() == b"true":
        say(f"{repo} is a shallow clone: only the history it holds is scraped "
            f"(git fetch --unshallow for all of it)")
    folder = _folder(repo)
    if folder:
        say(f"{repo} is the folder {folder} of the repository at {_toplevel(repo)}: only the commits "
            f"that changed it and the files in it are read, with paths relative to it")
    previous = _previous(out)
    start = time.perf_counter()
    incremental = False
    if previous and previous.get("notes", None) != notes:
        previous = None  # other notes: read everything again
    if previous and previous.get("head") == head:
        return {"head": head, "new_commits": 0, "rescraped": False}
    if previous:
        incremental = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor",
                                      previous["head"], head], capture_output=True).returncode == 0
        if not incremental:
            say(f"{repo}: the history was rewritten (the scraped HEAD {previous['head'][:10]} is no "
                f"longer an ancestor of HEAD {head[:10]}): scraping it again")
    with _rewriting(out, keep=incremental) as db:
        seq = db.execute("SELECT coalesce(max(seq), 0) FROM eventlog").fetchone()[0]
        span = f"{previous['head']}..{head}" if incremental else head
        added = _commits(repo, span, db, seq, say)
        last_touched = _co_changes(db)
        described, skipped = _file_texts(repo, db, last_touched, notes, tree=head)
        if notes and not any(fnmatch.fnmatch(path, notes) for (path,) in db.execute("SELECT path FROM file_texts")):
            say(f"notes: {notes!r} matches no file at HEAD (a glob relative to {repo}, e.g. "
                f"'layer/sessions/*.md'): no session notes were read")
        db.execute("INSERT OR REPLACE INTO scrape VALUES ('head', ?)", (head,))
        db.execute("DELETE FROM scrape WHERE name = 'notes'")
        if notes:
            db.execute("INSERT INTO scrape VALUES ('notes', ?)", (notes,))
    seconds = time.perf_counter() - start
    return {"head": head, "new_commits": added, "rescraped": bool(previous) and not incremental,
            "files_described": described, "files_skipped": skipped, "seconds": round(seconds, 2)}


def check_repository(repo: Path) -> None:
    """An EventLogError naming what ``repo`` is when it is not a repository with commits:
    missing, a file, not a repository, or a branch with no commit yet."""
    if repo.is_file():
        raise EventLogError(f"{repo} is a file, not a folder; eventlog: {{git: …}} names the folder of a "
                            f"git repository (or a folder inside one)")
    if not repo.is_dir():
        raise EventLogError(f"{repo}: no such folder (eventlog: {{git: …}} names a git repository)")
    inside = subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"], capture_output=True)
    if inside.returncode != 0:
        raise EventLogError(f"{repo} is not a git repository (git rev-parse found none); "
                            f"point eventlog: {{git: …}} at a clone")
    if head_state(repo).startswith("no-head"):
        branch = subprocess.run(["git", "-C", str(repo), "symbolic-ref", "--short", "-q", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "HEAD"
        others = subprocess.run(["git", "-C", str(repo), "rev-list", "-n", "1", "--all"],
                                capture_output=True, text=True).stdout.strip()
        if others:
            raise EventLogError(f"{repo}: the branch {branch} has no commit yet (an orphan branch?) although "
                                f"the repository has history on others; check out a branch with commits")
        raise EventLogError(f"{repo}: the repository has no commits yet; commit something first")


def _folder(repo: Path) -> str:
    """Where ``repo`` sits inside its repository (``src/``), or ``""`` at its top."""
    return git(repo, "rev-parse", "--show-prefix").decode("utf-8", "backslashreplace").strip()


def _toplevel(repo: Path) -> str:
    return git(repo, "rev-parse", "--show-toplevel").decode("utf-8", "backslashreplace").strip()


def describe_files(repo: Path, out: Path) -> dict:
    """Only the texts of the files at ``repo``'s HEAD, into ``out``'s ``file_texts`` table
    (no commits, no code events): for an event log that is not scraped but lives in that
    repository (a patina checkout). Re-describes only changed blobs; a folder that is not a
    repository, or one with no commits, gives an empty table (files keep their path texts)."""
    head = head_state(repo)
    previous = _previous(out)
    if previous and previous.get("head") == head:
        return {"head": head, "files_described": 0, "files_skipped": {}}
    repository = not head.startswith(("no-head", "missing"))
    described, skipped = 0, {}
    with _rewriting(out, keep=bool(previous)) as db:
        if repository:
            described, skipped = _file_texts(repo, db, code=False, tree=head)
        else:
            db.execute("DELETE FROM file_texts")
        db.execute("INSERT OR REPLACE INTO scrape VALUES ('head', ?)", (head,))
    return {"head": head, "files_described": described, "files_skipped": skipped,
            "repository": repository}


@contextlib.contextmanager
def _rewriting(out: Path, keep: bool):
    """A connection to a temporary copy of ``out`` (``keep``) or a new file with the schema;
    committed and renamed over ``out`` when the block ends, removed when it raises."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        if keep:
            shutil.copyfile(out, tmp)
        db = sqlite3.connect(tmp)
        try:
            if not keep:
                _schema(db)
            yield db
            db.commit()
        finally:
            db.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _previous(out: Path) -> dict | None:
    if not out.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
        try:
            return dict(db.execute("SELECT name, value FROM scrape"))
        finally:
            db.close()
    except sqlite3.Error:
        return None  # unreadable: scrape afresh


def _schema(db: sqlite3.Connection) -> None:
    db.executescript("""
        CREATE TABLE eventlog (seq INTEGER PRIMARY KEY, event_type TEXT, timestamp TEXT,
                               source_id TEXT, source_file TEXT, data TEXT);
        CREATE TABLE co_changes (file_a TEXT, file_b TEXT, count INTEGER);
        CREATE TABLE file_texts (path TEXT PRIMARY KEY, blob TEXT, text TEXT);
        CREATE TABLE scrape (name TEXT PRIMARY KEY, value TEXT);
    """)
    db.execute(DEFINITIONS_TABLE)


#: What each file at HEAD defines (oxidize/gitlog/definitions.py): the file population's
#: search items beside the files themselves.
DEFINITIONS_TABLE = ("CREATE TABLE IF NOT EXISTS definitions (path TEXT, name TEXT, kind TEXT, "
                     "signature TEXT, doc TEXT, line INTEGER, members TEXT, text TEXT)")


def _commits(repo: Path, span: str, db: sqlite3.Connection, seq: int, say) -> int:
    """Stream ``git log --reverse`` of ``span`` into events; return how many were added."""
    # --relative: inside a folder of a repository, only the commits that changed it (the
    # pathspec `.`) and its files, with paths relative to it — as ls-tree lists them
    proc = subprocess.Popen(["git", "-C", str(repo), "log", "--reverse", "--no-renames", "--relative",
                             "--name-only", "-z", f"--format={_FORMAT}", span, "--", "."],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    added, buffer, last_said = 0, b"", time.perf_counter()
    rows = []
    for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
        buffer += chunk
        records = buffer.split(b"\x1e")
        buffer = records.pop()
        for record in records:
            if record.strip(b"\0\n"):
                seq += 1
                rows.append(_event(seq, record))
        if len(rows) >= 2000:
            db.executemany("INSERT INTO eventlog VALUES (?, ?, ?, ?, ?, ?)", rows)
            added += len(rows)
            rows = []
            if time.perf_counter() - last_said > 2:
                say(f"{repo}: {added:,} commits read")
                last_said = time.perf_counter()
    if buffer.strip(b"\0\n"):
        seq += 1
        rows.append(_event(seq, buffer))
    db.executemany("INSERT INTO eventlog VALUES (?, ?, ?, ?, ?, ?)", rows)
    added += len(rows)
    error = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if proc.wait() != 0:
        said = error.decode("utf-8", "replace").strip().splitlines()
        raise EventLogError(f"{repo}: git log failed: {said[-1] if said else proc.returncode}")
    return added


def _event(seq: int, record: bytes) -> tuple:
    sha, date, author, message, files = record.split(b"\x1f", 4)
    text = lambda b: b.decode("utf-8", "replace")  # noqa: E731 - non-UTF-8 messages kept readable
    # a path's bytes that are not UTF-8 kept as \xNN: two such names stay two, as ls-tree lists them
    paths = [p.decode("utf-8", "backslashreplace") for p in files.strip(b"\n\0").split(b"\0") if p.strip()]
    data = {"sha": text(sha), "message": text(message).strip(), "author": text(author),
            "date": text(date), "files": [p.strip("\n") for p in paths]}
    return (seq, "git.commit", text(date), text(sha), None, json.dumps(data, ensure_ascii=False))


def _note_events(db: sqlite3.Connection, path: str, data: bytes, date: str, seq: int) -> int:
    """A notes file's session events (oxidize/gitlog/notes.py)."""
    from oxidize.gitlog.notes import session_events

    rows = []
    for kind, timestamp, session, source, payload in session_events(path, data.decode("utf-8", "replace"), date):
        seq += 1
        rows.append((seq, kind, timestamp, session, source, json.dumps(payload, ensure_ascii=False)))
    db.executemany("INSERT INTO eventlog VALUES (?, ?, ?, ?, ?, ?)", rows)
    return seq


def _code_events(db: sqlite3.Connection, path: str, data: bytes, date: str, seq: int,
                 defined: list) -> int:
    """``code.function`` / ``code.call`` events of one file (oxidize/gitlog/code.py) and its
    types' events (``code.class``, ``code.struct``, …: oxidize/gitlog/definitions.py)."""
    from oxidize.gitlog.code import functions_and_calls

    functions, calls = functions_and_calls(path, data)
    rows = []
    for d in defined:
        if d.event_type and d.event_type != "code.function":
            seq += 1
            rows.append((seq, d.event_type, date, f"{path}::{d.name}", path, json.dumps(
                {"file": path, "name": d.name, "kind": d.kind, "definition": d.signature, "doc": d.doc,
                 "members": list(d.members), "line_number": d.line}, ensure_ascii=False)))
    for fn in functions:
        seq += 1
        rows.append((seq, "code.function", date, f"{path}::{fn['name']}", path, json.dumps(
            {"file": path, "name": fn["name"], "signature": fn["signature"], "doc": fn["doc"],
             "line_number": fn["line"]}, ensure_ascii=False)))
    for call in calls:
        seq += 1
        rows.append((seq, "code.call", date, f"{path}::{call['caller']}\u2192{call['callee']}", path,
                     json.dumps({"caller": call["caller"], "callee": call["callee"], "file": path,
                                 "call_type": "direct", "line_number": call["line"]}, ensure_ascii=False)))
    db.executemany("INSERT INTO eventlog VALUES (?, ?, ?, ?, ?, ?)", rows)
    return seq


def _co_changes(db: sqlite3.Connection) -> dict[str, str]:
    """Recount ``co_changes``; return each file's last commit date (its code events' time)."""
    counts: Counter = Counter()
    last: dict[str, str] = {}
    for date, data in db.execute("SELECT timestamp, data FROM eventlog WHERE event_type = 'git.commit' "
                                 "ORDER BY seq"):
        files = sorted(set(json.loads(data).get("files") or []))
        last.update((f, date) for f in files)
        if 2 <= len(files) <= MAX_FILES:
            counts.update(combinations(files, 2))
    db.execute("DELETE FROM co_changes")
    db.executemany("INSERT INTO co_changes VALUES (?, ?, ?)", ((a, b, n) for (a, b), n in counts.items()))
    return last


def _file_texts(repo: Path, db: sqlite3.Connection, last_touched: dict[str, str] | None = None,
                notes: str | None = None, code: bool = True, tree: str = "HEAD") -> tuple[int, dict[str, int]]:
    """Describe every text file of ``tree`` (the HEAD the scrape captured) whose blob is new,
    and (``code``) replace its code events; return (described, skipped by why). A file that
    cannot be read for its text (a submodule, over 1 MB, binary) keeps a row with its path
    text: ``file_texts`` lists every file at HEAD, which is what the search population holds."""
    from oxidize.gitlog.describe import describe_content
    from oxidize.pairs.co_changed import describe_file

    from oxidize.gitlog.definitions import definitions

    listing = git(repo, "ls-tree", "-r", "-z", "--long", tree)
    fresh = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'definitions'").fetchone() is None
    db.execute(DEFINITIONS_TABLE)
    # a scrape from before definitions were kept reads every file once more
    known = {} if fresh else dict(db.execute("SELECT path, blob FROM file_texts"))
    wanted, present, skipped = [], set(), Counter()
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, raw_path = entry.partition(b"\t")
        mode, kind, blob, size = meta.split()
        path = raw_path.decode("utf-8", "backslashreplace")  # two names differing in non-UTF-8 bytes stay two
        present.add(path)
        if known.get(path) == blob.decode():
            continue
        if kind != b"blob" or (size.isdigit() and int(size) > MAX_FILE_BYTES):
            skipped["submodule" if kind != b"blob" else "larger than 1 MB"] += 1
            db.execute("INSERT OR REPLACE INTO file_texts VALUES (?, ?, ?)", (path, blob.decode(), describe_file(path)))
            continue
        if not size.isdigit():  # ls-tree cannot read it: a blob missing from a partial clone
            skipped["missing blob (partial clone)"] += 1
            continue
        wanted.append((path, blob.decode()))
    gone = [(p,) for p in set(known) - present] + [(p,) for p, _ in wanted]
    # Without it each file's DELETE below scans every event: 3,000 files of a 50,000-commit
    # history took 36 s instead of 1 s (an older scrape gets it here too).
    db.execute("CREATE INDEX IF NOT EXISTS eventlog_source_file ON eventlog(source_file)")
    db.executemany("DELETE FROM file_texts WHERE path = ?", gone)
    db.executemany("DELETE FROM definitions WHERE path = ?", gone)
    db.executemany("DELETE FROM eventlog WHERE (event_type LIKE 'code.%' "
                   "OR event_type LIKE 'session.%') AND source_file = ?", gone)
    seq = db.execute("SELECT coalesce(max(seq), 0) FROM eventlog").fetchone()[0]
    described = 0
    if wanted:
        # A partial clone must not fetch a missing blob from its remote: read what is here.
        env = {**os.environ, "GIT_NO_LAZY_FETCH": "1"}
        proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for path, blob in wanted:
            proc.stdin.write(blob.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) < 3 or header[1] == b"missing":  # a partial clone without the blob
                skipped["missing blob (partial clone)"] += 1
                continue
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)  # the newline after the content
            if b"\0" in data[:8192]:
                skipped["binary"] += 1
                db.execute("INSERT OR REPLACE INTO file_texts VALUES (?, ?, ?)", (path, blob, describe_file(path)))
                continue
            defined = definitions(path, data)
            db.execute("INSERT OR REPLACE INTO file_texts VALUES (?, ?, ?)",
                       (path, blob, describe_content(path, data, defined=defined)))
            db.executemany("INSERT INTO definitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(path, d.name, d.kind, d.signature, d.doc, d.line, json.dumps(list(d.members)),
                             d.text(path)) for d in defined])
            date = (last_touched or {}).get(path, "")
            if code:
                seq = _code_events(db, path, data, date, seq, defined)
            if notes and fnmatch.fnmatch(path, notes):
                seq = _note_events(db, path, data, date, seq)
            described += 1
        proc.stdin.close()
        proc.stdout.close()
        proc.wait()
    return described, dict(skipped)
