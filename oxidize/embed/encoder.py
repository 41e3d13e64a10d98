"""ONNX Runtime inference: texts in, L2-normalised float32 embeddings out.

Why it is shaped this way:

* **Sort by length, pad per batch.** Transformer cost grows with the padded sequence
  length, and most event-log texts are short. Tokenising everything first, sorting by
  token count and padding each batch only to its own longest member wastes almost no
  compute on padding (versus a fixed 128/512). Rows are put back in input order at the end.
* **Padding is invisible to the result.** Padding sits on the right with attention mask 0,
  and pooling averages over the mask only, so a text's vector does not depend on which
  batch it lands in (up to float rounding); the tests compare with one-at-a-time encoding.
* **Batches in parallel, one thread each.** Batches run on ``threads`` Python threads
  (onnxruntime releases the GIL), each inference on a single onnxruntime thread, rather than
  one batch at a time split over all cores. No operator waits at a barrier for a thread the
  scheduler has put aside, so a busy machine (a parallel ``doit -n 2``, another build) costs
  less: on 2 shared cores 157 texts/s against 117 for one 2-thread session, bit-identical
  vectors (a row's result does not depend on how many threads computed it).
* **Int8 kernels for int8 weights.** A model that stores its weights as int8 (the default
  one) has those products rewritten onto onnxruntime's int8 kernels (:mod:`oxidize.embed.int8`,
  about 2× the texts/s); then each text runs on its own, because the activations' int8
  range spans a run's whole input and a text's vector must not depend on its batch.
* **Only declared inputs are fed.** Some exports (E5, DistilBERT) have no
  ``token_type_ids``; the session's input list decides.

* **The optimised graph is cached** (:mod:`oxidize.embed.sessions`).

numpy, onnxruntime and tokenizers are imported at module level: only the embed task
imports this module, never doit's task loading.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from oxidize.errors import ModelError
from oxidize.embed.models import ResolvedModel
from oxidize.util.progress import Progress
from oxidize.embed.sessions import (_create_session, _load_cached_graph, _new_graph_tmp,
                                    _publish_graph, graph_key)

_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}

#: Most batches in flight at once: each holds its activations (for 32 texts of 256 tokens,
#: ~100 MB of attention scores), so memory stays bounded on many-core machines.
MAX_WORKERS = 4



class Encoder:
    """Run one embedding model over many texts.

    Args:
        resolved: the model to run (from :func:`oxidize.embed.models.resolve_model`).
        threads: batches run at once (each on one onnxruntime thread); ``os.cpu_count()``
            when ``None``, at most :data:`MAX_WORKERS` (beyond that, each batch gets
            ``threads // MAX_WORKERS`` onnxruntime threads, bounding memory).
        batch_size: texts per inference call. Measured on 2,000 session texts of a real
            event log (mean 22 tokens) with the default model on 2 cores: sorted per-batch
            padding ran ~230 texts/s at batch 32 or 64 (~105 per CPU-second at 128, ~150 at
            32 on one thread), fixed 128-token padding in input order 22–31 texts/s. 32 is
            the default: never slower, and finer progress and less memory.
        graph_cache_dir: a directory for the optimised graph (``build/.cache/onnx``), or
            ``None`` to optimise in memory on every load (see the module docstring).
        model_fp: the model fingerprint keying the cached graph; computed from the files
            (:func:`oxidize.embed.models.fingerprint`) when ``None``.

    Raises:
        ModelError: ``model.onnx`` is not loadable, its output is not
            ``[batch, seq, dim]``, its dimension differs from the spec, or it needs an input
            oxidize cannot provide; ``tokenizer.json`` is not loadable.
    """

    def __init__(self, resolved: ResolvedModel, threads: int | None = None, batch_size: int = 32,
                 graph_cache_dir: Path | str | None = None, model_fp: str | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.resolved = resolved
        self.spec = resolved.spec
        self.batch_size = batch_size
        #: Where the session's graph came from: ``"optimised"`` (no cache), ``"saved"``
        #: (optimised and written to the cache) or ``"cached"`` (loaded from the cache).
        self.graph_source = "optimised"
        #: Matrix products running on int8 kernels (:mod:`oxidize.embed.int8`); when there are
        #: any, each text runs on its own (see :attr:`rows_per_run`).
        self.int8_matmuls = 0
        threads = max(1, int(threads or os.cpu_count() or 1))
        self.workers = min(threads, MAX_WORKERS)
        self._session = self._load_session(resolved, max(1, threads // self.workers),
                                           graph_cache_dir, model_fp)
        #: Texts per inference: ``batch_size``, or 1 with int8 kernels, whose activation
        #: range spans the whole input (a text's vector must not depend on its batch).
        self.rows_per_run = 1 if self.int8_matmuls else batch_size
        self._tokenizer, self._pad_id = self._load_tokenizer(resolved)
        self._inputs = self._check_inputs()
        self._output, self._dim = self._check_output()

    # --- loading -------------------------------------------------------------------------

    def _load_session(self, resolved: ResolvedModel, threads: int,
                      graph_cache_dir: Path | str | None, model_fp: str | None) -> ort.InferenceSession:
        entry = tmp = None
        if graph_cache_dir is not None:
            if model_fp is None:
                from oxidize.embed.models import fingerprint

                model_fp = fingerprint(resolved)
            entry = Path(graph_cache_dir) / graph_key(model_fp)
            cached = _load_cached_graph(entry, threads)
            if cached is not None:
                session, self.int8_matmuls = cached
                self.graph_source = "cached"
                return session
            tmp = _new_graph_tmp(Path(graph_cache_dir))
        model = self._model_to_run(resolved)
        if tmp is not None:
            try:
                session = _create_session(model, threads, save_to=tmp)
            except Exception:  # saving is only an optimisation: load as if there were no cache
                session = None
            if session is not None:
                try:
                    _publish_graph(tmp, entry, model_fp, self.int8_matmuls)
                    self.graph_source = "saved"
                except OSError:  # a full disk, say: the session is good, the cache stays empty
                    pass
                return session
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            return _create_session(model, threads)
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelError(f"{resolved.model_file} is not a loadable ONNX model "
                             f"({resolved.source}): {_first_line(exc)}") from exc

    def _model_to_run(self, resolved: ResolvedModel) -> Path | bytes:
        """The model file, or its graph with int8 kernels (:mod:`oxidize.embed.int8`) when the spec
        asks for them, the CPU has int8 dot products and the model stores int8 weights."""
        from oxidize.embed.int8 import cpu_has_int8_dot, dynamic_quantized_ops, int8_matmul_model

        graph = None
        if self.spec.int8_matmul and cpu_has_int8_dot():
            try:
                graph, self.int8_matmuls = int8_matmul_model(resolved.model_file)
            except Exception:  # not a readable ONNX file: onnxruntime's load says what is wrong
                graph, self.int8_matmuls = None, 0
        if graph is None:
            # A model its author quantised dynamically runs on int8 kernels as it is.
            self.int8_matmuls = dynamic_quantized_ops(resolved.model_file)
        return resolved.model_file if graph is None else graph

    def _load_tokenizer(self, resolved: ResolvedModel) -> tuple[Tokenizer, int]:
        try:
            tokenizer = Tokenizer.from_file(str(resolved.tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelError(f"{resolved.tokenizer_file} is not a loadable tokenizer.json "
                             f"({resolved.source}): {_first_line(exc)}") from exc
        padding = tokenizer.padding
        pad_id = padding.get("pad_id") if padding else None
        if pad_id is None:
            for token in ("[PAD]", "<pad>", "<PAD>"):
                pad_id = tokenizer.token_to_id(token)
                if pad_id is not None:
                    break
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.spec.max_length)
        return tokenizer, int(pad_id or 0)

    def _check_inputs(self) -> list[tuple[str, type]]:
        inputs = []
        for arg in self._session.get_inputs():
            if arg.name not in _KNOWN_INPUTS:
                raise ModelError(f"{self.resolved.model_file} needs an input '{arg.name}'; oxidize "
                                 f"can provide only {', '.join(_KNOWN_INPUTS)}")
            inputs.append((arg.name, _ORT_INT_TYPES.get(arg.type, np.int64)))
        if "input_ids" not in {name for name, _ in inputs}:
            raise ModelError(f"{self.resolved.model_file} has no 'input_ids' input")
        return inputs

    def _check_output(self) -> tuple[str, int | None]:
        outputs = self._session.get_outputs()
        chosen = next((o for o in outputs if o.name == "last_hidden_state"), outputs[0])
        shape = chosen.shape
        if shape is not None and len(shape) != 3:
            raise ModelError(
                f"{self.resolved.model_file}: output '{chosen.name}' has rank {len(shape)} "
                f"(shape {shape}); oxidize pools token embeddings and needs [batch, sequence, dim]")
        model_dim = shape[2] if shape and isinstance(shape[2], int) else None
        if self.spec.dim is not None and model_dim is not None and model_dim != self.spec.dim:
            raise ModelError(
                f"{self.resolved.model_file}: the model's output dimension is {model_dim} but "
                f"'{self.spec.name}' is registered with {self.spec.dim}; is this the right model?")
        return chosen.name, self.spec.dim if self.spec.dim is not None else model_dim

    # --- encoding ------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """The embedding dimension (from the spec, the ONNX output shape, or one probe run)."""
        if self._dim is None:
            self._dim = int(self._run(self._tokenize([""])).shape[1])
        return self._dim

    def encode(self, texts: Sequence[str], kind: str = "passage",
               progress: Progress | None = None) -> np.ndarray:
        """Embed ``texts``; row ``i`` of the ``float32 [n, dim]`` result belongs to ``texts[i]``.

        Args:
            texts: the texts, without any model prefix.
            kind: ``"passage"`` or ``"query"``: which prefix of the spec is prepended.
            progress: told ``update(done)`` after each batch (done counts this call's texts).
        """
        if kind == "passage":
            prefix = self.spec.passage_prefix
        elif kind == "query":
            prefix = self.spec.query_prefix
        else:
            raise ValueError(f"kind must be 'passage' or 'query', got {kind!r}")
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenize([prefix + t for t in texts])
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=n)
        # Longest first: the heaviest batch runs first, so the rate shown early is honest.
        order = np.argsort(-lengths, kind="stable")
        batches = [order[start:start + self.batch_size] for start in range(0, n, self.batch_size)]

        def run(rows: np.ndarray) -> np.ndarray:
            if self.rows_per_run >= len(rows):
                return self._run([encodings[i] for i in rows])
            return np.concatenate([self._run([encodings[i] for i in rows[lo:lo + self.rows_per_run]])
                                   for lo in range(0, len(rows), self.rows_per_run)])

        pool = ThreadPoolExecutor(self.workers) if self.workers > 1 and len(batches) > 1 else None
        try:
            # In order: results are taken (and progress told) batch by batch as they finish.
            results = _in_order(pool, run, batches, window=2 * self.workers)
            out: np.ndarray | None = None
            done = 0
            for rows, pooled in zip(batches, results):
                if out is None:
                    out = np.empty((n, pooled.shape[1]), dtype=np.float32)
                    if self._dim is None:
                        self._dim = pooled.shape[1]
                out[rows] = pooled
                done += len(rows)
                if progress is not None:
                    progress.update(done)
        finally:
            if pool is not None:  # on an error, batches not yet started are dropped
                pool.shutdown(wait=True, cancel_futures=True)
        return out

    def _tokenize(self, texts: list[str]):
        return self._tokenizer.encode_batch([tokenizable(t) for t in texts], add_special_tokens=True)

    def _run(self, encodings) -> np.ndarray:
        """One batch: pad to its longest member, infer, pool, normalise → float32 [b, dim]."""
        batch = len(encodings)
        width = max(1, max(len(e.ids) for e in encodings))
        ids = np.full((batch, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        types = np.zeros((batch, width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            ids[row, :k] = enc.ids
            mask[row, :k] = enc.attention_mask
            types[row, :k] = enc.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {name: arrays[name].astype(dtype, copy=False) for name, dtype in self._inputs}
        try:
            (hidden,) = self._session.run([self._output], feed)
        except Exception as exc:
            raise ModelError(f"{self.resolved.model_file}: inference failed: {_first_line(exc)}") from exc
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim != 3:
            raise ModelError(f"{self.resolved.model_file}: output '{self._output}' has shape "
                             f"{hidden.shape}; oxidize needs [batch, sequence, dim]")
        if self.spec.dim is not None and hidden.shape[2] != self.spec.dim:
            raise ModelError(
                f"{self.resolved.model_file}: the model's output dimension is {hidden.shape[2]} "
                f"but '{self.spec.name}' is registered with {self.spec.dim}; is this the right model?")
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0, :]
        elif self.spec.pooling == "mean":
            weights = mask.astype(np.float32)[:, :, None]  # (batch, seq, 1)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        else:
            raise ModelError(f"unknown pooling '{self.spec.pooling}' for model '{self.spec.name}'")
        if self.spec.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled = pooled / np.maximum(norms, 1e-12)
        return pooled.astype(np.float32, copy=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def tokenizable(text: str) -> str:
    """``text`` as the tokenizer takes it: a lone surrogate — a byte that was not UTF-8,
    decoded by Python's ``surrogateescape`` (a file name, a terminal's Latin-1), or a JSON
    ``"\\ud800"`` — becomes U+FFFD (the tokenizer refuses any text holding one)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _in_order(pool, func, items, window: int):
    """``func`` over ``items``, results yielded in order; with a pool, at most ``window``
    calls in flight. Unlike ``Executor.map``, which submits everything at once, this keeps
    memory bounded and means an error stops the work within ``window`` items."""
    if pool is None:
        yield from map(func, items)
        return
    pending: deque = deque()
    source = iter(items)
    for item in itertools.islice(source, window):
        pending.append(pool.submit(func, item))
    while pending:
        result = pending.popleft().result()
        for item in itertools.islice(source, 1):
            pending.append(pool.submit(func, item))
        yield result
