"""A tiny, deterministic embedding model for tests: ``model.onnx`` + ``tokenizer.json``.

The graph mimics a transformer's contract without its cost::

    hidden[b, i] = E[input_ids[b, i]] + P[i] + T[token_type_ids[b, i]]
                   + tanh(masked mean over j of E[input_ids[b, j]])

The last term mixes tokens across the sequence *through the attention mask*, so feeding
padding without a mask (or a wrong mask) changes the result, as in a real model; right
padding leaves the real tokens' positions unchanged. The tokenizer is a WordLevel model
over a small vocabulary with ``[PAD] [UNK] [CLS] [SEP]``, a lowercase normaliser, a
whitespace pre-tokenizer and a ``[CLS] $A [SEP]`` post-processor.

Use it with ``resolve_model("tiny", model_dir=make_tiny_model(dir))`` (a custom model: its
dimension is read from the ONNX output) or through ``$OXIDIZE_MODELS/tiny/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
WORDS = (
    "the a an of to and in is it for on with as this that was be by at from or "
    "build cache model embedding vector recipe projection event log session goal work "
    "decision pattern observation git commit file test fix bug add remove refactor "
    "train weights loss epoch batch token text query passage : , . cat dog sat mat "
    "rust python sqlite onnx doit fast slow red blue green"
).split()
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
MAX_POSITIONS = 64


def make_tokenizer() -> Tokenizer:
    """The WordLevel tokenizer of the tiny model (no padding, no truncation configured)."""
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])])
    return tok


def make_onnx(dim: int = 8, with_token_type_ids: bool = True, seed: int = 0,
              pooled_output: bool = False, int8_weights: bool = False,
              dense: bool = False) -> onnx.ModelProto:
    """The tiny graph. ``pooled_output=True`` gives a rank-2 output (a broken model for tests).

    ``int8_weights=True`` ends it with a ``[dim, dim]`` matrix product whose weights are
    stored as int8 with a scale per column, plus a bias,
    ``Add(MatMul(h, Mul(Cast(W_int8), scale)), bias)`` — the form of the default model's
    products that :mod:`oxidize.embed.int8` runs on int8 kernels.
    """
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((len(VOCAB), dim)).astype(np.float32)
    pos = (0.1 * rng.standard_normal((MAX_POSITIONS, dim))).astype(np.float32)
    typ = (0.1 * rng.standard_normal((2, dim))).astype(np.float32)
    inits = [numpy_helper.from_array(emb, "E"), numpy_helper.from_array(pos, "P"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
             numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_s"),
             numpy_helper.from_array(np.array(1, dtype=np.int64), "one_s"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["tok"]),               # (b, s, d)
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "one_s"], ["seqlen"], axis=0),    # scalar
        helper.make_node("Range", ["zero_s", "seqlen", "one_s"], ["positions"]),
        helper.make_node("Gather", ["P", "positions"], ["pos"]),               # (s, d)
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),          # (b, s, 1)
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["tsum"], keepdims=1),  # (b, 1, d)
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["msum"], keepdims=1),   # (b, 1, 1)
        helper.make_node("Div", ["tsum", "msum"], ["ctx_raw"]),
        helper.make_node("Tanh", ["ctx_raw"], ["ctx"]),
        helper.make_node("Add", ["tok", "pos"], ["h1"]),
    ]
    last = "h1"
    if with_token_type_ids:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64,
                                                    ["batch", "seq"]))
        inits.append(numpy_helper.from_array(typ, "T"))
        nodes += [helper.make_node("Gather", ["T", "token_type_ids"], ["typ"]),
                  helper.make_node("Add", [last, "typ"], ["h2"])]
        last = "h2"
    if int8_weights:
        w_int8 = rng.integers(-127, 128, size=(dim, dim)).astype(np.int8)
        scale = (rng.uniform(0.5, 1.5, size=(1, dim)) / 127).astype(np.float32)
        bias = (0.1 * rng.standard_normal(dim)).astype(np.float32)
        inits += [numpy_helper.from_array(w_int8, "W_int8"), numpy_helper.from_array(scale, "W_scale"),
                  numpy_helper.from_array(bias, "W_bias")]
        nodes += [helper.make_node("Cast", ["W_int8"], ["W_float"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["W_float", "W_scale"], ["W"]),
                  helper.make_node("MatMul", [last, "W"], ["h_int8"]),
                  helper.make_node("Add", ["h_int8", "W_bias"], ["h_bias"])]
        last = "h_bias"
    if dense:
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32), "W_dense"))
        nodes.append(helper.make_node("MatMul", [last, "W_dense"], ["h_dense"]))
        last = "h_dense"
    if pooled_output:
        nodes += [helper.make_node("Add", [last, "ctx"], ["h3"]),
                  helper.make_node("ReduceMean", ["h3"], ["last_hidden_state"], axes=[1], keepdims=0)]
        out_shape = ["batch", dim]
    else:
        nodes.append(helper.make_node("Add", [last, "ctx"], ["last_hidden_state"]))
        out_shape = ["batch", "seq", dim]
    output = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "oxidize-tiny", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="oxidize-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def make_tiny_model(dir: Path, dim: int = 8, with_token_type_ids: bool = True,
                    int8_weights: bool = False) -> Path:
    """Write ``model.onnx`` and ``tokenizer.json`` of the tiny model into ``dir``; return ``dir``.

    Deterministic: the same arguments give byte-identical files (and so the same fingerprint).
    """
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    onnx.save(make_onnx(dim=dim, with_token_type_ids=with_token_type_ids, int8_weights=int8_weights),
              str(dir / "model.onnx"))
    make_tokenizer().save(str(dir / "tokenizer.json"))
    return dir
