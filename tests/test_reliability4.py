"""Reliability, round 4: damaged index files repaired by the next build, any text searchable,
git recipes that cannot silently lose content, and the small cases of the command line —
each end to end, as a user meets it (docs/reliability.md has a row for each)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from project_factory import make_project
from test_gitlog import commit, git, make_repo
from test_reliability3 import cut_in_half, one_line, run
from tiny_model import make_tiny_model

INDEX = "build/a/semantic"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("rel4") / "proj")
    proc = run(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


@pytest.fixture
def project(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "proj", symlinks=True))


def top_hits(root: Path, text: str = "cache", k: int = 3) -> list[str]:
    proc = run(root, "query", "--json", "-p", "a:semantic", "-k", str(k), text)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [h["source_id"] for h in json.loads(proc.stdout)]


# ------------------------------------------------------------------ damaged index files

@pytest.mark.parametrize("name", ["projected.npy", "index.usearch", "keys.npy", "base.npy", "index.sqlite"])
def test_an_index_file_cut_in_half_is_written_afresh_by_the_next_build(project: Path, name: str):
    before = top_hits(project)
    cut_in_half(project / INDEX / name)
    query = run(project, "query", "-p", "a:semantic", "cache")  # before the repair: one line
    assert "Traceback" not in query.stdout + query.stderr
    proc = run(project)
    out = one_line(proc)
    assert proc.returncode == 0, out[-2000:]
    assert "a:semantic: the index on disk was damaged (" in out and "afresh" in out
    assert top_hits(project) == before
    assert run(project, "stale", "--check").returncode == 0


def test_flipped_bytes_in_the_stored_weights_or_the_rows_are_noticed(project: Path):
    before = top_hits(project)
    table = project / INDEX / "index.sqlite"
    db = sqlite3.connect(table)
    blob = bytearray(db.execute("SELECT data FROM weights").fetchone()[0])
    blob[len(blob) // 2] ^= 0xFF  # a float of the weights: safetensors still reads it
    db.execute("UPDATE weights SET data = ?", (bytes(blob),))
    db.commit()
    db.close()
    out = one_line(run(project))
    assert "damaged (the weights stored in index.sqlite are not the ones it was written with)" in out
    rows = project / INDEX / "projected.npy"
    array = np.load(rows, mmap_mode="r+")
    array[3] = -array[3]  # same size, new content
    array.flush()
    del array
    out = one_line(run(project))
    assert "damaged (projected.npy holds other values than the index's items" in out
    assert top_hits(project) == before


def test_a_table_damaged_under_a_query_is_one_line(project: Path):
    table = project / INDEX / "index.sqlite"
    data = bytearray(table.read_bytes())
    for at in range(len(data) // 2, len(data) // 2 + 4096):  # a page of the table scribbled over
        data[at] = 0x5A
    table.write_bytes(bytes(data))
    proc = run(project, "query", "-p", "a:semantic", "cache")
    assert proc.returncode in (0, 3) and "Traceback" not in proc.stdout + proc.stderr
    assert run(project).returncode == 0
    assert top_hits(project)


# ------------------------------------------------------------------ any text searchable

def test_a_query_in_latin_1_bytes_and_a_set_with_a_lone_surrogate_search(project: Path, tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "doit", "query", "--json", "-p", "a:semantic", "-k", "2",
                           b"caf\xe9 cache"], cwd=project, capture_output=True)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(json.loads(proc.stdout)) == 2
    for mode in ("dense", "lexical"):
        assert run(project, "query", "--mode", mode, "-p", "a:semantic", "caf\udce9").returncode == 0
    questions = tmp_path / "q.json"
    questions.write_text('{"name": "q", "queries": [{"id": "a", "query": "lone \\ud800 cache", '
                         '"relevant_docs": ["s1"]}]}')
    proc = run(project, "bench", "-p", "a:semantic", str(questions))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_the_tokenizer_never_sees_a_lone_surrogate():
    from oxidize.embed.encoder import tokenizable

    assert tokenizable("plain text") == "plain text"
    assert tokenizable("caf\udce9 \ud800x") == "caf\ufffd \ufffdx"


# ------------------------------------------------------------------ the command line

def test_the_small_cases_of_the_command_line(project: Path, tmp_path: Path):
    huge = run(project, "query", "-k", "99999999999999999999", "-p", "a:semantic", "x")
    assert huge.returncode == 3 and "-k must be from 1 to 10,000" in huge.stderr and "Traceback" not in huge.stderr
    words = run(project, "query", "--mode", "lexical", "-p", "a:semantic", "what is the")
    assert words.returncode == 0 and "no word lexical search can use" in words.stderr
    # options after the text or the set, as people type them
    after = run(project, "query", "cache", "-p", "a:semantic", "-k", "2", "--json")
    assert after.returncode == 0 and len(json.loads(after.stdout)) == 2
    questions = tmp_path / "q.json"
    questions.write_text(json.dumps({"name": "q", "queries": [
        {"id": "a", "query": "cache", "relevant_docs": ["s1"]}]}))
    bench = run(project, "bench", str(questions), "-p", "a:semantic", "--json")
    assert bench.returncode == 0 and "q" in json.loads(bench.stdout)
    empty = subprocess.run([sys.executable, "-m", "oxidize.engine.cli", "query", ""], cwd=project,
                           capture_output=True, text=True)
    assert empty.returncode == 3 and "give the text to search for" in empty.stderr
    assert "Traceback" not in empty.stderr
    assigned = subprocess.run([sys.executable, "-m", "oxidize.engine.cli", "query", "--json", "-p",
                               "a:semantic", "-k", "1", "a=b cache"], cwd=project, capture_output=True, text=True)
    assert assigned.returncode == 0 and len(json.loads(assigned.stdout)) == 1  # a query, not a doit variable


def test_a_long_bench_set_says_how_far_it_is(project: Path, tmp_path: Path):
    questions = tmp_path / "many.json"
    questions.write_text(json.dumps({"name": "many", "queries": [
        {"id": f"q{i}", "query": f"cache question {i}", "relevant_docs": ["s1"]} for i in range(600)]}))
    proc = run(project, "bench", "-p", "a:semantic", str(questions))
    assert proc.returncode == 0
    assert "many searched:" in proc.stderr and "many timed:" in proc.stderr


# ------------------------------------------------------------------ git recipes

GIT_RECIPE = """\
version: 1
embedding_model: tiny
model_dir: ../../model
eventlog: {{git: {repo}}}
projections:
  temporal:
    layers: [null, 16, 8]
    epochs: 1
    batch_size: 8
    training:
      pair_type: co_changed
      pairs: 100
      holdout: 0
"""


def git_project(root: Path, repo: str = "../../repo") -> Path:
    make_repo(root / "repo")
    make_tiny_model(root / "model", dim=8)
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    (root / "recipes/g").mkdir(parents=True)
    (root / "recipes/g/oxidize.yaml").write_text(GIT_RECIPE.format(repo=repo))
    return root


def test_a_folder_of_a_repository_is_read_as_its_own_history(tmp_path: Path):
    root = git_project(tmp_path / "p", repo="../../repo/src")
    proc = run(root, "g:eventlog")  # (two files: too few to train on, the scrape is what is tried)
    out = one_line(proc)
    assert proc.returncode == 0, out[-2000:]
    assert "is the folder src/ of the repository at" in out
    db = sqlite3.connect(root / "build/g/eventlog.sqlite")
    files = {f for (data,) in db.execute("SELECT data FROM eventlog WHERE event_type = 'git.commit'")
             for f in json.loads(data)["files"]}
    assert files == {"fusion.py", "rank.py"}  # relative to the folder, nothing outside it
    texts = dict(db.execute("SELECT path, text FROM file_texts"))
    assert set(texts) == {"fusion.py", "rank.py"} and "Reciprocal rank fusion" in texts["fusion.py"]


def test_git_recipes_that_name_no_history_say_what_they_name(tmp_path: Path):
    root = git_project(tmp_path / "p")
    (root / "afile").write_text("x")
    (root / "recipes/g/oxidize.yaml").write_text(GIT_RECIPE.format(repo="../../afile"))
    proc = run(root)
    assert proc.returncode != 0 and "is a file, not a folder" in proc.stdout + proc.stderr
    (root / "recipes/g/oxidize.yaml").write_text(GIT_RECIPE.format(repo="../../repo"))
    assert run(root).returncode == 0
    git(root / "repo", "checkout", "-q", "--orphan", "fresh")
    stale = run(root, "stale")
    assert "has no commit on its current branch" in stale.stdout and "no-head" not in stale.stdout
    proc = run(root)
    assert proc.returncode != 0 and "the branch fresh has no commit yet (an orphan branch?)" in proc.stdout + proc.stderr


def test_unmatched_notes_and_names_that_are_not_utf8(tmp_path: Path):
    root = git_project(tmp_path / "p")
    recipe = root / "recipes/g/oxidize.yaml"
    recipe.write_text(GIT_RECIPE.format(repo="../../repo").replace(
        "eventlog: {git: ../../repo}", "eventlog: {git: ../../repo, notes: 'journal/*.md'}"))
    repo = root / "repo"
    for raw in (b"caf\xe9.py", b"caf\xe8.py"):  # two names that differ in a byte that is not UTF-8
        with open(os.fsencode(str(repo)) + b"/" + raw, "wb") as handle:
            handle.write(b'"""A module."""\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two latin-1 names")
    newline = repo / "two\nlines.py"
    newline.write_text('"""Where a newline hides."""\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a name with a newline")
    proc = run(root)
    out = one_line(proc)
    assert proc.returncode == 0, out[-2000:]
    assert "notes: 'journal/*.md' matches no file at HEAD" in out
    db = sqlite3.connect(root / "build/g/eventlog.sqlite")
    paths = {p for (p,) in db.execute("SELECT path FROM file_texts")}
    assert {"caf\\xe9.py", "caf\\xe8.py"} <= paths  # two files, not one
    table = run(root, "query", "-k", "20", "--mode", "lexical", "newline hides").stdout
    rows = [line for line in table.splitlines() if line.strip()]
    assert any("two\\nlines.py" in row for row in rows) and all(line[:3].strip().isdigit() for line in rows)
