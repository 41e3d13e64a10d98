"""Int8 kernels for int8-stored weights (oxidize/embed/int8.py): the rewrite, the encoder's one text
per run, the fingerprint and the recipe key ``embedding_int8``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from oxidize.embed.encoder import Encoder
from oxidize.embed.int8 import cpu_has_int8_dot, int8_matmul_model
from oxidize.embed.models import ModelSpec, ResolvedModel, fingerprint, resolve_model
from tiny_model import make_onnx, make_tiny_model

#: This machine's answer (the tests below pretend yes, except where they run doit itself).
THIS_CPU_HAS_INT8_DOT = cpu_has_int8_dot()
TEXTS = ["the cat sat on the mat", "dog", "build the cache of the model embedding vector",
         "", "fix bug in sqlite test", "red blue green rust python onnx doit fast slow",
         "the cat sat on the mat"]


@pytest.fixture(autouse=True)
def vnni_cpu(monkeypatch):
    """Every test here runs as on a CPU with int8 dot products (this machine's kind), so
    that it means the same on any machine; the fallback has a test of its own."""
    import oxidize.embed.int8

    monkeypatch.setattr(oxidize.embed.int8, "cpu_has_int8_dot", lambda: True)


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("int8") / "model", dim=16, int8_weights=True)


def _model(d: Path, int8: bool = True) -> ResolvedModel:
    return ResolvedModel(ModelSpec(name="tiny", dim=None, int8_matmul=int8), d / "model.onnx",
                         d / "tokenizer.json", "test")


def _ops(model_bytes: bytes) -> list[str]:
    return [node.op_type for node in onnx.load_from_string(model_bytes).graph.node]


def test_int8_product_is_rewritten_and_the_file_kept(int8_dir):
    before = (int8_dir / "model.onnx").read_bytes()
    graph, count = int8_matmul_model(int8_dir / "model.onnx")
    assert count == 1
    ops = _ops(graph)
    assert "DynamicQuantizeMatMul" in ops and "MatMul" not in ops
    assert "Cast" in ops  # the attention mask's Cast stays; the weight's is gone
    assert ops.count("Cast") == _ops(before).count("Cast") - 1
    # the bias is added by the kernel: its Add is gone
    assert ops.count("Add") == _ops(before).count("Add") - 1
    (node,) = [n for n in onnx.load_from_string(graph).graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert list(node.input)[3:] == ["", "W_bias"] and list(node.output) == ["h_bias"]
    assert (int8_dir / "model.onnx").read_bytes() == before


def test_bias_used_elsewhere_is_not_folded(tmp_path):
    model = make_onnx(dim=8, int8_weights=True)
    model.graph.output.append(helper.make_tensor_value_info("h_int8", TensorProto.FLOAT, None))
    onnx.save(model, str(tmp_path / "model.onnx"))
    graph, count = int8_matmul_model(tmp_path / "model.onnx")
    (node,) = [n for n in onnx.load_from_string(graph).graph.node if n.op_type == "DynamicQuantizeMatMul"]
    assert count == 1 and len(node.input) == 3 and list(node.output) == ["h_int8"]
    assert _ops(graph).count("Add") == _ops(model.SerializeToString()).count("Add")


def test_weights_in_a_separate_file_are_read(tmp_path):
    """A large export keeps its weights in a second file; the scales are read from there."""
    model = make_onnx(dim=8, int8_weights=True)
    onnx.save(model, str(tmp_path / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.data", size_threshold=0)
    graph, count = int8_matmul_model(tmp_path / "model.onnx")
    assert count == 1
    inline = onnx.load_from_string(graph)
    assert all(init.data_location != TensorProto.EXTERNAL for init in inline.graph.initializer)


def test_float_model_is_left_alone(tiny_model_dir):
    assert int8_matmul_model(tiny_model_dir / "model.onnx") == (None, 0)


def test_shared_int8_weight_keeps_its_cast(tmp_path):
    """A Cast that also feeds something else stays; the product is still rewritten."""
    model = make_onnx(dim=8, int8_weights=True)
    extra = helper.make_node("ReduceSum", ["W_float"], ["w_sum"], keepdims=0)
    model.graph.node.append(extra)
    model.graph.output.append(helper.make_tensor_value_info("w_sum", TensorProto.FLOAT, []))
    onnx.save(model, str(tmp_path / "model.onnx"))
    graph, count = int8_matmul_model(tmp_path / "model.onnx")
    assert count == 1 and _ops(graph).count("Cast") == _ops(model.SerializeToString()).count("Cast")


def test_scale_per_matrix_is_accepted_and_other_scales_are_not(tmp_path):
    model = make_onnx(dim=8, int8_weights=True)
    scale = next(i for i in model.graph.initializer if i.name == "W_scale")
    scale.CopyFrom(numpy_helper.from_array(np.array([[0.01]], dtype=np.float32), "W_scale"))
    onnx.save(model, str(tmp_path / "model.onnx"))
    graph, count = int8_matmul_model(tmp_path / "model.onnx")
    assert count == 1
    # a scale per row (not per output column) is not a form the int8 kernel takes
    scale.CopyFrom(numpy_helper.from_array(np.full((8, 1), 0.01, dtype=np.float32), "W_scale"))
    onnx.save(model, str(tmp_path / "model.onnx"))
    assert int8_matmul_model(tmp_path / "model.onnx") == (None, 0)


def test_encoder_runs_int8_one_text_at_a_time(int8_dir):
    enc = Encoder(_model(int8_dir), batch_size=4)
    assert enc.int8_matmuls == 1 and enc.rows_per_run == 1
    batched = enc.encode(TEXTS)
    alone = np.stack([enc.encode([text])[0] for text in TEXTS])
    # one text per run: the activations' int8 range is the text's own, so bytes are equal
    np.testing.assert_array_equal(batched, alone)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)


def test_cpu_without_int8_dot_products_runs_float32(int8_dir, monkeypatch):
    import oxidize.embed.int8

    monkeypatch.setattr(oxidize.embed.int8, "cpu_has_int8_dot", lambda: False)
    enc = Encoder(_model(int8_dir), batch_size=4)
    assert enc.int8_matmuls == 0 and enc.rows_per_run == 4
    np.testing.assert_array_equal(enc.encode(TEXTS),
                                  Encoder(_model(int8_dir, int8=False), batch_size=4).encode(TEXTS))


def test_int8_vectors_are_close_to_float_but_not_equal(int8_dir):
    float_enc = Encoder(_model(int8_dir, int8=False), batch_size=4)
    assert float_enc.int8_matmuls == 0 and float_enc.rows_per_run == 4
    exact = float_enc.encode(TEXTS)
    int8 = Encoder(_model(int8_dir)).encode(TEXTS)
    cosine = np.sum(exact * int8, axis=1)
    assert cosine.min() > 0.99, cosine
    assert not np.array_equal(exact, int8), "the int8 kernels were not used"


def test_int8_graph_cache_round_trip(int8_dir, tmp_path):
    expected = Encoder(_model(int8_dir)).encode(TEXTS)
    saved = Encoder(_model(int8_dir), graph_cache_dir=tmp_path, model_fp="fp")
    cached = Encoder(_model(int8_dir), graph_cache_dir=tmp_path, model_fp="fp")
    assert (saved.graph_source, cached.graph_source) == ("saved", "cached")
    assert cached.int8_matmuls == 1 and cached.rows_per_run == 1
    np.testing.assert_array_equal(cached.encode(TEXTS), expected)


def test_garbage_model_is_a_model_error_with_int8_on(tmp_path):
    from oxidize.errors import ModelError

    make_tiny_model(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="is not a loadable ONNX model"):
        Encoder(_model(tmp_path))


def test_fingerprint_depends_on_the_setting(int8_dir):
    on = resolve_model("tiny", int8_dir)
    off = resolve_model("tiny", int8_dir, int8_matmul=False)
    assert on.spec.int8_matmul and not off.spec.int8_matmul
    assert fingerprint(on) != fingerprint(off)
    assert fingerprint(on) == fingerprint(resolve_model("tiny", int8_dir, int8_matmul=True))


def test_recipe_key_is_checked_and_reaches_the_model():
    from oxidize.errors import RecipeError
    from oxidize.recipe import parse_recipe

    path = Path("/p/recipes/r/oxidize.yaml")
    base = {"version": 1, "projections": {"semantic": {}}}
    assert parse_recipe(base, path, "r").embedding_int8 is True
    off = parse_recipe({**base, "embedding_int8": False}, path, "r")
    assert off.model_settings()["embedding_int8"] is False
    with pytest.raises(RecipeError) as info:
        parse_recipe({**base, "embedding_int8": "yes"}, path, "r")
    assert info.value.key == "embedding_int8" and "expected true or false" in str(info.value)


def test_switching_int8_off_rebuilds_model_and_embeddings_only(tmp_path):
    from project_factory import make_project
    from test_stale import executed, run

    root = make_project(tmp_path / "p")
    make_tiny_model(root / "model", dim=8, int8_weights=True)
    run(root)
    embeddings = (root / "build/a/semantic/embeddings.npy").read_bytes()
    recipe = root / "recipes/a/oxidize.yaml"
    recipe.write_text(recipe.read_text().replace("embedding_model: tiny\n",
                                                 "embedding_model: tiny\nembedding_int8: false\n"))
    proc = run(root, "stale", "--check", expect=1)
    assert "embedding_int8" in proc.stdout
    ran = executed(run(root))
    assert {"a:model", "a:semantic.embed", "a:other.embed"} <= ran
    assert not any(name.startswith("b:") for name in ran)
    assert not any(name.endswith(".pairs") for name in ran)
    if THIS_CPU_HAS_INT8_DOT:  # (elsewhere both settings run the float32 graph)
        assert (root / "build/a/semantic/embeddings.npy").read_bytes() != embeddings


def test_a_model_quantised_by_its_author_runs_one_text_at_a_time(tmp_path):
    """patina's model_quantized.onnx is onnxruntime's quantize_dynamic output: its activations'
    int8 range spans the run, so batched vectors would depend on their neighbours."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from oxidize.embed.int8 import dynamic_quantized_ops

    directory = make_tiny_model(tmp_path / "m", dim=16)
    onnx.save(make_onnx(dim=16, dense=True), str(tmp_path / "dense.onnx"))
    quantize_dynamic(str(tmp_path / "dense.onnx"), str(directory / "model.onnx"),
                     weight_type=QuantType.QInt8)
    assert dynamic_quantized_ops(directory / "model.onnx") >= 1
    assert dynamic_quantized_ops(tmp_path / "dense.onnx") == 0
    texts = TEXTS + ["the the the the cache cache model model embedding vector recipe red blue green"]
    for int8 in (True, False):  # the author's quantisation does not depend on oxidize's setting
        enc = Encoder(_model(directory, int8=int8), batch_size=4)
        assert enc.rows_per_run == 1
        np.testing.assert_array_equal(enc.encode(texts), np.stack([enc.encode([t])[0] for t in texts]))
    cached = Encoder(_model(directory), graph_cache_dir=tmp_path / "g", model_fp="fp")
    again = Encoder(_model(directory), graph_cache_dir=tmp_path / "g", model_fp="fp")
    assert again.graph_source == "cached" and again.rows_per_run == 1 == cached.rows_per_run
