"""Tests for oxidize.recipe: patina's format, defaults, every error message, settings dicts."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oxidize.recipe import schema as recipe_mod
from oxidize.errors import RecipeError
from oxidize.recipe import (DEFAULT_EVENT_TYPES, DEFAULT_INDEX_EVENT_TYPES, DEFAULT_MODEL, Projection,
                            Recipe, TrainingConfig, load_recipe, parse_recipe)

PATINA = """\
version: 1
embedding_model: e5-base-v2
projections:
  semantic:
    layers: [768, 1024, 256]
    epochs: 10
    batch_size: 32
"""
RECIPE_PATH = Path("/proj/recipes/demo/oxidize.yaml")


def minimal(**projection) -> dict:
    return {"version": 1, "projections": {"semantic": projection}}


def parse(data, name: str = "demo") -> Recipe:
    return parse_recipe(data, RECIPE_PATH, name)


def error(data, name: str = "demo") -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse(data, name)
    return info.value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oxidize.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ loading and defaults


def test_patina_example_loads_unchanged(tmp_path):
    recipe = load_recipe(write(tmp_path, PATINA), "patina")
    assert recipe.name == "patina"
    assert recipe.version == 1
    assert recipe.embedding_model == "e5-base-v2"
    assert recipe.eventlog is None and recipe.model_dir is None
    semantic = recipe.projection("semantic")
    assert semantic.layers == (768, 1024, 256)
    assert (semantic.epochs, semantic.batch_size) == (10, 32)
    assert semantic.training.pair_type == "same_session"
    assert list(recipe.projections) == ["semantic"]


def test_defaults_applied():
    recipe = parse(minimal())
    assert recipe.embedding_model == DEFAULT_MODEL == "all-minilm-l6-v2"
    projection = recipe.projection("semantic")
    assert projection.layers == (None, 1024, 256)
    assert (projection.epochs, projection.batch_size) == (10, 32)
    assert projection.training == TrainingConfig(
        pair_type="same_session", pairs=None, event_types=DEFAULT_EVENT_TYPES, min_chars=20,
        learning_rate=0.001, margin=0.2, seed=42, optimizer="adam", momentum=0.9, weight_decay=0.0)
    # a same_session projection trains on the notes its index holds: all six note types
    assert DEFAULT_EVENT_TYPES == DEFAULT_INDEX_EVENT_TYPES == (
        "session.goal", "session.work", "session.context", "session.decision", "session.pattern",
        "session.observation")
    assert (projection.training.loss, projection.training.temperature) == ("in_batch", 0.1)


@pytest.mark.parametrize("name, pair_type", [("semantic", "same_session"), ("temporal", "commit_files"),
                                             ("dependency", "caller_callee"), ("other", "same_session")])
def test_pair_type_default_depends_on_projection_name(name, pair_type):
    recipe = parse({"version": 1, "projections": {name: {}}})
    assert recipe.projection(name).training.pair_type == pair_type


def test_null_blocks_mean_all_defaults():
    recipe = parse({"version": 1, "projections": {"semantic": None}})
    assert recipe.projection("semantic") == parse(minimal()).projection("semantic")
    assert parse(minimal(training=None)).projection("semantic") == parse(minimal()).projection("semantic")


def test_training_block_values_are_read():
    training = {"pair_type": "same_commit", "pairs": 500, "event_types": ["git.commit"], "min_chars": 0,
                "learning_rate": 1, "margin": 0, "seed": 7, "optimizer": "sgd", "momentum": 0,
                "weight_decay": 0.01}
    config = parse(minimal(layers=[None, 64, 32], training=training)).projection("semantic").training
    assert config == TrainingConfig("same_commit", 500, ("git.commit",), 0, 1.0, 0.0, 7, "sgd", 0.0, 0.01)
    assert isinstance(config.learning_rate, float) and isinstance(config.margin, float)


def test_relative_paths_resolve_against_recipe_directory(tmp_path, monkeypatch):
    path = write(tmp_path, "version: 1\neventlog: ../data/log.db\nmodel_dir: models/e5\n"
                           "projections: {semantic: {}}\n")
    monkeypatch.chdir("/")  # the current directory must not matter
    recipe = load_recipe(path, "demo")
    assert recipe.eventlog == (tmp_path.parent / "data" / "log.db").absolute()
    assert recipe.model_dir == tmp_path / "models" / "e5"
    assert recipe.eventlog.is_absolute() and ".." not in recipe.eventlog.parts


def test_absolute_and_home_paths(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    recipe = parse({"version": 1, "eventlog": "/var/log.db", "model_dir": "~/models",
                    "projections": {"semantic": {}}})
    assert recipe.eventlog == Path("/var/log.db")
    assert recipe.model_dir == Path("/home/someone/models")


def test_dataclasses_are_frozen_and_tables_match_fields():
    recipe = parse(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.projection("semantic").epochs = 3  # type: ignore[misc]
    # Adding a key means a table row plus a dataclass field; forgetting one fails here.
    names = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
    assert set(recipe_mod.TRAINING_KEYS) == names(TrainingConfig)
    assert set(recipe_mod.PROJECTION_KEYS) | {"name"} == names(Projection)
    assert set(recipe_mod.TOP_KEYS) | {"name", "path"} == names(Recipe)


def test_loading_imports_no_heavy_modules():
    code = ("import sys, oxidize.recipe; "
            "print(sorted(m for m in ('numpy', 'numba', 'onnxruntime', 'tokenizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ settings dicts


def test_settings_dicts_are_flat_dotted_and_json_ready():
    recipe = parse(minimal())
    pairs = recipe.pair_settings("semantic")
    train = recipe.train_settings("semantic")
    assert pairs == {
        "projections.semantic.training.pair_type": "same_session",
        "projections.semantic.training.pairs": None,
        "projections.semantic.training.event_types": list(DEFAULT_EVENT_TYPES),
        "projections.semantic.training.min_chars": 20,
        "projections.semantic.training.seed": 42,
        "projections.semantic.training.holdout": 0.2,
        "projections.semantic.training.min_count": 2,
    }
    assert train == {
        "projections.semantic.layers": [None, 1024, 256],
        "projections.semantic.epochs": 10,
        "projections.semantic.batch_size": 32,
        "projections.semantic.training.learning_rate": 0.001,
        "projections.semantic.training.margin": 0.2,
        "projections.semantic.training.seed": 42,
        "projections.semantic.training.optimizer": "adam",
        "projections.semantic.training.momentum": 0.9,
        "projections.semantic.training.weight_decay": 0.0,
        "projections.semantic.training.init": "auto",
        "projections.semantic.training.patience": 3,
        "projections.semantic.training.start_penalty": 0.0,
        "projections.semantic.training.loss": "in_batch",
        "projections.semantic.training.temperature": 0.1,
        "projections.semantic.training.negatives": "random",
    }
    assert recipe.projection("semantic").eval_settings() == {"projections.semantic.gate": None,
                                                             "projections.semantic.eval.queries": []}
    assert recipe.model_settings() == {"embedding_model": DEFAULT_MODEL, "embedding_int8": True}
    for settings_dict in (pairs, train, recipe.model_settings()):
        assert json.loads(json.dumps(settings_dict)) == settings_dict
    assert recipe.projection("semantic").train_settings() == train


def test_settings_never_hold_absolute_paths(tmp_path):
    recipe = parse({"version": 1, "eventlog": str(tmp_path / "log.db"), "model_dir": str(tmp_path),
                    "projections": {"semantic": {}}})
    text = json.dumps([recipe.pair_settings("semantic"), recipe.train_settings("semantic"),
                       recipe.model_settings()])
    assert str(tmp_path) not in text


def test_editing_epochs_changes_train_settings_only():
    before, after = parse(minimal()), parse(minimal(epochs=20))
    assert before.pair_settings("semantic") == after.pair_settings("semantic")
    changed = {k for k, v in after.train_settings("semantic").items()
               if before.train_settings("semantic")[k] != v}
    assert changed == {"projections.semantic.epochs"}


def test_editing_pairs_changes_pair_settings_only():
    before, after = parse(minimal()), parse(minimal(training={"pairs": 100}))
    assert before.train_settings("semantic") == after.train_settings("semantic")
    assert after.pair_settings("semantic")["projections.semantic.training.pairs"] == 100


def test_seed_feeds_both_stages_and_model_feeds_neither():
    before, after = parse(minimal()), parse(minimal(training={"seed": 1}))
    assert before.pair_settings("semantic") != after.pair_settings("semantic")
    assert before.train_settings("semantic") != after.train_settings("semantic")
    other = parse({"version": 1, "embedding_model": "e5-base-v2", "projections": {"semantic": {}}})
    assert other.model_settings() != before.model_settings()
    assert other.train_settings("semantic") == before.train_settings("semantic")


def test_explicit_defaults_equal_omitted():
    explicit = {"version": 1, "embedding_model": DEFAULT_MODEL, "projections": {"semantic": {
        "layers": [None, 1024, 256], "epochs": 10, "batch_size": 32,
        "training": {"pair_type": "same_session", "pairs": None, "event_types": list(DEFAULT_EVENT_TYPES),
                     "min_chars": 20, "learning_rate": 0.001, "margin": 0.2, "seed": 42,
                     "optimizer": "adam", "momentum": 0.9, "weight_decay": 0}}}}
    a, b = parse(explicit), parse(minimal())
    assert a == b
    assert a.pair_settings("semantic") == b.pair_settings("semantic")
    assert a.train_settings("semantic") == b.train_settings("semantic")
    assert a.model_settings() == b.model_settings()


def test_unknown_projection_lookup_suggests():
    recipe = parse(minimal())
    with pytest.raises(RecipeError, match="did you mean 'semantic'") as info:
        recipe.train_settings("semantics")
    assert info.value.key == "projections.semantics"


# ------------------------------------------------------------------ errors


def test_malformed_yaml_reports_line_and_column(tmp_path):
    path = write(tmp_path, "version: 1\nprojections:\n  semantic: {layers: [1, 2\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, "demo")
    err = info.value
    assert err.key is None and err.path == path
    assert "oxidize.yaml" in str(err) and "line 4" in str(err) and "column" in str(err)


@pytest.mark.parametrize("text, expected", [
    ("a: 2020-13-01\n", "month must be in 1..12"),
    ("a: !!python/name:os.system\n", "line 1, column 4"),
    ("version: 1\n\x00", "line 2, column 1"),
    ("", "the recipe is empty"),
])
def test_odd_yaml_becomes_recipe_error(tmp_path, text, expected):
    with pytest.raises(RecipeError, match=expected):
        load_recipe(write(tmp_path, text), "demo")


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml", "demo")
    bad = tmp_path / "oxidize.yaml"
    bad.write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(bad, "demo")


@pytest.mark.parametrize("data, key, fragments", [
    ([1, 2], None, ["expected a mapping", "found a list"]),
    ({"version": 1, "projections": {"semantic": [768]}}, "projections.semantic", ["expected a mapping"]),
    (minimal(training="fast"), "projections.semantic.training", ["expected a mapping", "found a string"]),
])
def test_not_a_mapping(data, key, fragments):
    err = error(data)
    assert err.key == key
    assert all(f in str(err) for f in fragments), str(err)
    assert str(RECIPE_PATH) in str(err)


@pytest.mark.parametrize("data, key, fragment", [
    ({"version": 1, "projection": {}}, "projection", "did you mean 'projections'?"),
    (minimal(epoch=3), "projections.semantic.epoch", "unknown key 'epoch'; did you mean 'epochs'?"),
    (minimal(training={"optimiser": "sgd"}), "projections.semantic.training.optimiser",
     "did you mean 'optimizer'?"),
    (minimal(zzz=1), "projections.semantic.zzz", "valid keys are: batch_size, epochs, eval, gate, index, layers, training"),
    (minimal(learning_rate=0.1), "projections.semantic.learning_rate", "go under 'training:'"),
    (minimal(training={"epochs": 3}), "projections.semantic.training.epochs", "belongs to the projection"),
    ({"version": 1, 3: "x", "projections": {"semantic": {}}}, None, "keys must be strings"),
])
def test_unknown_keys(data, key, fragment):
    err = error(data)
    assert err.key == key
    assert fragment in str(err), str(err)


@pytest.mark.parametrize("data, key, fragments", [
    ({"version": True, "projections": {"s": {}}}, "version", ["expected an integer", "found a boolean"]),
    ({"version": "1", "projections": {"s": {}}}, "version", ["expected an integer", "found a string"]),
    (minimal(epochs=True), "projections.semantic.epochs", ["found a boolean"]),
    (minimal(epochs=10.0), "projections.semantic.epochs", ["expected an integer", "found a number"]),
    (minimal(batch_size="32"), "projections.semantic.batch_size", ["found a string ('32')"]),
    (minimal(training={"learning_rate": "fast"}), "projections.semantic.training.learning_rate",
     ["expected a number > 0", "found a string"]),
    (minimal(training={"learning_rate": True}), "projections.semantic.training.learning_rate",
     ["found a boolean"]),
    (minimal(training={"margin": float("nan")}), "projections.semantic.training.margin", ["a number >= 0"]),
    (minimal(training={"margin": 10**400}), "projections.semantic.training.margin", ["a number >= 0"]),
    (minimal(training={"learning_rate": "1e-3"}), "projections.semantic.training.learning_rate",
     ["found a string ('1e-3')", "with a dot"]),
    (minimal(training={"pairs": 2.5}), "projections.semantic.training.pairs", ["expected an integer >= 1"]),
    (minimal(training={"event_types": "session.decision"}), "projections.semantic.training.event_types",
     ["non-empty list", "found a string"]),
    (minimal(training={"event_types": ["a", 3]}), "projections.semantic.training.event_types",
     ["item 1", "found an integer (3)"]),
    (minimal(training={"pair_type": 5}), "projections.semantic.training.pair_type",
     ["expected one of same_session", "found an integer (5)"]),
    (minimal(layers="768"), "projections.semantic.layers", ["list of 3 dimensions", "found a string"]),
    (minimal(layers=[True, 1, 1]), "projections.semantic.layers", ["layers[0]", "found a boolean"]),
    ({"version": 1, "embedding_model": 5, "projections": {"s": {}}}, "embedding_model",
     ["non-empty string", "found an integer"]),
    ({"version": 1, "eventlog": ["a"], "projections": {"s": {}}}, "eventlog",
     ["expected a path", "found a list"]),
    ({"version": 1, "model_dir": 3, "projections": {"s": {}}}, "model_dir", ["expected a path"]),
])
def test_wrong_types(data, key, fragments):
    err = error(data)
    assert err.key == key
    assert all(f in str(err) for f in fragments), str(err)


@pytest.mark.parametrize("data, key, fragments", [
    ({"version": 2, "projections": {"s": {}}}, "version",
     ["unsupported version 2; oxidize reads version 1"]),
    ({"projections": {"s": {}}}, "version", ["missing required key", "version: 1"]),
    (minimal(layers=[768, 1024]), "projections.semantic.layers", ["list of 3 dimensions", "of length 2"]),
    (minimal(layers=[768, 0, 256]), "projections.semantic.layers", ["layers[1]", "from 1 to 65536", "(0)"]),
    (minimal(layers=[768, 1024, -5]), "projections.semantic.layers", ["layers[2]", "(-5)"]),
    (minimal(layers=[None, 1024, 65537]), "projections.semantic.layers", ["layers[2]", "65536"]),
    (minimal(layers=[None, None, 3]), "projections.semantic.layers", ["layers[1]", "null"]),
    (minimal(epochs=0), "projections.semantic.epochs", ["expected an integer >= 1", "found an integer (0)"]),
    (minimal(batch_size=0), "projections.semantic.batch_size", ["expected an integer >= 1"]),
    ({"version": 1, "projections": {}}, "projections", ["no projections"]),
    ({"version": 1, "projections": None}, "projections", ["no projections"]),
    ({"version": 1}, "projections", ["no projections"]),
    ({"version": 1, "projections": ["semantic"]}, "projections", ["expected a mapping", "found a list"]),
    ({"version": 1, "embedding_model": "  ", "projections": {"s": {}}}, "embedding_model", ["non-empty"]),
    ({"version": 1, "eventlog": "", "projections": {"s": {}}}, "eventlog", ["non-empty"]),
    (minimal(training={"pair_type": "same_sesion"}), "projections.semantic.training.pair_type",
     ["did you mean 'same_session'?"]),
    (minimal(training={"optimizer": "rmsprop"}), "projections.semantic.training.optimizer",
     ["expected one of adam, sgd"]),
    (minimal(training={"pairs": 0}), "projections.semantic.training.pairs", [">= 1"]),
    (minimal(training={"event_types": []}), "projections.semantic.training.event_types", ["non-empty list"]),
    (minimal(training={"min_chars": -1}), "projections.semantic.training.min_chars", [">= 0"]),
    (minimal(training={"learning_rate": 0}), "projections.semantic.training.learning_rate", ["> 0"]),
    (minimal(training={"margin": -0.1}), "projections.semantic.training.margin", [">= 0"]),
    (minimal(training={"momentum": 1}), "projections.semantic.training.momentum", [">= 0 and < 1"]),
    (minimal(training={"momentum": -0.5}), "projections.semantic.training.momentum", [">= 0 and < 1"]),
    (minimal(training={"weight_decay": -1e-3}), "projections.semantic.training.weight_decay", [">= 0"]),
    (minimal(training={"seed": -1}), "projections.semantic.training.seed", ["integer >= 0"]),
    (minimal(training={"seed": 2**32}), "projections.semantic.training.seed", ["<= 4294967295"]),
])
def test_invalid_values(data, key, fragments):
    err = error(data)
    assert err.key == key
    assert all(f in str(err) for f in fragments), str(err)


def test_error_message_names_file_and_key(tmp_path):
    path = write(tmp_path, PATINA.replace("epochs: 10", "epochs: 0"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path, "patina")
    assert str(info.value).startswith(f"{path}: projections.semantic.epochs: expected an integer >= 1")


def test_absurd_network_refused_with_memory_needed(monkeypatch):
    monkeypatch.setattr(recipe_mod, "physical_memory", lambda: 2**30)  # a 1 GiB machine
    parse(minimal(layers=[768, 1024, 256]))  # ~16 MiB: fine
    err = error(minimal(layers=[None, 65536, 4096]))  # null input counts as 1024
    assert err.key == "projections.semantic.layers"
    need = recipe_mod.training_memory(1024, 65536, 4096)
    assert need == (1024 * 65536 + 65536 + 65536 * 4096 + 4096) * 16
    assert f"{need / 2**30:.1f} GiB" in str(err) and "this machine has 1.0 GiB" in str(err)


def test_memory_check_skipped_when_unknown(monkeypatch):
    monkeypatch.setattr(recipe_mod, "physical_memory", lambda: None)
    assert parse(minimal(layers=[65536, 65536, 65536])).projection("semantic").layers[0] == 65536


@pytest.mark.parametrize("name", ["../x", "/abs", "", "has space", "x.", ".hidden", "a/b", "a" * 65,
                                  "abc\n", "-x", "ünï"])
def test_unsafe_recipe_names(name):
    err = error(minimal(), name=name)
    assert err.key is None
    assert "recipe name" in str(err)


@pytest.mark.parametrize("name", ["../x", "/abs", "", "has space", "x.", "a" * 65, 7, None])
def test_unsafe_projection_names(name):
    err = error({"version": 1, "projections": {name: {}}})
    assert err.key == f"projections.{name}"
    assert "projection name" in str(err)


@pytest.mark.parametrize("name", ["a", "semantic", "v1.2-x_y", "A" * 64])
def test_safe_names_accepted(name):
    assert parse({"version": 1, "projections": {name: {}}}, name=name).projection(name).name == name


# ------------------------------------------------------------------ properties

yamlish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12) | st.integers() | st.none(), children, max_size=4),
    max_leaves=20,
)
KEY_PATHS = [("version",), ("embedding_model",), ("eventlog",), ("model_dir",), ("projections",),
             ("projections", "semantic"), ("projections", "semantic", "layers"),
             ("projections", "semantic", "epochs"), ("projections", "semantic", "training")] + [
    ("projections", "semantic", "training", key) for key in recipe_mod.TRAINING_KEYS]


def _outcome(data):
    try:
        assert isinstance(parse(data), Recipe)
    except RecipeError as exc:
        assert str(exc) and exc.path == RECIPE_PATH


@settings(max_examples=300, deadline=None)
@given(yamlish)
def test_parse_recipe_never_raises_anything_but_recipe_error(data):
    _outcome(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEY_PATHS), yamlish)
def test_fuzzed_value_in_valid_recipe(key_path, value):
    data = {"version": 1, "projections": {"semantic": {"layers": [8, 16, 4], "training": {"seed": 1}}}}
    data = copy.deepcopy(data)
    node = data
    for part in key_path[:-1]:
        node = node[part]
    node[key_path[-1]] = value
    _outcome(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200) | st.sampled_from([PATINA, PATINA[:40], PATINA + "  x: [\n", "a: 1999-02-30"]))
def test_load_recipe_of_arbitrary_text(tmp_path, text):
    path = tmp_path / "oxidize.yaml"
    path.write_text(text, encoding="utf-8", newline="")
    try:
        assert isinstance(load_recipe(path, "demo"), Recipe)
    except RecipeError as exc:
        assert exc.path == path and str(exc).startswith(str(path))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
