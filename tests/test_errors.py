"""Bad input, end to end: one clear message, a non-zero exit code, nothing lost.

Every case breaks one input of a small project (a tiny ONNX model, a SQLite event log in
patina's rollback-journal mode, one recipe), runs a real ``doit`` (or ``oxidize``) process
and checks what the user sees: the message names the file, key or row and what was
expected; the exit code is not 0; there is no Python traceback; the event log's folder is
byte-for-byte what it was (sha256 of every file, no journal left behind). Then the input is
fixed and the next build must succeed — a mistake never leaves the project stuck.

The helpers here (:func:`make_project`, :func:`run`) are shared with test_interrupt.py and
test_concurrency.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventlog_factory import make_sqlite_eventlog
from tiny_model import make_tiny_model

RECIPE = "recipes/a/oxidize.yaml"
LOG = "data/events.db"

GOOD_RECIPE = """\
version: 1
embedding_model: tiny
model_dir: ../../model
eventlog: ../../data/events.db
projections:
  semantic:
    layers: [null, 16, 8]
    epochs: 2
    batch_size: 16
    training:
      pairs: 100
"""


def sessions(n_sessions: int = 6, per_session: int = 5, prefix: str = "s") -> dict[str, list[str]]:
    """Session id → texts long enough to be used (the tiny model's vocabulary, mostly)."""
    topics = ["cache key and the build", "the model and its embedding", "a test to fix the bug",
              "the recipe of the projection", "sqlite log of the session", "train the weights"]
    return {f"{prefix}{s}": [f"decision {i} in session {s} about {topics[s % len(topics)]}"
                             for i in range(per_session)]
            for s in range(n_sessions)}


def make_project(root: Path, recipe: str = GOOD_RECIPE, log_sessions: dict | None = None) -> Path:
    """A project at ``root``: loader configured in pyproject.toml, tiny model, event log, recipe."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text('[tool.doit]\nloader = "oxidize"\n')
    make_tiny_model(root / "model", dim=8)
    (root / "data").mkdir(exist_ok=True)
    make_sqlite_eventlog(root / LOG, log_sessions or sessions(), journal_mode="delete")
    (root / RECIPE).parent.mkdir(parents=True, exist_ok=True)
    (root / RECIPE).write_text(recipe)
    return root


def command(tool: str) -> list[str]:
    if tool == "oxidize":
        return [sys.executable, "-m", "oxidize.engine.cli"]
    return [sys.executable, "-m", "doit"]


def run(root: Path, *args: str, tool: str = "doit", timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``doit``/``oxidize`` in ``root`` to completion and return the finished process."""
    env = dict(os.environ)
    env.pop("OXIDIZE_MODELS", None)
    return subprocess.run([*command(tool), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder`` (the user's inputs must never change)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(folder.iterdir())}


def assert_clean_failure(proc: subprocess.CompletedProcess, expected: list[str]) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    return out


def assert_good_build(root: Path) -> None:
    proc = run(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    from safetensors.numpy import load_file

    assert load_file(str(root / "build/a/semantic/weights.safetensors"))["w1"].shape == (16, 8)


# --------------------------------------------------------------------------- the cases


def _edit(old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        text = (root / RECIPE).read_text()
        assert old in text, old
        (root / RECIPE).write_text(text.replace(old, new))
    return edit


def _restore_recipe(root: Path) -> None:
    (root / RECIPE).write_text(GOOD_RECIPE)


def _write_recipe(text: str) -> Callable[[Path], None]:
    return lambda root: (root / RECIPE).write_text(text)


def _move_log_aside(root: Path) -> None:
    (root / LOG).rename(root / "data/events.db.aside")


def _move_log_back(root: Path) -> None:
    if (root / LOG).is_dir():
        (root / LOG).rmdir()
    (root / LOG).unlink(missing_ok=True)
    (root / "data/events.db.aside").rename(root / LOG)


def _replace_log(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def replace(root: Path) -> None:
        _move_log_aside(root)
        make(root / LOG)
    return replace


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


# patina's columns, but without the CHECK(json_valid(data)) of today's schema (older logs).
_LOOSE_SCHEMA = ("CREATE TABLE eventlog (seq INTEGER PRIMARY KEY, event_type TEXT, timestamp TEXT, "
                 "source_id TEXT, source_file TEXT, data JSON)")


def _log_with_bad_json(path: Path) -> None:
    rows = [f"({i}, 'session.decision', '2025-01-01T00:00:00Z', 's{i % 3}', NULL, "
            f"'{{\"content\": \"decision {i} about the cache key and the build\"}}')" for i in range(1, 7)]
    _sql(path, _LOOSE_SCHEMA, "INSERT INTO eventlog VALUES " + ", ".join(rows),
         "INSERT INTO eventlog VALUES (7, 'session.decision', '2025-01-01T00:00:00Z', 's1', NULL, "
         "'{\"content\": \"unterminated')")


def _log_without_content(path: Path) -> None:
    rows = [f"({i}, 'session.decision', '2025-01-01T00:00:00Z', 's{i % 3}', NULL, "
            f"'{{\"text\": \"decision {i} about the cache key and the build\"}}')" for i in range(1, 10)]
    _sql(path, _LOOSE_SCHEMA, "INSERT INTO eventlog VALUES " + ", ".join(rows))


def _model_file(name: str, content: bytes | None) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / "model" / name).rename(root / "model" / f"{name}.aside")
        if content is not None:
            (root / "model" / name).write_bytes(content)
    return change


def _model_file_back(name: str) -> Callable[[Path], None]:
    def back(root: Path) -> None:
        (root / "model" / name).unlink(missing_ok=True)
        (root / "model" / f"{name}.aside").rename(root / "model" / name)
    return back


def _corrupt_cache_entries(root: Path) -> None:
    cache = root / "build/.cache/embeddings.sqlite"
    conn = sqlite3.connect(cache)
    keys = [row[0] for row in conn.execute("SELECT text_sha256 FROM embeddings ORDER BY text_sha256 LIMIT 3")]
    conn.execute("UPDATE embeddings SET vector = x'00ff' WHERE text_sha256 = ?", (keys[0],))
    conn.execute("UPDATE embeddings SET dim = 3 WHERE text_sha256 = ?", (keys[1],))
    nan = b"\x00\x00\xc0\x7f" * 8  # float32 NaN × dim 8
    conn.execute("UPDATE embeddings SET vector = ? WHERE text_sha256 = ?", (nan, keys[2]))
    conn.commit()
    conn.close()


def _rename_recipe(old: str, new: str) -> Callable[[Path], None]:
    def rename(root: Path) -> None:
        src, dst = root / "recipes" / old, root / "recipes" / new
        src.rename(dst)
    return rename


# Plain SGD whose weight decay multiplies the weights by about -1e20 per step: the loss is
# NaN within the first epoch whatever the data.
DIVERGING = "pairs: 100\n      optimizer: sgd\n      learning_rate: 1.0e+10\n      weight_decay: 1.0e+10"


@dataclass
class Case:
    id: str
    breaks: Callable[[Path], None]
    fixes: Callable[[Path], None]
    expected: list[str]
    tool: str = "doit"
    args: tuple[str, ...] = ()
    skip: str | None = None


def _absurd_skip() -> str | None:
    from oxidize.train.memory import physical_memory, training_memory

    have = physical_memory()
    need = training_memory(65536, 65536, 65536)
    return None if have is not None and need > have else "this machine has enough memory for it"


CASES = [
    # --- the recipe: reported when doit loads the tasks, before any work
    Case("yaml-syntax", _edit("layers: [null, 16, 8]", "layers: [null, 16, 8"), _restore_recipe,
         [RECIPE, "invalid YAML at line", "column"]),
    Case("yaml-indentation", _edit("    epochs: 2", "   epochs: 2"), _restore_recipe,
         [RECIPE, "invalid YAML at line 8, column"], tool="oxidize"),
    Case("yaml-not-a-mapping", _write_recipe("- version: 1\n"), _restore_recipe,
         [RECIPE, "expected a mapping at the top level"]),
    Case("wrong-type", _edit("epochs: 2", "epochs: two"), _restore_recipe,
         [RECIPE, "projections.semantic.epochs", "expected an integer >= 1", "'two'"]),
    Case("wrong-type-float-as-text", _edit("pairs: 100", "pairs: 100\n      learning_rate: 1e-3"),
         _restore_recipe, ["projections.semantic.training.learning_rate", "1.0e-3"], tool="oxidize"),
    Case("misspelt-key", _edit("epochs: 2", "epoch: 2"), _restore_recipe,
         [RECIPE, "projections.semantic.epoch", "unknown key 'epoch'", "did you mean 'epochs'?"]),
    Case("misspelt-top-key", _edit("projections:", "projection:"), _restore_recipe,
         [RECIPE, "did you mean 'projections'?"], tool="oxidize"),
    Case("misplaced-key", _edit("    epochs: 2", "    learning_rate: 0.01\n    epochs: 2"), _restore_recipe,
         ["projections.semantic.learning_rate", "training settings go under 'training:'"]),
    Case("unsupported-version", _edit("version: 1", "version: 2"), _restore_recipe,
         [RECIPE, "version", "unsupported version 2"]),
    Case("zero-dimension", _edit("[null, 16, 8]", "[null, 0, 8]"), _restore_recipe,
         ["projections.semantic.layers", "layers[1]", "from 1 to 65536", "(0)"]),
    Case("negative-dimension", _edit("[null, 16, 8]", "[null, 16, -8]"), _restore_recipe,
         ["projections.semantic.layers", "layers[2]", "(-8)"], tool="oxidize"),
    Case("too-large-dimension", _edit("[null, 16, 8]", "[null, 16, 100000000]"), _restore_recipe,
         ["layers[2]", "from 1 to 65536", "100000000"]),
    Case("absurd-network", _edit("[null, 16, 8]", "[65536, 65536, 65536]"), _restore_recipe,
         ["projections.semantic.layers", "GiB of memory", "this machine has"], skip=_absurd_skip()),
    Case("layers-not-a-list", _edit("[null, 16, 8]", "16"), _restore_recipe,
         ["projections.semantic.layers", "expected a list of 3 dimensions"]),
    Case("projection-name-dotdot", _edit("  semantic:", "  ../x:"), _restore_recipe,
         ["projection name '../x' is not a safe file name"]),
    Case("projection-name-absolute", _edit("  semantic:", "  /abs:"), _restore_recipe,
         ["projection name '/abs' is not a safe file name"], tool="oxidize"),
    Case("projection-name-empty", _edit("  semantic:", "  '':"), _restore_recipe,
         ["projection name '' is not a safe file name"]),
    Case("projection-name-collides-with-a-file", _edit("  semantic:", "  model.json:"), _restore_recipe,
         ["projections.model.json", "is the name of a file oxidize writes in build/a/"]),
    Case("recipe-name-unsafe", _rename_recipe("a", "a b"), _rename_recipe("a b", "a"),
         ["recipe name 'a b' is not a safe file name"]),
    # --- the event log: missing or a directory is reported when the build loads; the rest by
    # the pairs task; nothing else is touched
    Case("missing-eventlog", _move_log_aside, _move_log_back,
         ["recipe a (recipes/a/oxidize.yaml)", "event log not found", LOG]),
    Case("eventlog-is-a-directory", _replace_log(lambda p: p.mkdir()), _move_log_back,
         [LOG, "is a directory"]),
    Case("eventlog-not-sqlite", _replace_log(lambda p: p.write_text("not a database\n" * 50)),
         _move_log_back, [LOG, "is not a SQLite database"], tool="oxidize"),
    Case("eventlog-without-table", _replace_log(lambda p: _sql(p, "CREATE TABLE notes (x TEXT)")),
         _move_log_back, [LOG, "has no `eventlog` table", "notes"]),
    Case("eventlog-missing-columns",
         _replace_log(lambda p: _sql(p, "CREATE TABLE eventlog (seq INTEGER, event_type TEXT)")),
         _move_log_back, [LOG, "lacks column(s) timestamp, source_id, source_file, data"]),
    Case("eventlog-row-invalid-json", _replace_log(_log_with_bad_json), _move_log_back,
         [LOG, "row seq=7", "not valid JSON"]),
    Case("eventlog-rows-without-content", _replace_log(_log_without_content), _move_log_back,
         [LOG, "no usable sessions"]),
    Case("eventlog-no-usable-sessions",
         _replace_log(lambda p: make_sqlite_eventlog(p, {"only": ["x"]}, journal_mode="delete")),
         _move_log_back, [LOG, "no usable sessions", "at least 2"]),
    # --- the model: reported by the model task (or the first task that needs it)
    Case("model-missing-onnx", _model_file("model.onnx", None), _model_file_back("model.onnx"),
         ["a:model", "has no model.onnx", "model.onnx and tokenizer.json"]),
    Case("model-missing-tokenizer", _model_file("tokenizer.json", None), _model_file_back("tokenizer.json"),
         ["has no tokenizer.json"], tool="oxidize"),
    Case("model-not-onnx", _model_file("model.onnx", b"\x00garbage" * 64), _model_file_back("model.onnx"),
         ["model.onnx is not a loadable ONNX model"]),
    Case("model-dimension-differs", _edit("[null, 16, 8]", "[384, 16, 8]"), _restore_recipe,
         [RECIPE, "projections.semantic.layers", "layers[0] is 384", "8 dimensions"]),
    # --- the embedding cache: one that is not a database heals itself (no failure to show):
    # tests/test_reliability3.py and tests/test_embed_cache.py check that
    # --- training
    Case("nan-loss", _edit("pairs: 100", DIVERGING), _restore_recipe,
         ["a:semantic", "diverged in epoch 1/2", "learning_rate"]),
]


@pytest.fixture(scope="module")
def built_template(tmp_path_factory) -> Path:
    """One project built once; each case breaks a copy of it (as a user breaks a built project)."""
    root = make_project(tmp_path_factory.mktemp("template") / "proj")
    assert_good_build(root)
    return root


def copy_project(template: Path, dest: Path) -> Path:
    """A copy with the same bytes and mtimes, so doit finds the copy's build up to date."""
    shutil.copytree(template, dest, symlinks=True)
    return dest


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_message(tmp_path: Path, built_template: Path, case: Case):
    if case.skip:
        pytest.skip(case.skip)
    root = copy_project(built_template, tmp_path / "proj")
    case.breaks(root)
    before = snapshot(root / "data")
    proc = run(root, *case.args, tool=case.tool)
    assert_clean_failure(proc, case.expected)
    assert snapshot(root / "data") == before, "the event log's folder changed"
    case.fixes(root)
    assert_good_build(root)


def test_load_errors_exit_with_doits_load_error_code(tmp_path: Path):
    """A recipe mistake stops before any task: exit 3 (doit's "error loading tasks"), no build/ work."""
    root = make_project(tmp_path / "proj")
    _edit("epochs: 2", "epoch: 2")(root)
    for tool in ("doit", "oxidize"):
        proc = run(root, tool=tool)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert proc.stderr.startswith("ERROR: oxidize: recipes/a/oxidize.yaml: projections.semantic.epoch:")
        # listing fails the same way, and says so once
        listed = run(root, "list", tool=tool)
        assert listed.returncode == 3 and listed.stderr.count("unknown key 'epoch'") == 1
    assert not (root / "build/a").exists()


def test_missing_or_directory_log_is_reported_before_any_task_runs(tmp_path: Path):
    root = make_project(tmp_path / "proj")
    _move_log_aside(root)
    proc = run(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out  # doit's "could not load tasks": nothing ran
    assert out.count("event log not found") == 1, out
    assert "ERROR: oxidize: recipe a (recipes/a/oxidize.yaml): event log not found: data/events.db" in out
    assert not (root / "build/a/model.json").exists()
    (root / LOG).mkdir()
    proc = run(root)
    assert proc.returncode == 3 and "event log data/events.db is a directory" in proc.stderr
    # listing and `stale` still work without a log
    assert run(root, "list").returncode == 0
    assert run(root, "stale").returncode == 0
    (root / LOG).rmdir()
    (root / "data/events.db.aside").rename(root / LOG)
    assert_good_build(root)


def test_failed_task_is_one_oxidize_line_and_stale_says_why(tmp_path: Path):
    """A task that fails prints one line naming recipe, projection and step (no doit
    ``TaskFailed - taskid:`` heading); `doit stale` then says "last build failed: …" until a
    build succeeds."""
    root = make_project(tmp_path / "proj", log_sessions={"s0": ["one note only, nothing to pair"]})
    proc = run(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "TaskFailed" not in out and "Traceback" not in out
    lines = [line for line in out.splitlines() if "no usable sessions" in line]
    assert len(lines) == 1, out
    assert lines[0].startswith("oxidize: a:semantic.pairs failed (recipe a, projection semantic, "
                               "step pairs): data/events.db: no usable sessions"), lines[0]
    stale = run(root, "stale").stdout
    assert "a:semantic.pairs\n    last build failed: data/events.db: no usable sessions" in stale, stale
    assert "a:semantic.train\n    never built" in stale
    make_sqlite_eventlog(root / LOG, sessions(), journal_mode="delete")
    assert_good_build(root)
    assert "last build failed" not in run(root, "stale").stdout
    assert not (root / "build/.failures.json").exists()


def test_failure_under_parallel_runner_is_clear(tmp_path: Path, built_template: Path):
    root = copy_project(built_template, tmp_path / "proj")
    _edit("pairs: 100", DIVERGING)(root)
    proc = run(root, "-n", "2")
    assert_clean_failure(proc, ["a:semantic.train", "diverged in epoch 1/2"])
    _restore_recipe(root)
    assert run(root, "-n", "2").returncode == 0


def test_corrupt_cache_entries_are_embedded_again_with_a_warning(tmp_path: Path, built_template: Path):
    root = copy_project(built_template, tmp_path / "proj")
    _corrupt_cache_entries(root)
    shutil.rmtree(root / "build/a")
    before = snapshot(root / "data")
    proc = run(root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "CacheWarning" not in out, out
    # wrong sizes are seen from the keys alone, a NaN only when the vector is read
    warning = "oxidize: warning: embedding cache build/.cache/embeddings.sqlite: "
    assert warning + "2 corrupt entries found; embedding again" in out
    assert warning + "1 corrupt entry dropped; embedding again" in out
    assert "embedded 3 texts, 27 from the cache" in out
    embed = json.loads((root / "build/a/semantic/embed.json").read_text())
    assert (embed["embedded"], embed["cached"]) == (3, 27)
    assert snapshot(root / "data") == before
    # the bad entries were replaced by good ones
    conn = sqlite3.connect(root / "build/.cache/embeddings.sqlite")
    rows = conn.execute("SELECT dim, length(vector) FROM embeddings").fetchall()
    conn.close()
    assert len(rows) == 30 and set(rows) == {(8, 32)}


def test_damaged_recipe_cache_is_ignored(tmp_path: Path, built_template: Path):
    """``build/.cache/recipes.json`` (parsed YAML) is only a cache: damage never stops a build."""
    root = copy_project(built_template, tmp_path / "proj")
    cache = root / "build/.cache/recipes.json"
    stored = json.loads(cache.read_text()) if cache.exists() else {"0" * 64: "{}"}
    wrong_values = json.dumps({key: "{not json" for key in stored}).encode()  # right keys, bad values
    for content in (b"", b"garbage{", b"[]", b"\xff\xfe", b'{"x": 1}', wrong_values):
        cache.write_bytes(content)
        proc = run(root)
        assert proc.returncode == 0, (content, proc.stdout + proc.stderr)
        assert "-- a:semantic.train" in proc.stdout


def test_every_output_stays_under_build(tmp_path: Path, built_template: Path):
    """Names are file names, not paths: nothing a recipe names can be written outside build/."""
    from oxidize.recipe import load_recipe
    from oxidize.engine.tasks import task_dicts

    root = copy_project(built_template, tmp_path / "proj")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        tasks = list(task_dicts(Path(".")))
    finally:
        os.chdir(cwd)
    build = (root / "build").resolve()
    targets = [t for task in tasks for t in task.get("targets", [])]
    assert targets
    for target in targets:
        path = (root / target).resolve()
        assert path.is_relative_to(build) or path.name == "oxidize.lock", target
    from oxidize.errors import RecipeError
    from oxidize.recipe import parse_recipe

    for bad in ["..", ".", "../x", "a/../../x", "/abs", "", "a\\b", "a\x00b", ".hidden", "a.",
                "x" * 65, "~", "-rf"]:
        with pytest.raises(RecipeError, match="name"):
            parse_recipe({"version": 1, "projections": {bad: None}}, Path("r.yaml"), "r")
        with pytest.raises(RecipeError, match="recipe name"):
            parse_recipe({"version": 1, "projections": {"p": None}}, Path("r.yaml"), bad)
    assert load_recipe(root / RECIPE, "a").projections.keys() == {"semantic"}
