"""The projection as a thing of its own: its weights, its forward pass, its files.

Training (:mod:`oxidize.train`) makes one; evaluation, the search index, the query command
and the exports (``projection.onnx``, patina's files) use one. They all meet here, so there
is exactly one forward pass and one weights format. Nothing heavy is imported at module level
(numpy and safetensors load inside the functions): the query command's module imports this.

Model: ``h = relu(W1 x + b1)``, ``z = W0 x + W2 h + b2``, ``y = z / ||z||`` with
``w0 [out, in]`` (the linear path), ``w1 [hidden, in]``, ``b1 [hidden]``, ``w2 [out, hidden]``,
``b2 [out]``, float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from oxidize import __version__
from oxidize.errors import TrainingError

if TYPE_CHECKING:
    import numpy as np

WEIGHT_KEYS = ("w1", "b1", "w2", "b2", "w0")
#: The single safetensors metadata key; its value is canonical JSON. (safetensors stores
#: metadata in a hash map whose order changes from process to process, so several keys
#: would make the file's bytes differ between identical builds.)
METADATA_KEY = "oxidize"
#: Rows per block in :func:`project`.
_PROJECT_ROWS = 2048


def project(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Apply the projection in NumPy: ``[n, in]`` (or ``[in]``) → unit rows ``[n, out]``.

    ``y = normalize(w0 x + w2 relu(w1 x + b1) + b2)``; weights without ``w0`` (files of
    oxidize 0.1) are the plain MLP. An all-zero ``z`` stays zero (no NaN).
    """
    import numpy as np

    w1, w2 = weights["w1"], weights["w2"]
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] <= _PROJECT_ROWS:
        return _project_rows(weights, x)
    # A block of rows at a time, so that the hidden layer's temporaries stay small.
    out = np.empty((x.shape[0], w2.shape[0]), dtype=np.result_type(w1.dtype, w2.dtype))
    for lo in range(0, x.shape[0], _PROJECT_ROWS):
        out[lo:lo + _PROJECT_ROWS] = _project_rows(weights, x[lo:lo + _PROJECT_ROWS])
    return out


def _project_rows(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    import numpy as np

    w1, b1, w2, b2 = (weights[k] for k in ("w1", "b1", "w2", "b2"))
    x = np.asarray(x, dtype=w1.dtype)
    h = np.maximum(x @ w1.T + b1, 0)  # (n, hidden)
    z = h @ w2.T + b2  # (n, out)
    if weights.get("w0") is not None:
        z = z + x @ weights["w0"].T  # (n, out): the linear path
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    return z / np.maximum(norm, 1e-12)


def layers(weights: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """``(in, hidden, out)`` read from the shapes."""
    hidden, in_dim = weights["w1"].shape
    return int(in_dim), int(hidden), int(weights["w2"].shape[0])


def write_weights(path: Path | str, weights: dict[str, np.ndarray],
                  layer_sizes: list[int] | None = None) -> dict[str, list[int]]:
    """Write ``weights.safetensors`` atomically; return the tensors' shapes.

    ``w0, w1, b1, w2, b2`` as float32 and, as metadata, one key ``"oxidize"`` with JSON
    (format, oxidize version, layers — ``layer_sizes``, else read from the shapes):
    same weights ⇒ same bytes.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from oxidize.util.atomic import atomic_path

    tensors = {k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in WEIGHT_KEYS}
    meta = {"format": "oxidize-mlp", "oxidize_version": __version__,
            "layers": list(layer_sizes or layers(tensors)), "activation": "relu",
            "output": "l2-normalised"}
    with atomic_path(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return {k: list(v.shape) for k, v in tensors.items()}


def load_weights(path: Path | str, data: bytes | None = None) -> dict[str, np.ndarray]:
    """Read ``w0, w1, b1, w2, b2`` (float32) from a file written by :func:`write_weights`
    (or from ``data``, that file's bytes as kept in a search index; ``path`` names it).

    A file of oxidize 0.1 has no ``w0`` (no linear path); it reads as ``w0 = 0``.
    """
    import numpy as np
    from safetensors.numpy import load, load_file

    path = Path(path)
    if data is None and not path.is_file():
        raise TrainingError(f"{path}: no weights file; run the projection's train task")
    try:
        tensors = load_file(str(path)) if data is None else load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise TrainingError(f"{path}: not a readable safetensors file ({exc}); delete it "
                            f"and rebuild") from exc
    missing = [k for k in WEIGHT_KEYS if k not in tensors and k != "w0"]
    if missing:
        raise TrainingError(f"{path}: missing tensors {', '.join(missing)}; delete it and rebuild")
    w = {k: tensors[k] for k in WEIGHT_KEYS if k in tensors}
    hidden, in_dim = w["w1"].shape if w["w1"].ndim == 2 else (None, None)
    if (w["w1"].ndim != 2 or w["w2"].ndim != 2 or w["b1"].shape != (hidden,)
            or w["w2"].shape[1] != hidden or w["b2"].shape != (w["w2"].shape[0],)
            or ("w0" in w and w["w0"].shape != (w["w2"].shape[0], in_dim))):
        raise TrainingError(f"{path}: inconsistent weight shapes "
                            f"{ {k: v.shape for k, v in w.items()} }; delete it and rebuild")
    if "w0" not in w:
        w["w0"] = np.zeros((w["w2"].shape[0], in_dim), np.float32)
    return w


#: The ONNX contract of ``projection.onnx`` (docs/architecture.md): opset and IR version are
#: pinned low enough for patina's Rust side (onnxruntime through ``ort`` 2.0).
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
ONNX_INPUT = "base"
ONNX_OUTPUT = "projected"


def export_onnx(path: Path | str, weights: dict[str, np.ndarray]) -> None:
    """Write ``projection.onnx`` atomically: input ``base`` float32 ``[n, in]``, output
    ``projected`` float32 ``[n, out]``, L2-normalised, the same arithmetic as :func:`project`
    (an all-zero ``z`` gives a zero row, not NaN). Built with the ``onnx`` helper API."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from oxidize.util.atomic import atomic_path

    in_dim, hidden, out_dim = layers(weights)
    w = {k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in WEIGHT_KEYS if k in weights}
    inits = [numpy_helper.from_array(np.ascontiguousarray(w["w1"].T), "w1_t"),
             numpy_helper.from_array(w["b1"], "b1"),
             numpy_helper.from_array(np.ascontiguousarray(w["w2"].T), "w2_t"),
             numpy_helper.from_array(w["b2"], "b2"),
             numpy_helper.from_array(np.array([1e-12], np.float32), "eps")]
    nodes = [helper.make_node("MatMul", [ONNX_INPUT, "w1_t"], ["h_lin"]),
             helper.make_node("Add", ["h_lin", "b1"], ["h_pre"]),
             helper.make_node("Relu", ["h_pre"], ["h"]),
             helper.make_node("MatMul", ["h", "w2_t"], ["z_mlp"]),
             helper.make_node("Add", ["z_mlp", "b2"], ["z_res"])]
    z = "z_res"
    if "w0" in w:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w["w0"].T), "w0_t"))
        nodes += [helper.make_node("MatMul", [ONNX_INPUT, "w0_t"], ["z_lin"]),
                  helper.make_node("Add", ["z_res", "z_lin"], ["z"])]
        z = "z"
    nodes += [helper.make_node("ReduceL2", [z], ["norm"], axes=[1], keepdims=1),
              helper.make_node("Max", ["norm", "eps"], ["safe_norm"]),
              helper.make_node("Div", [z, "safe_norm"], [ONNX_OUTPUT])]
    graph = helper.make_graph(
        nodes, "oxidize_projection",
        [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, ["n", in_dim])],
        [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, ["n", out_dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="oxidize", producer_version=__version__)
    model.ir_version = ONNX_IR_VERSION
    model.doc_string = json.dumps({"layers": [in_dim, hidden, out_dim],
                                   "model": "normalize(w0 x + w2 relu(w1 x + b1) + b2)"})
    onnx.checker.check_model(model)
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(model.SerializeToString())
