"""The ONNX encoder: sorted per-batch padding is invisible, pooling, prefixes, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from oxidize.encoder import Encoder
from oxidize.errors import ModelError
from oxidize.models import ModelSpec, ResolvedModel, resolve_model
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
