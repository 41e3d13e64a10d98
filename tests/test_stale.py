"""``doit stale`` and ``doit cache-key``: real doit processes on a small project.

The project (a tiny ONNX model, two SQLite event logs in patina's schema, recipe ``a`` with
two projections and recipe ``b`` with one) is the one of test_build.py, built in a
temporary directory. ``make_project`` and ``doit`` are shared with test_lock.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventlog_factory import append_session
from project_factory import make_project
from tiny_model import make_onnx


def run(root: Path, *args: str, program: str = "doit", env: dict | None = None,
        expect: int | None = 0) -> subprocess.CompletedProcess:
    """Run ``doit ARGS`` (or ``oxidize ARGS``) in ``root``; check the exit code unless None."""
    full_env = dict(os.environ)
    full_env.pop("OXIDIZE_MODELS", None)
    full_env.pop("OXIDIZE_LOCKED", None)
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "doit", *args] if program == "doit" else \
        [sys.executable, "-c", "import sys; from oxidize.engine.cli import main; sys.exit(main())", *args]
    proc = subprocess.run(cmd, cwd=root, env=full_env, capture_output=True, text=True, timeout=600)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(f"{program} {' '.join(args)} exited {proc.returncode}, expected {expect}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def executed(proc: subprocess.CompletedProcess) -> set[str]:
    """Tasks doit ran (``.  name``), without the groups."""
    names = set()
    for line in proc.stdout.splitlines():
        if line.startswith(".  "):
            name = line[3:].strip()
            if "." in name.split(":", 1)[-1] or name.endswith((":model", ":lock")):
                names.add(name)
    return names


def change_model(model_dir: Path) -> None:
    """Replace ``model.onnx`` by one of the same shape with other weights."""
    import onnx

    onnx.save(make_onnx(dim=8, seed=1), str(model_dir / "model.onnx"))


def stale_json(root: Path, *args: str) -> dict[str, list[dict]]:
    """``doit stale --json``: task → its reasons."""
    proc = run(root, "stale", "--json", *args)
    return {entry["task"]: entry["reasons"] for entry in json.loads(proc.stdout)}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One project built once; each test copies it (cheaper than a build per test)."""
    root = make_project(tmp_path_factory.mktemp("stale") / "proj")
    run(root)
    return root


@pytest.fixture()
def project(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built project (``cp -a`` keeps mtimes, so it stays up to date)."""
    dest = tmp_path / "proj"
    subprocess.run(["cp", "-a", str(built), str(dest)], check=True)
    return dest


def test_after_a_full_build_nothing_is_stale(project: Path):
    proc = run(project, "stale", "--check")
    assert "nothing is stale" in proc.stdout
    assert stale_json(project) == {}
    everything = json.loads(run(project, "stale", "--json", "--all").stdout)
    assert {e["task"] for e in everything} >= {"a:model", "a:semantic.train", "b:semantic.pairs", "a:lock"}
    assert {e["status"] for e in everything} == {"up-to-date"}
    # The oxidize command picks up the plugin too.
    assert "nothing is stale" in run(project, "stale", "--check", program="oxidize").stdout


def test_appended_events_make_that_logs_targets_stale(project: Path):
    append_session(project / "events.db", "a-session-new",
                   [f"new observation {i} about the deploy rollback plan" for i in range(3)])
    proc = run(project, "stale", "--check", expect=1)
    assert "the event log events.db changed: 3 events added (30 → 33 events, last seq 30 → 33)" in proc.stdout
    assert "b:" not in proc.stdout  # recipe b reads another log
    found = stale_json(project)
    assert set(found) == {"a:semantic.pairs", "a:other.pairs", "a:semantic.embed", "a:other.embed",
                          "a:semantic.train", "a:other.train", "a:semantic.eval", "a:semantic.index", "a:other.eval", "a:other.index"}
    # a:lock will be rewritten too, but only for reasons listed above: it is folded away.
    log_reason = {"kind": "eventlog_changed", "path": "events.db", "old_count": 30, "new_count": 33,
                  "old_max_seq": 30, "new_max_seq": 33}
    assert found["a:semantic.pairs"] == [log_reason]
    assert found["a:other.pairs"] == [log_reason]
    assert found["a:semantic.embed"] == [{"kind": "upstream_rebuilt", "path": "build/a/semantic/texts.jsonl",
                                          "task": "a:semantic.pairs"}]
    assert {r["task"] for r in found["a:semantic.train"]} == {"a:semantic.pairs", "a:semantic.embed"}
    assert "input build/a/semantic/texts.jsonl will be rebuilt by a:semantic.pairs" in proc.stdout
    # Filtered to the other recipe: nothing stale.
    assert "nothing is stale" in run(project, "stale", "--check", "b").stdout
    # doit agrees: it runs a subset of what was listed, and afterwards nothing is stale.
    assert executed(run(project)) <= set(found) | {"a:lock"}
    run(project, "stale", "--check")


def test_changing_epochs_lists_exactly_that_training(project: Path):
    recipe = project / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("epochs: 2", "epochs: 3"))
    proc = run(project, "stale", "--check", expect=1)
    assert "recipe key projections.semantic.epochs changed from 2 to 3" in proc.stdout
    found = stale_json(project)
    assert found["a:semantic.train"] == [
        {"kind": "recipe_key_changed", "key": "projections.semantic.epochs", "old": 2, "new": 3}]
    # Downstream, only that projection's evaluation, because its weights will be rebuilt.
    assert set(found) == {"a:semantic.train", "a:semantic.eval", "a:semantic.index"}
    assert {r["kind"] for r in found["a:semantic.eval"]} == {"upstream_rebuilt"}
    # eval reports the search the index step chose, so it follows the index too
    assert {r["task"] for r in found["a:semantic.eval"]} == {"a:semantic.train", "a:semantic.index"}
    # doit runs the index only if the weights' bytes changed (here the kept epoch is the same)
    ran = executed(run(project))
    assert {"a:semantic.train", "a:semantic.eval", "a:lock"} <= ran
    assert ran <= {"a:semantic.train", "a:semantic.eval", "a:semantic.index", "a:lock"}
    run(project, "stale", "--check")


def test_touch_is_no_change_but_edits_and_deletions_are(project: Path):
    os.utime(project / "events.db", (1, 1))
    os.utime(project / "build/a/semantic/texts.jsonl", None)
    run(project, "stale", "--check")

    weights = project / "build/a/semantic/weights.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    (project / "build/b/semantic/pairs.json").unlink()
    found = stale_json(project)
    assert found["a:semantic.train"] == [{"kind": "target_modified", "path": str(weights.relative_to(project))}]
    assert {"kind": "target_missing", "path": "build/b/semantic/pairs.json"} in found["b:semantic.pairs"]
    assert found["b:semantic.embed"] == [{"kind": "upstream_rebuilt", "path": "build/b/semantic/texts.jsonl",
                                          "task": "b:semantic.pairs"}]
    assert "a:other.train" not in found and "a:semantic.pairs" not in found
    text = run(project, "stale", expect=0).stdout  # without --check: exit 0
    assert "output build/a/semantic/weights.safetensors was modified since it was built" in text
    assert "output build/b/semantic/pairs.json is missing" in text


def test_model_file_change_rebuilds_the_embeddings(project: Path):
    change_model(project / "model")
    found = stale_json(project, "a")
    assert found["a:model"] == [{"kind": "model_file_changed", "path": "model/model.onnx"}]
    assert found["a:semantic.embed"] == [{"kind": "upstream_rebuilt", "path": "build/a/model.json",
                                          "task": "a:model"}]
    assert "a:semantic.pairs" not in found


def test_never_built_filtering_and_quiet(tmp_path: Path):
    root = make_project(tmp_path / "fresh")
    proc = run(root, "stale", "b")
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["b:model", "    never built"]
    assert not any(line.startswith("a:") for line in lines)
    assert run(root, "stale", "--check", "--quiet", expect=1).stdout == ""
    assert set(stale_json(root, "a:other")) == {"a:other.pairs", "a:other.embed", "a:other.train",
                                                 "a:other.eval", "a:other.index"}
    bad = run(root, "stale", "nosuch", expect=3)
    assert "no task matches" in bad.stderr


def test_stale_imports_no_heavy_library(project: Path):
    append_session(project / "events.db", "a-session-new", ["one more observation about the cache"])
    code = textwrap.dedent("""
        import sys
        from doit.doit_cmd import DoitMain
        rc = DoitMain().run(["stale", "--check"])
        heavy = sorted(m for m in ("numba", "onnxruntime", "numpy", "tokenizers", "safetensors")
                       if m in sys.modules)
        print("HEAVY:", ",".join(heavy))
        sys.exit(rc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "1 event added" in proc.stdout
    assert "HEAVY: \n" in proc.stdout


def test_every_reason_has_words():
    from dataclasses import fields

    from oxidize.engine import staleness

    kinds = set()
    for cls in vars(staleness).values():
        if isinstance(cls, type) and issubclass(cls, staleness.Reason) and cls is not staleness.Reason:
            reason = cls(*[("x" if f.type in ("str", "str | None") else None) for f in fields(cls)])
            text = staleness.render(reason)
            assert text and "None" not in text, (cls, text)
            assert staleness.to_json(reason)["kind"] == cls.kind
            kinds.add(cls.kind)
    assert len(kinds) >= 15


def test_cache_key_covers_recipe_log_and_model(tmp_path: Path):
    root = make_project(tmp_path / "keys")

    def key(*args: str) -> str:
        lines = run(root, "cache-key", *args).stdout.split()
        assert len(lines) == 1 and len(lines[0]) == 64
        return lines[0]

    all_before, a_before, b_before = key(), key("a"), key("b")
    assert len({all_before, a_before, b_before}) == 3
    assert key() == all_before  # stable
    assert run(root, "cache-key", program="oxidize").stdout.strip() == all_before
    recipe = root / "recipes/a/oxidize.yaml"
    recipe.write_text("# a comment changes nothing\n" + recipe.read_text())
    assert key("a") == a_before
    recipe.write_text(recipe.read_text().replace("epochs: 2", "epochs: 3"))
    a_epochs = key("a")
    assert a_epochs != a_before and key("b") == b_before
    append_session(root / "events.db", "a-session-new", ["another observation about the cache"])
    assert key("a") not in (a_before, a_epochs) and key("b") == b_before
    change_model(root / "model")
    assert key("b") != b_before
    explained = run(root, "cache-key", "--explain", "b").stdout
    assert '"model_fingerprint"' in explained and '"python"' in explained
    bad = run(root, "cache-key", "nosuch", expect=3)
    assert "no recipe named nosuch" in bad.stderr
