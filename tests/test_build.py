"""End-to-end: recipes → doit tasks → files in build/, rebuilt only when inputs change.

Each test builds a small project in a temporary directory (a tiny ONNX model, a SQLite event
log in patina's schema, two recipes) and runs real ``doit`` processes on it. What re-ran is
read from doit's own output: ``.  task`` for executed, ``-- task`` for up to date.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from eventlog_factory import append_session
from project_factory import make_project


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "proj")


def doit(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("OXIDIZE_MODELS", None)
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def executed(proc: subprocess.CompletedProcess) -> set[str]:
    """Names of the tasks doit ran (not the ones it found up to date, not groups)."""
    names = set()
    for line in proc.stdout.splitlines():
        if line.startswith(".  "):
            name = line[3:].strip()
            if "." in name.split(":", 1)[-1] or name.endswith(":model"):
                names.add(name)
    return names


ALL_TASKS = {"a:model", "a:semantic.pairs", "a:semantic.embed", "a:semantic.train",
             "a:semantic.eval", "a:semantic.index", "a:other.pairs", "a:other.embed", "a:other.train", "a:other.eval", "a:other.index",
             "b:model", "b:semantic.pairs", "b:semantic.embed", "b:semantic.train",
             "b:semantic.eval", "b:semantic.index"}


def test_first_build_writes_weights_then_nothing_reruns(project: Path):
    first = doit(project)
    assert executed(first) == ALL_TASKS
    from safetensors.numpy import load_file

    weights = load_file(str(project / "build/a/semantic/weights.safetensors"))
    assert {k: v.shape for k, v in weights.items()} == {
        "w1": (16, 8), "b1": (16,), "w2": (8, 16), "b2": (8,), "w0": (8, 8)}
    assert all(v.dtype == np.float32 for v in weights.values())
    metrics = json.loads((project / "build/a/semantic/metrics.json").read_text())
    assert metrics["primary_metric"] == "mrr@10"
    assert set(metrics) == {"random", "base", "projection", "primary_metric", "heldout_queries",
                            "heldout_queries_total"}
    assert (project / "build/a/semantic/training.png").read_bytes()[:4] == b"\x89PNG"
    assert "eval on the test part: mrr@10 projection" in first.stdout or "no held-out queries" in first.stdout
    other = load_file(str(project / "build/a/other/weights.safetensors"))
    assert other["w2"].shape == (4, 12)
    training = json.loads((project / "build/a/semantic/training.json").read_text())
    assert len(training["losses"]) == 2
    state = (project / "build/.doit.db").read_bytes()
    second = doit(project)
    assert executed(second) == set()
    # a no-op writes nothing to doit's state (group tasks are re-saved unchanged: skipped)
    assert (project / "build/.doit.db").read_bytes() == state


def test_changing_epochs_reruns_only_that_training(project: Path):
    doit(project)
    recipe = project / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("epochs: 2", "epochs: 3"))
    # the index reads the weights only: the same bytes (the kept epoch did not change) leave it
    assert executed(doit(project)) == {"a:semantic.train", "a:semantic.eval"}
    training = json.loads((project / "build/a/semantic/training.json").read_text())
    # trained with the new key (it may stop sooner: training that cannot clear the bar stops)
    assert training["config"]["epochs"] == 3 and 1 <= len(training["losses"]) <= 3


def test_changing_pair_count_keeps_embeddings(project: Path):
    doit(project)
    recipe = project / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("pairs: 200", "pairs: 300"))
    # texts.jsonl is byte-identical, so the embed step stays up to date.
    assert executed(doit(project)) == {"a:semantic.pairs", "a:semantic.train", "a:semantic.eval"}
    assert np.load(project / "build/a/semantic/triplets.npy").shape == (300, 3)


def test_appending_events_embeds_only_new_texts(project: Path):
    doit(project)
    before = json.loads((project / "build/a/semantic/embed.json").read_text())
    new_texts = [f"brand new observation number {i} about the deploy rollback plan" for i in range(3)]
    append_session(project / "events.db", "a-session-new", new_texts)
    proc = doit(project)
    ran = executed(proc)
    # the index grew by the new notes in place (oxidize/search/update.py), not rebuilt
    assert "a:semantic: updated the index in place" in proc.stdout, proc.stdout
    assert ran == {"a:semantic.pairs", "a:semantic.embed", "a:semantic.train", "a:semantic.eval", "a:semantic.index",
                   "a:other.pairs", "a:other.embed", "a:other.train", "a:other.eval", "a:other.index"}
    after = json.loads((project / "build/a/semantic/embed.json").read_text())
    assert after["embedded"] == 3
    assert after["cached"] == before["texts"]
    assert after["texts"] == before["texts"] + 3


def test_touch_without_change_rebuilds_nothing(project: Path):
    doit(project)
    os.utime(project / "events.db", (1, 1))
    os.utime(project / "recipes/a/oxidize.yaml", None)
    assert executed(doit(project)) == set()


def test_single_projection_by_name(project: Path):
    ran = executed(doit(project, "a:other"))
    assert ran == {"a:model", "a:other.pairs", "a:other.embed", "a:other.train", "a:other.eval", "a:other.index"}


def test_repository_style_dodo_file(project: Path):
    (project / "pyproject.toml").write_text("")
    (project / "dodo.py").write_text("from oxidize.loader import DOIT_CONFIG, task_oxidize  # noqa\n")
    listing = doit(project, "list", "--all")
    assert "a:semantic.train" in listing.stdout
    assert "b:semantic" in listing.stdout


def test_loading_tasks_imports_no_heavy_library(project: Path):
    code = textwrap.dedent("""
        import sys
        from doit.doit_cmd import DoitMain
        rc = DoitMain().run(["list", "--all"])
        heavy = sorted(m for m in ("numba", "onnxruntime", "numpy", "tokenizers", "safetensors")
                       if m in sys.modules)
        print("HEAVY:", ",".join(heavy))
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "a:semantic.train" in proc.stdout
    assert "HEAVY: \n" in proc.stdout


def test_bad_recipe_is_one_clear_message(project: Path):
    recipe = project / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("epochs: 2", "epoch: 2"))
    proc = doit(project, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "oxidize.yaml" in out and "epoch" in out and "epochs" in out
    assert "Traceback" not in out


def test_missing_eventlog_fails_the_pairs_task_clearly(project: Path):
    (project / "other.db").unlink()
    proc = doit(project, "b", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "other.db" in out
    assert "Traceback" not in out
    # The other recipe still builds.
    assert executed(doit(project, "a:semantic")) >= {"a:semantic.train"}


def test_project_without_recipes_says_where_recipes_go(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    proc = doit(tmp_path, "list", check=False)
    assert proc.returncode == 3
    assert "no oxidize recipe found" in proc.stderr and "recipes/<name>/oxidize.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_listing_names_each_recipe_with_its_projections(project: Path):
    listing = doit(project, "list").stdout
    assert "build recipe a (recipes/a/oxidize.yaml): semantic, other" in listing
    assert "build recipe b (recipes/b.yaml): semantic" in listing
