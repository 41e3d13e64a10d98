"""ONNX Runtime inference: texts in, L2-normalised float32 embeddings out.

Why it is shaped this way:

* **Sort by length, pad per batch.** Transformer cost grows with the padded sequence
  length, and most event-log texts are short. Tokenising everything first, sorting by
  token count and padding each batch only to its own longest member wastes almost no
  compute on padding (versus a fixed 128/512). Rows are put back in input order at the end.
* **Padding is invisible to the result.** Padding sits on the right with attention mask 0,
  and pooling averages over the mask only, so a text's vector does not depend on which
  batch it lands in (up to float rounding); the tests compare with one-at-a-time encoding.
* **Only declared inputs are fed.** Some exports (E5, DistilBERT) have no
  ``token_type_ids``; the session's input list decides.

numpy, onnxruntime and tokenizers are imported at module level: only the embed task
imports this module, never doit's task loading.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from oxidize.errors import ModelError
from oxidize.models import ResolvedModel
from oxidize.progress import Progress

_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class Encoder:
    """Run one embedding model over many texts.

    Args:
        resolved: the model to run (from :func:`oxidize.models.resolve_model`).
        threads: onnxruntime intra-op threads; ``os.cpu_count()`` when ``None``.
        batch_size: texts per inference call. Measured on 2,000 session texts of a real
            event log (mean 22 tokens) with the default model on 2 cores: sorted per-batch
            padding ran ~230 texts/s at batch 32 or 64 (~105 per CPU-second at 128, ~150 at
            32 on one thread), fixed 128-token padding in input order 22–31 texts/s. 32 is
            the default: never slower, and finer progress and less memory.

    Raises:
        ModelError: ``model.onnx`` is not loadable, its output is not
            ``[batch, seq, dim]``, its dimension differs from the spec, or it needs an input
            oxidize cannot provide; ``tokenizer.json`` is not loadable.
    """

    def __init__(self, resolved: ResolvedModel, threads: int | None = None, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.resolved = resolved
        self.spec = resolved.spec
        self.batch_size = batch_size
        self._session = self._load_session(resolved, threads)
        self._tokenizer, self._pad_id = self._load_tokenizer(resolved)
        self._inputs = self._check_inputs()
        self._output, self._dim = self._check_output()

    # --- loading -------------------------------------------------------------------------

    @staticmethod
    def _load_session(resolved: ResolvedModel, threads: int | None) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads or os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # No busy-waiting between operators: with other processes on the same cores (a
        # parallel `doit -n 2`, tests) spinning threads steal the CPU the work needs.
        # Measured on 2 busy cores: +34% texts/s (benchmarks/bench_embed.py, docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise
        try:
            return ort.InferenceSession(str(resolved.model_file), sess_options=options,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several private exception types
            raise ModelError(f"{resolved.model_file} is not a loadable ONNX model "
                             f"({resolved.source}): {_first_line(exc)}") from exc

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
        out: np.ndarray | None = None
        for start in range(0, n, self.batch_size):
            rows = order[start:start + self.batch_size]
            pooled = self._run([encodings[i] for i in rows])
            if out is None:
                out = np.empty((n, pooled.shape[1]), dtype=np.float32)
                if self._dim is None:
                    self._dim = pooled.shape[1]
            out[rows] = pooled
            if progress is not None:
                progress.update(min(start + self.batch_size, n))
        return out

    def _tokenize(self, texts: list[str]):
        return self._tokenizer.encode_batch(texts, add_special_tokens=True)

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
