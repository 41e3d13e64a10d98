"""The ONNX encoder: sorted per-batch padding is invisible, pooling, prefixes, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from oxidize.embed.encoder import MAX_WORKERS, Encoder
from oxidize.embed.sessions import graph_key
from oxidize.errors import ModelError
from oxidize.embed.models import ModelSpec, ResolvedModel, fingerprint, resolve_model
from tiny_model import make_onnx, make_tiny_model

TEXTS = [
    "the cat sat on the mat",
    "dog",
    "build the cache of the model embedding vector for this recipe projection",
    "",
    "fix bug in sqlite test",
    "red blue green red blue green red blue green rust python onnx doit fast slow",
    "a",
    "query passage text token",
    "the cat sat on the mat",  # a duplicate
    "unknown words map to unk",
]


def _tiny(d, dim=None, **settings) -> ResolvedModel:
    return ResolvedModel(ModelSpec(name="tiny", dim=dim, **settings), d / "model.onnx",
                         d / "tokenizer.json", "test")


def test_per_batch_padding_matches_one_at_a_time(tiny_model_dir):
    batched = Encoder(_tiny(tiny_model_dir), batch_size=4).encode(TEXTS)
    single = Encoder(_tiny(tiny_model_dir), batch_size=1)
    one_by_one = np.stack([single.encode([t])[0] for t in TEXTS])
    assert batched.dtype == np.float32 and batched.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6)


def test_padding_really_is_masked(tiny_model_dir):
    """Guard for the test above: the tiny model does mix tokens through the mask."""
    enc = Encoder(_tiny(tiny_model_dir))
    encoding = enc._tokenizer.encode("the cat")
    n = len(encoding.ids)
    ids = np.array([encoding.ids + [0, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "token_type_ids": np.zeros_like(ids)}
    masked = enc._session.run(None, {**feeds, "attention_mask": np.array([[1] * n + [0, 0]])})[0]
    unmasked = enc._session.run(None, {**feeds, "attention_mask": np.ones_like(ids)})[0]
    assert not np.allclose(masked[0, :n], unmasked[0, :n])


def test_unit_norm_and_input_order(tiny_model_dir):
    enc = Encoder(_tiny(tiny_model_dir), batch_size=3)
    vectors = enc.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[8])
    reversed_vectors = enc.encode(TEXTS[::-1])
    np.testing.assert_allclose(reversed_vectors[::-1], vectors, rtol=1e-5, atol=1e-6)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(enc.encode([text])[0], vectors[i], rtol=1e-5, atol=1e-6)


def test_empty_input(tiny_model_dir):
    out = Encoder(_tiny(tiny_model_dir)).encode([])
    assert out.shape == (0, 8) and out.dtype == np.float32


def test_custom_model_dim_read_from_onnx(tmp_path):
    d = make_tiny_model(tmp_path / "m", dim=5)
    enc = Encoder(resolve_model("tiny", model_dir=d))
    assert enc.dim == 5
    assert enc.encode(["the cat"]).shape == (1, 5)


def test_model_without_token_type_ids(tmp_path):
    d = make_tiny_model(tmp_path / "m", with_token_type_ids=False)
    enc = Encoder(_tiny(d, dim=8), batch_size=4)
    assert [i.name for i in enc._session.get_inputs()] == ["input_ids", "attention_mask"]
    vectors = enc.encode(TEXTS)
    single = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(vectors, single, rtol=1e-5, atol=1e-6)


def test_prefix_is_applied(tiny_model_dir):
    e5 = Encoder(_tiny(tiny_model_dir, passage_prefix="passage: ", query_prefix="query: "))
    plain = Encoder(_tiny(tiny_model_dir))
    text = ["the cat sat"]
    np.testing.assert_allclose(e5.encode(text), plain.encode(["passage: the cat sat"]), atol=1e-6)
    np.testing.assert_allclose(e5.encode(text, kind="query"), plain.encode(["query: the cat sat"]),
                               atol=1e-6)
    assert not np.allclose(e5.encode(text), plain.encode(text))
    with pytest.raises(ValueError, match="kind"):
        e5.encode(text, kind="document")


def test_truncation_at_max_length(tiny_model_dir):
    enc = Encoder(_tiny(tiny_model_dir, max_length=6))
    long = "the cat sat on the mat and the dog sat on the cat"
    # [CLS] + 4 words + [SEP] = 6 tokens: the rest of the text is cut off.
    np.testing.assert_allclose(enc.encode([long]), enc.encode(["the cat sat on"]), atol=1e-6)


def test_progress_is_told_after_each_batch(tiny_model_dir):
    class Recorder:
        def __init__(self):
            self.seen = []

        def update(self, done, extra=""):
            self.seen.append(done)

    rec = Recorder()
    Encoder(_tiny(tiny_model_dir), batch_size=4).encode(TEXTS, progress=rec)
    assert rec.seen == [4, 8, 10]


def test_batches_in_parallel_give_the_same_vectors(tiny_model_dir):
    texts = TEXTS * 7
    one = Encoder(_tiny(tiny_model_dir), threads=1, batch_size=3)
    assert one.workers == 1
    reference = one.encode(texts)
    for threads in (2, MAX_WORKERS):  # one onnxruntime thread per batch: the same rounding
        enc = Encoder(_tiny(tiny_model_dir), threads=threads, batch_size=3)
        assert enc.workers == threads
        np.testing.assert_array_equal(enc.encode(texts), reference)
    many = Encoder(_tiny(tiny_model_dir), threads=4 * MAX_WORKERS, batch_size=3)
    assert many.workers == MAX_WORKERS  # and 4 onnxruntime threads per batch
    np.testing.assert_allclose(many.encode(texts), reference, rtol=0, atol=1e-6)


def test_an_error_in_a_parallel_batch_is_raised(tiny_model_dir, monkeypatch):
    enc = Encoder(_tiny(tiny_model_dir), threads=2, batch_size=2)
    real_run, calls = enc._run, []

    def run(encodings):
        calls.append(len(encodings))
        if len(calls) == 3:
            raise ModelError("boom")
        return real_run(encodings)

    monkeypatch.setattr(enc, "_run", run)
    with pytest.raises(ModelError, match="boom"):
        enc.encode(TEXTS * 5)
    assert len(calls) < 25, "batches queued after the error are dropped"


# --- the optimised-graph cache -------------------------------------------------------------


def test_graph_is_saved_once_then_loaded(tiny_model_dir, tmp_path):
    cache = tmp_path / "onnx"
    plain = Encoder(_tiny(tiny_model_dir)).encode(TEXTS)
    first = Encoder(_tiny(tiny_model_dir), graph_cache_dir=cache, model_fp="fp1")
    assert first.graph_source == "saved"
    entry = cache / graph_key("fp1")
    assert (entry / "model.onnx").is_file() and (entry / "meta.json").is_file()
    assert [p.name for p in cache.iterdir()] == [entry.name], "no temporary left behind"
    second = Encoder(_tiny(tiny_model_dir), graph_cache_dir=cache, model_fp="fp1")
    assert second.graph_source == "cached"
    np.testing.assert_array_equal(first.encode(TEXTS), plain)
    np.testing.assert_array_equal(second.encode(TEXTS), plain)
    assert Encoder(_tiny(tiny_model_dir), graph_cache_dir=cache, model_fp="fp2").graph_source == "saved"


def test_graph_key_covers_model_and_onnxruntime(monkeypatch):
    import oxidize.embed.encoder as encoder_module

    key = graph_key("fp")
    assert graph_key("fp") == key and graph_key("other") != key
    monkeypatch.setattr(encoder_module.ort, "__version__", "0.0.0")
    assert graph_key("fp") != key


def test_graph_fingerprint_computed_when_not_given(tiny_model_dir, tmp_path):
    resolved = _tiny(tiny_model_dir)
    Encoder(resolved, graph_cache_dir=tmp_path)
    assert (tmp_path / graph_key(fingerprint(resolved))).is_dir()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "meta"])
def test_damaged_graph_entry_is_replaced(tiny_model_dir, tmp_path, damage):
    cache = tmp_path / "onnx"
    expected = Encoder(_tiny(tiny_model_dir)).encode(TEXTS)
    Encoder(_tiny(tiny_model_dir), graph_cache_dir=cache, model_fp="fp")
    entry = cache / graph_key("fp")
    graph = entry / "model.onnx"
    if damage == "truncate":
        graph.write_bytes(graph.read_bytes()[:100])
    elif damage == "garbage":  # same size, so only onnxruntime notices
        graph.write_bytes(b"x" * graph.stat().st_size)
    else:
        (entry / "meta.json").write_text("{")
    enc = Encoder(_tiny(tiny_model_dir), graph_cache_dir=cache, model_fp="fp")
    assert enc.graph_source == "saved"
    np.testing.assert_array_equal(enc.encode(TEXTS), expected)
    assert Encoder(_tiny(tiny_model_dir), graph_cache_dir=cache, model_fp="fp").graph_source == "cached"


def test_unusable_graph_cache_dir_is_ignored(tiny_model_dir, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    enc = Encoder(_tiny(tiny_model_dir), graph_cache_dir=not_a_dir, model_fp="fp")
    assert enc.graph_source == "optimised" and enc.encode(["a"]).shape == (1, 8)


def test_old_graphs_and_stale_temporaries_are_removed(tiny_model_dir, tmp_path, monkeypatch):
    import os

    import oxidize.embed.sessions as sessions_module

    monkeypatch.setattr(sessions_module, "GRAPH_KEEP", 2)
    cache = tmp_path / "onnx"
    stale, fresh = cache / ".tmp-killed", cache / ".tmp-running"
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"partial")
    os.utime(stale, (1, 1))
    for i, fp in enumerate(["a", "b", "c"]):
        Encoder(_tiny(tiny_model_dir), graph_cache_dir=cache, model_fp=fp)
        os.utime(cache / graph_key(fp) / "meta.json", (1000 + i, 1000 + i))
    left = {p.name for p in cache.iterdir()}
    assert left == {graph_key("b"), graph_key("c"), ".tmp-running"}


def test_a_bad_model_with_a_graph_cache_is_still_a_model_error(tiny_model_dir, tmp_path):
    (tiny_model_dir / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Encoder(_tiny(tiny_model_dir), graph_cache_dir=tmp_path / "onnx", model_fp="fp")
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == []


def test_not_an_onnx_file(tiny_model_dir):
    (tiny_model_dir / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError) as info:
        Encoder(_tiny(tiny_model_dir))
    assert str(tiny_model_dir / "model.onnx") in str(info.value)
    assert "not a loadable ONNX model" in str(info.value)


def test_not_a_tokenizer_file(tiny_model_dir):
    (tiny_model_dir / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError) as info:
        Encoder(_tiny(tiny_model_dir))
    assert str(tiny_model_dir / "tokenizer.json") in str(info.value)


def test_output_rank_not_3(tiny_model_dir):
    onnx.save(make_onnx(pooled_output=True), str(tiny_model_dir / "model.onnx"))
    with pytest.raises(ModelError) as info:
        Encoder(_tiny(tiny_model_dir))
    msg = str(info.value)
    assert str(tiny_model_dir / "model.onnx") in msg and "rank 2" in msg


def test_dimension_differs_from_spec(tiny_model_dir):
    with pytest.raises(ModelError) as info:
        Encoder(_tiny(tiny_model_dir, dim=384))
    msg = str(info.value)
    assert str(tiny_model_dir / "model.onnx") in msg and "8" in msg and "384" in msg


def test_default_model_for_real():
    enc = Encoder(resolve_model("all-minilm-l6-v2"), batch_size=4)
    assert enc.dim == 384
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.",
             "Quarterly revenue grew by ten percent.", "Refactor the SQLite cache layer.",
             "Clean up the database caching code."]
    vectors = enc.encode(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[3, 4] > sim[3, 2] + 0.2
    single = np.stack([enc.encode([t])[0] for t in texts])
    np.testing.assert_allclose(vectors, single, atol=2e-3)
