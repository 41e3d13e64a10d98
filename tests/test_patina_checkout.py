"""In a patina checkout oxidize's build folder and state live under patina's git-ignored
.patina/local/ (not a new untracked build/ at the root); the lock stays beside the recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eventlog_factory import make_sqlite_eventlog
from tiny_model import make_tiny_model

RECIPE = """\
version: 1
embedding_model: tiny
model_dir: model
projections:
  semantic:
    layers: [null, 16, 8]
    epochs: 1
    training:
      pairs: 100
"""


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OXIDIZE_LOCKED"}
    return subprocess.run([sys.executable, "-m", "oxidize.engine.cli", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_build_state_and_caches_go_under_patina_local(tmp_path: Path):
    root = tmp_path / "checkout"
    (root / ".patina/local/data").mkdir(parents=True)
    make_tiny_model(root / ".patina/model", dim=8)
    sessions = {f"s{s}": [f"decision {i} in session {s} about topic {s % 3} and its reasons" for i in range(5)]
                for s in range(6)}
    make_sqlite_eventlog(root / ".patina/local/data/patina.db", sessions)  # patina's own path
    (root / ".patina/oxidize.yaml").write_text(RECIPE)
    proc = run(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (root / "build").exists()
    base = root / ".patina/local/oxidize"
    assert (base / "patina/semantic/weights.safetensors").is_file()
    assert (base / "patina/semantic/index.usearch").is_file()
    assert (base / ".doit.db").is_file() and (base / ".cache/embeddings.sqlite").is_file()
    assert (root / ".patina/oxidize.lock").is_file()
    assert run(root, "stale", "--check").returncode == 0
    hits = json.loads(run(root, "query", "--json", "-k", "2", "topic 1").stdout)
    assert len(hits) == 2
    assert not (root / "build").exists()
