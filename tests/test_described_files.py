"""A patina checkout's file population described from the files' content at HEAD (the
repository the log lives in), not from their paths alone; re-described when HEAD moves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eventlog_factory import make_sqlite_eventlog
from test_gitlog import FILES, PAIRS, commit, git
from test_patina_checkout import run
from tiny_model import make_tiny_model

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

RECIPE = """\
version: 1
embedding_model: tiny
model_dir: model
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


def checkout(root: Path, repository: bool) -> Path:
    (root / ".patina/local/data").mkdir(parents=True)
    make_tiny_model(root / ".patina/model", dim=8)
    (root / ".patina/oxidize.yaml").write_text(RECIPE)
    commits = [(f"change {a} and {b}", [a, b]) for _ in range(3) for a, b in PAIRS]
    make_sqlite_eventlog(root / ".patina/local/data/patina.db", {"s": ["a note long enough to keep"]},
                         commits=commits)
    (root / ".gitignore").write_text(".patina/local/\n")
    if repository:
        git(root, "init", "-q")
        commit(root, {**FILES, ".gitignore": ".patina/local/\n"}, "the code")
    return root


def test_a_patina_checkouts_files_are_described_from_their_content(tmp_path: Path):
    root = checkout(tmp_path / "c", repository=True)
    proc = run(root, "patina:temporal.pairs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "patina:files:" in proc.stdout and "described from their content" in proc.stdout
    fusion = next(t for t in map(json.loads, (
        root / ".patina/local/oxidize/patina/temporal/texts.jsonl").read_text().splitlines())
        if "src/fusion.py" in t)
    assert "Reciprocal rank fusion" in fusion and "Fuser" in fusion  # its docstring and names
    assert run(root, "stale", "--check").returncode == 1  # (the rest is not built yet)
    again = run(root, "patina:temporal.pairs")
    assert "-- patina:files" in again.stdout and "-- patina:temporal.pairs" in again.stdout  # up to date

    # a new commit changes a file's docstring: R:files and the pairs run again, with the new text
    commit(root, {"src/fusion.py": '"""Weighted fusion of ranked lists."""\n'}, "reword")
    stale = run(root, "stale", "patina:files")
    assert "1 new commit" in stale.stdout, stale.stdout
    proc = run(root, "patina:temporal.pairs")
    assert proc.returncode == 0 and "1 file(s)" in proc.stdout, proc.stdout + proc.stderr
    changed = (root / ".patina/local/oxidize/patina/temporal/texts.jsonl").read_text()
    assert "Weighted fusion" in changed and "Reciprocal rank fusion" not in changed


def test_a_checkout_that_is_not_a_repository_keeps_path_texts(tmp_path: Path):
    root = checkout(tmp_path / "c", repository=False)
    proc = run(root, "patina:temporal.pairs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "is not a git repository with commits: files keep their path texts" in proc.stdout
    written = (root / ".patina/local/oxidize/patina/temporal/texts.jsonl").read_text()
    assert "file src/fusion.py: fusion, python source" in written
