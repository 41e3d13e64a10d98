"""Where the embedding time goes: the default model's embed step taken apart.

Run: ``python -m benchmarks.bench_embed_time [--texts N] [--quick]``.

On the session texts of ``shared/data/patina-dev.db`` (as ``bench_embed``), with oxidize's
own :class:`~oxidize.embed.encoder.Encoder` and the default model (all-MiniLM-L6-v2, int8
weights on onnxruntime's int8 kernels, one text per run), each part timed on its own:

* **tokenizer**: ``encode_batch`` of every text (what ``Encoder.encode`` does first);
* **inference**: ``session.run`` alone on each text's tokens, one thread, one after the
  other: the arithmetic plus onnxruntime's cost per call, and that cost alone (a run on a
  2-token text, the smallest there is), times the number of runs;
* **the rest**: padding arrays, pooling, normalising, ordering (the encoder's total on
  one thread minus the two above);
* **threads**: the encoder on 1 and on 2 threads (each thread its own runs);
* **float32 batches**: the same graph with float32 products in sorted batches of 32
  (``embedding_int8: false``), and how many of its token slots are padding;
* **the machine's int8 rate**: a large ``MatMulInteger`` (onnxruntime's int8 kernel, one
  thread) in multiply-adds per second, against what the model's products need per token
  (6 layers × (4·384² + 2·384·1536) ≈ 10.6 M multiply-adds a token, plus attention scores).

Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse

from benchmarks._common import DATA_DB, header, median_time
from benchmarks.bench_embed import load_texts


def timed(func, repeats: int = 3) -> float:
    """Median of ``repeats`` runs (the callers warm up themselves)."""
    return median_time(func, repeats, warmup=0)[0]


def int8_rate() -> float:
    """Multiply-adds per second of onnxruntime's MatMulInteger, one thread (512×384 · 384×1536)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m, k, n = 512, 384, 1536
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [k, n])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.integers(0, 255, (m, k), dtype=np.uint8), "b": rng.integers(-127, 127, (k, n), dtype=np.int8)}
    session.run(None, feed)
    seconds = timed(lambda: [session.run(None, feed) for _ in range(20)]) / 20
    del onnx
    return m * k * n / seconds


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="300 texts")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts = min(args.texts, 300)
    header("Where the embedding time goes (default model, int8 kernels)")
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent")
        return {}
    import numpy as np

    from oxidize.embed import models
    from oxidize.embed.encoder import Encoder

    texts = load_texts(args.texts)
    resolved = models.resolve_model(models.DEFAULT_MODEL)
    one, two = Encoder(resolved, threads=1), Encoder(resolved, threads=2)
    floats = Encoder(models.resolve_model(models.DEFAULT_MODEL, int8_matmul=False), threads=2)
    for encoder in (one, two, floats):
        encoder.encode(texts[:32])
    prefixed = [one.spec.passage_prefix + t for t in texts]
    encodings = one._tokenize(prefixed)
    tokens = np.array([len(e.ids) for e in encodings])
    n = len(texts)
    print(f"{n:,} texts, {tokens.sum():,} tokens (mean {tokens.mean():.1f}, max {tokens.max()}); "
          f"{one.int8_matmuls} products on int8 kernels, {one.rows_per_run} text per run")

    tokenize = timed(lambda: one._tokenize(prefixed))
    session, output, inputs = one._session, one._output, one._inputs

    def feed(enc):
        arrays = {"input_ids": np.array([enc.ids]), "attention_mask": np.array([enc.attention_mask]),
                  "token_type_ids": np.array([enc.type_ids])}
        return {name: arrays[name].astype(dtype) for name, dtype in inputs}

    feeds = [feed(e) for e in encodings]
    inference = timed(lambda: [session.run([output], f) for f in feeds])
    tiny = feed(one._tokenize([""])[0])
    per_call = timed(lambda: [session.run([output], tiny) for _ in range(500)]) / 500
    total_one = timed(lambda: one.encode(texts))
    total_two = timed(lambda: two.encode(texts))
    total_float = timed(lambda: floats.encode(texts))
    order = np.sort(tokens)[::-1]
    padded = sum(int(order[i:i + 32].max()) * len(order[i:i + 32]) for i in range(0, n, 32))
    rest = total_one - tokenize - inference
    rate = int8_rate()
    macs_per_token = 10.6e6  # 6 × (4·384² + 2·384·1536)
    achieved = tokens.sum() * macs_per_token / inference

    def row(name: str, seconds: float, note: str = "") -> None:
        print(f"  {name:<44} {seconds:7.2f} s  {seconds / total_one:6.1%}  {note}")

    print(f"one thread, {n:,} texts: Encoder.encode {total_one:.2f} s ({n / total_one:.0f} texts/s), of which")
    row("tokenizer (encode_batch)", tokenize)
    row("inference (session.run, text by text)", inference,
        f"{inference / tokens.sum() * 1e6:.0f} µs a token")
    row("  … of it the cost of a run as such", per_call * n, f"{per_call * 1e3:.2f} ms a run of the shortest text × {n:,}")
    row("the rest (arrays, pooling, order)", rest)
    print(f"threads: 1 → {n / total_one:.0f} texts/s, 2 → {n / total_two:.0f} texts/s "
          f"({total_one / total_two:.2f}× on 2 cores)")
    print(f"float32 products in sorted batches of 32 (2 threads): {n / total_float:.0f} texts/s; "
          f"{1 - tokens.sum() / padded:.1%} of its token slots are padding")
    print(f"int8 kernel rate (MatMulInteger, 1 thread): {rate / 1e9:.1f} G multiply-adds/s; the model's "
          f"products ran at {achieved / 1e9:.1f} G/s = {achieved / rate:.0%} of it")
    return {"texts_per_s_1": n / total_one, "texts_per_s_2": n / total_two, "tokenize_s": tokenize,
            "inference_s": inference, "per_call_ms": per_call * 1e3, "rest_s": rest,
            "int8_rate": rate, "achieved": achieved}


if __name__ == "__main__":
    main()
