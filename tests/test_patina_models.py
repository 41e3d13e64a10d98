"""Models where patina keeps them: ~/.patina/cache/models/<name>/ and <project>/resources/models/<name>/,
with model.onnx or model_quantized.onnx, and patina's registry names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from oxidize.embed.models import REGISTRY, fingerprint, resolve_model
from oxidize.errors import ModelError


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("OXIDIZE_MODELS", "OXIDIZE_MODEL_DIR_E5_BASE_V2"):
        monkeypatch.delenv(var, raising=False)
    return home


def _place(tiny_model_dir: Path, where: Path, graph_name: str) -> Path:
    where.mkdir(parents=True)
    shutil.copy(tiny_model_dir / "model.onnx", where / graph_name)
    shutil.copy(tiny_model_dir / "tokenizer.json", where / "tokenizer.json")
    return where


def test_patinas_cache_with_a_quantized_graph(home, tiny_model_dir, tmp_path):
    where = _place(tiny_model_dir, home / ".patina/cache/models/e5-base-v2", "model_quantized.onnx")
    found = resolve_model("e5-base-v2", project_root=tmp_path)
    assert found.model_file == where / "model_quantized.onnx"
    assert found.spec.query_prefix == "query: " and found.spec.passage_prefix == "passage: "
    assert "patina's model cache" in found.source
    assert fingerprint(found) == fingerprint(resolve_model("e5-base-v2", where))  # same files, same print


def test_the_projects_resources_models(home, tiny_model_dir, tmp_path):
    project = tmp_path / "checkout"
    where = _place(tiny_model_dir, project / "resources/models/gte-base", "model.onnx")
    found = resolve_model("gte-base", project_root=project)
    assert found.model_file == where / "model.onnx" and "resources/models" in found.source


def test_patinas_registry_names_and_prefixes():
    bge = REGISTRY["bge-small-en-v1-5"]
    assert bge.dim == 384 and bge.query_prefix.startswith("Represent this sentence") and bge.passage_prefix == ""
    assert REGISTRY["nomic-embed-text-v1-5"].passage_prefix == "search_document: "
    assert REGISTRY["bge-base-en-v1-5"].dim == REGISTRY["gte-base"].dim == 768
    assert all(spec.pooling == "mean" and spec.normalize for spec in REGISTRY.values())


def test_not_found_lists_patinas_places(home, tmp_path):
    with pytest.raises(ModelError) as info:
        resolve_model("e5-base-v2", project_root=tmp_path)
    message = str(info.value)
    assert f"patina's model cache: {home}/.patina/cache/models/e5-base-v2 (no such directory)" in message
    assert f"the project's resources/models: {tmp_path}/resources/models/e5-base-v2" in message


def test_a_directory_with_neither_graph_is_one_clear_error(home, tiny_model_dir, tmp_path):
    where = home / ".patina/cache/models/e5-base-v2"
    where.mkdir(parents=True)
    shutil.copy(tiny_model_dir / "tokenizer.json", where / "tokenizer.json")
    with pytest.raises(ModelError, match=r"has no model.onnx \(nor model_quantized.onnx\)"):
        resolve_model("e5-base-v2", project_root=tmp_path)
