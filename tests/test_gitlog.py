"""Any git repository as an event log (oxidize/gitlog/): file texts from content, the scrape
as a build target that follows HEAD, incrementally, and never writes to the repository."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_model import make_tiny_model

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

FILES = {
    "src/fusion.py": '"""Reciprocal rank fusion of ranked lists."""\n\ndef fuse(a, b):\n    return rank(a)\n\nclass Fuser:\n    pass\n',
    "src/rank.py": '"""Ranking helpers."""\n\ndef rank(xs):\n    return sorted(xs)\n',
    "core/store.rs": "//! Where vectors are stored on disk.\npub struct Store;\npub fn open() {}\n",
    "core/index.rs": "//! The nearest-neighbour index.\npub fn search() {}\n",
    "docs/guide.md": "# Guide\n\nHow to build.\n\n## Install\n",
    "docs/faq.md": "# FAQ\n\n## Why is the cache slow\n",
    "cmd/main.go": "// Package main starts the server.\npackage main\nfunc main() {}\n",
    "cmd/serve.go": "// Serving requests.\npackage main\nfunc serve() {}\n",
}
PAIRS = [("src/fusion.py", "src/rank.py"), ("core/store.rs", "core/index.rs"),
         ("docs/guide.md", "docs/faq.md"), ("cmd/main.go", "cmd/serve.go")]
RECIPE = """\
version: 1
embedding_model: tiny
model_dir: ../../model
eventlog: {git: ../../repo}
projections:
  temporal:
    layers: [null, 16, 8]
    epochs: 1
    batch_size: 8
    training:
      pairs: 100
      holdout: 0
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], capture_output=True, text=True, check=True).stdout


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def make_repo(repo: Path) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    for a, b in PAIRS:  # each pair born together, never with another pair
        commit(repo, {a: FILES[a], b: FILES[b]}, f"add {a} and {b}")
    for round_ in range(3):
        for a, b in PAIRS:
            commit(repo, {a: FILES[a] + f"# {round_}\n", b: FILES[b] + f"# {round_}\n"}, f"change {a} and {b}")


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    make_repo(root / "repo")
    make_tiny_model(root / "model", dim=8)
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    (root / "recipes/g").mkdir(parents=True)
    (root / "recipes/g/oxidize.yaml").write_text(RECIPE)
    return root


def scraped(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / "build/g/eventlog.sqlite")


def test_describe_content_reads_what_a_file_says_and_defines():
    from oxidize.gitlog.describe import describe_content

    py = describe_content("src/fusion.py", FILES["src/fusion.py"].encode())
    assert py == ("file src/fusion.py: fusion, python source — Reciprocal rank fusion of ranked lists.; "
                  "function fuse; class Fuser")
    rs = describe_content("core/store.rs", FILES["core/store.rs"].encode())
    # the module's own //! comment is the file's account, not the first struct's doc
    assert rs.endswith("— Where vectors are stored on disk.; struct Store; function open")
    md = describe_content("docs/faq.md", FILES["docs/faq.md"].encode())
    assert md.endswith("markdown document — sections: FAQ, Why is the cache slow")
    go = describe_content("cmd/main.go", FILES["cmd/main.go"].encode())
    assert "Package main starts the server." in go and go.endswith("; function main")
    ts = describe_content("web/app.ts", b"// The app\n\nexport function start() {}\n/** The app itself. */\n"
                                        b"export class App {\n  /** Runs it. */\n  run() {}\n}\n")
    assert ts.endswith("— The app; function start; class App: The app itself. (methods: run)")
    c = describe_content("lib/m.c", b"/* Matrix helpers */\n\n/* Adds two. */\nint add(int a, int b) { return a + b; }\n")
    assert c.endswith("— Matrix helpers; function add: Adds two.") and "*/" not in c
    doc = describe_content("pkg/lines.py", b'"""Lines."""\nclass Tracker:\n    """Counts blank lines before a class.\n\n'
                                           b'    More."""\n    def before(self):\n        pass\n'
                                           b'    def _private(self):\n        pass\n')
    assert doc.endswith("— Lines.; class Tracker: Counts blank lines before a class. (methods: before)")
    assert describe_content("x.py", b"def (:\n") == "file x.py: x, python source"  # unparsable: the path
    assert len(describe_content("big.py", ('"""' + "word " * 2000 + '"""').encode())) <= 2000
    assert len(describe_content("big.py", ('"""' + "word " * 2000 + '"""').encode(), max_chars=700)) <= 700


def test_a_repository_builds_and_its_files_are_described_by_content(project: Path):
    proc = run(project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "16 new commit(s)" in proc.stdout and "8 file(s) described from their content" in proc.stdout
    db = scraped(project)
    commits = db.execute("SELECT data FROM eventlog WHERE event_type = 'git.commit' ORDER BY seq").fetchall()
    assert len(commits) == 16 and json.loads(commits[0][0])["files"] == ["src/fusion.py", "src/rank.py"]
    pairs = {(a, b): n for a, b, n in db.execute("SELECT file_a, file_b, count FROM co_changes")}
    assert pairs[("src/fusion.py", "src/rank.py")] == 4  # added together, then three rounds
    assert ("core/index.rs", "src/fusion.py") not in pairs
    items = sqlite3.connect(project / "build/g/temporal/index.sqlite").execute(
        "SELECT source_id, text FROM items").fetchall()
    assert dict(items)["core/store.rs"].endswith("Where vectors are stored on disk.; struct Store; function open")
    hits = json.loads(run(project, "query", "--json", "--mode", "lexical", "-k", "1", "reciprocal").stdout)
    assert hits[0]["source_id"] == "src/fusion.py"  # a word of its content, not of its path
    assert git(project / "repo", "status", "--porcelain") == ""  # the repository is only read


def test_a_new_commit_is_stale_and_scraped_incrementally(project: Path):
    assert run(project).returncode == 0
    commits = "SELECT count(*), max(seq) FROM eventlog WHERE event_type = 'git.commit'"
    before, last = scraped(project).execute(commits).fetchone()
    assert run(project, "stale", "--check").returncode == 0
    commit(project / "repo", {"src/rank.py": FILES["src/rank.py"] + "def best(xs):\n    return xs[0]\n"}, "add best")
    stale = run(project, "stale", "--check")
    assert stale.returncode == 1 and "g:eventlog" in stale.stdout
    assert "1 new commit on " in stale.stdout and " in repo" in stale.stdout, stale.stdout
    proc = run(project)
    assert proc.returncode == 0 and "1 new commit(s)" in proc.stdout and "1 file(s) described" in proc.stdout
    db = scraped(project)
    count, newest = db.execute(commits).fetchone()
    assert count == before + 1 and newest > last  # appended after what was there
    calls = db.execute("SELECT count(*) FROM eventlog WHERE event_type = 'code.function' "
                       "AND source_id = 'src/rank.py::best'").fetchone()[0]
    assert calls == 1  # the changed file's code events were replaced, not doubled
    text = db.execute("SELECT text FROM file_texts WHERE path = 'src/rank.py'").fetchone()[0]
    assert text.endswith("; function rank; function best")


def test_a_rewritten_history_is_noticed_and_scraped_again(project: Path):
    assert run(project).returncode == 0
    git(project / "repo", "commit", "-q", "--amend", "-m", "the last message, rewritten")
    stale = run(project, "stale")
    assert "the history of repo was rewritten" in stale.stdout, stale.stdout
    proc = run(project)
    assert proc.returncode == 0 and "the history was rewritten" in proc.stdout
    messages = [json.loads(d)["message"] for (d,) in scraped(project).execute(
        "SELECT data FROM eventlog WHERE event_type = 'git.commit' ORDER BY seq")]
    assert len(messages) == 16 and messages[-1] == "the last message, rewritten"


@pytest.mark.parametrize("kind", ["not a repository", "empty repository"])
def test_a_folder_that_is_no_history_is_one_line(project: Path, kind: str):
    shutil.rmtree(project / "repo")
    (project / "repo").mkdir()
    if kind == "empty repository":
        git(project / "repo", "init", "-q")
    proc = run(project)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out
    assert ("is not a git repository" if kind == "not a repository" else "has no commits yet") in out
    assert not (project / "build/g/eventlog.sqlite").exists()


def test_the_git_key_is_checked_when_the_recipe_loads(tmp_path: Path):
    from oxidize.errors import RecipeError
    from oxidize.recipe import parse_recipe
    from oxidize.recipe.checks import GitSource

    recipe = parse_recipe({"version": 1, "eventlog": {"git": "../repo"}, "projections": {"t": None}},
                          tmp_path / "r" / "oxidize.yaml", "r")
    assert recipe.eventlog == GitSource((tmp_path / "repo").resolve())
    with pytest.raises(RecipeError, match=r"eventlog: expected \{git: PATH\}.*found the key\(s\) svn"):
        parse_recipe({"version": 1, "eventlog": {"svn": "x"}, "projections": {"t": None}}, tmp_path / "r.yaml", "r")


def test_functions_and_calls_become_code_events_the_call_graph_reads(project: Path):
    from oxidize.eventlog import open_eventlog
    from oxidize.pairs.code_graph import read_call_graph

    assert run(project).returncode == 0
    with open_eventlog(project / "build/g/eventlog.sqlite") as log:
        graph = read_call_graph(log)
    assert {"src/fusion.py::fuse", "src/rank.py::rank", "core/store.rs::open", "cmd/main.go::main"} <= set(graph.functions)
    assert ("src/fusion.py::fuse", "src/rank.py::rank") in graph.edges  # resolved across files
    assert graph.functions["src/rank.py::rank"].signature == "def rank(xs)"


def test_notes_become_sessions(project: Path):
    from oxidize.gitlog.notes import session_events

    note = ("# Session: cache work\n**ID**: 20250101-0900\n**Date**: July 27, 2025\n\n## Goals\n- [ ] speed up the cache\n\n"
            "**Key decisions**:\n- keep the cache on disk\n\n## Challenges & Solutions\nThe disk filled up,\nso we prune.\n")
    events = session_events("notes/a.md", note, "2025-01-02T00:00:00Z")
    assert events[0][:3] == ("session.started", "2025-01-02T00:00:00Z", "20250101-0900")  # "July 27" is no ISO date
    assert events[0][4]["title"] == "cache work"
    assert [(k, d["content"]) for k, _, _, _, d in events[1:]] == [
        ("session.goal", "speed up the cache"), ("session.decision", "keep the cache on disk"),
        ("session.observation", "The disk filled up, so we prune.")]
    commit(project / "repo", {"notes/a.md": note, "notes/b.md": "# Other\n- one thing\n- another thing\n"}, "notes")
    recipe = project / "recipes/g/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("eventlog: {git: ../../repo}",
                                                 'eventlog: {git: ../../repo, notes: "notes/*.md"}'))
    assert run(project).returncode == 0
    rows = scraped(project).execute("SELECT event_type, source_id FROM eventlog WHERE event_type LIKE 'session.%'").fetchall()
    assert ("session.decision", "20250101-0900") in rows and ("session.work", "b") in rows


def test_definitions_of_each_language_with_their_docs():
    from oxidize.gitlog.definitions import definitions

    def found(path, text):
        return [(d.kind, d.name, d.doc, d.members) for d in definitions(path, text.encode())]

    assert found("a.py", 'class Tracker(Base):\n    """Counts lines. More."""\n    def run(self, x):\n'
                         '        """Runs it."""\n\ndef helper():\n    pass\n') == [
        ("class", "Tracker", "Counts lines.", ("run",)), ("method", "Tracker.run", "Runs it.", ()),
        ("function", "helper", "", ())]
    assert found("a.rs", "/// A store of vectors.\n#[derive(Debug)]\npub struct Store;\n"
                         "impl Store {\n    /// Opens it.\n    pub fn open() {}\n}\n/// Kinds.\nenum Kind { A }\n"
                         "/// Can be searched.\ntrait Search {}\n") == [
        ("struct", "Store", "A store of vectors.", ("open",)), ("method", "Store.open", "Opens it.", ()),
        ("enum", "Kind", "Kinds.", ()), ("trait", "Search", "Can be searched.", ())]
    assert found("a.go", "package a\n\n// Server serves.\ntype Server struct{}\n\n// Reader reads.\n"
                         "type Reader interface{}\n\n// Serve starts it.\nfunc (s *Server) Serve() {}\n") == [
        ("struct", "Server", "Server serves.", ("Serve",)), ("interface", "Reader", "Reader reads.", ()),
        ("method", "Server.Serve", "Serve starts it.", ())]
    assert found("a.cpp", "/// A matrix.\nclass M {\n public:\n  void add();\n};\n") == [
        ("class", "M", "A matrix.", ())]
    assert found("a.md", "# Title\n\nIntro text. More.\n\n## Install\n\nRun it.\n") == [
        ("section", "Title", "Intro text.", ()), ("section", "Install", "Run it.", ())]


def test_definitions_become_code_events_and_items_that_credit_their_file(project: Path):
    commit(project / "repo", {"src/lines.py": '"""Lines."""\n\nclass EmptyLineTracker:\n'
                              '    """Decides how many blank lines go before functions and classes."""\n'
                              '    def before(self):\n        """Counts the empty lines above a decorator."""\n'
                              '\ndef _undocumented():\n    pass\n'},
           "add the blank line rules")
    assert run(project).returncode == 0
    db = scraped(project)
    events = dict(db.execute("SELECT source_id, event_type FROM eventlog WHERE source_file = 'src/lines.py' "
                             "AND event_type != 'code.call'"))
    assert events["src/lines.py::EmptyLineTracker"] == "code.class"
    assert events["src/lines.py::_undocumented"] == "code.function"
    items = dict(sqlite3.connect(project / "build/g/temporal/index.sqlite").execute(
        "SELECT source_id, event_type FROM items"))
    assert items["src/lines.py::EmptyLineTracker"] == "code.class"  # documented: searchable
    assert "src/lines.py::_undocumented" not in items  # no doc: its file's text names it
    # the method's docstring is in no file text: its item finds the file
    hits = json.loads(run(project, "query", "--json", "-k", "3", "--mode", "lexical",
                          "empty lines above a decorator").stdout)
    assert hits[0]["source_id"] == "src/lines.py" and hits[0]["event_type"] == "file"
    assert hits[0]["match"]["source_id"] == "src/lines.py::EmptyLineTracker.before"
    assert hits[0]["snippet"].startswith("(EmptyLineTracker.before: ")
    assert len({h["source_id"] for h in hits}) == len(hits)  # each file once
    text = run(project, "query", "-k", "1", "--mode", "lexical", "empty lines above a decorator").stdout
    assert "src/lines.py" in text and "(EmptyLineTracker.before: " in text
