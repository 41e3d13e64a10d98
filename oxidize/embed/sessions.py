"""onnxruntime sessions, and the cache of optimised graphs that makes opening one cheap.

onnxruntime's graph optimisation (constant folding of the int8 weights into float32,
operator fusion) costs ~0.25 s per session on 2 cores, and parsing the resulting 90 MB
protobuf as much again — most of an incremental embed step. With a graph cache directory
the optimised graph is saved once (weights as external data, so a later session maps them
instead of parsing them) under a key of the model fingerprint, the onnxruntime version and
the CPU (layout optimisations are hardware-specific), and later sessions load it with
optimisation off: the same graph, bit-identical vectors, ~4× faster session creation. The
entry is written to a temporary directory and renamed into place. Every file of an entry is
checked against the sha256 recorded when it was written before the entry is used: a file
damaged in place (same size, other bytes) would otherwise give wrong vectors that the
embedding cache then keeps under the true model fingerprint. A damaged entry is moved to
``damaged/`` (one warning line) and the graph optimised again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from oxidize.platform import platform_key
from oxidize.util.quarantine import FOLDER

#: Version of the optimised-graph cache layout (part of every entry's key).
GRAPH_FORMAT = 4  # 3: int8_matmuls counts a model's own dynamic quantisation; 4: files' sha256
#: Optimised graphs kept in a ``graph_cache_dir``; the least recently used beyond are removed.
GRAPH_KEEP = 4
_GRAPH_MODEL = "model.onnx"
_GRAPH_DATA = "model.onnx.data"  # the weights, as external data beside the graph
_GRAPH_META = "meta.json"
_GRAPH_TMP = ".tmp-"
_STALE_TMP_S = 3600.0  # a temporary entry this old belongs to a killed build


def _create_session(model: Path | bytes, threads: int, save_to: Path | None = None,
                    optimise: bool = True) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model`` (a file, or a serialised graph); with
    ``save_to``, the optimised graph is written there too (graph in ``model.onnx``, weights
    in ``model.onnx.data``)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No busy-waiting between operators: with other processes on the same cores (a
    # parallel `doit -n 2`, tests) spinning threads steal the CPU the work needs.
    # Measured on 2 busy cores: +34% texts/s (benchmarks/bench_embed.py, docs/benchmarks.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise
    if save_to is not None:
        options.optimized_model_filepath = str(save_to / _GRAPH_MODEL)
        # Weights as external data: a later load maps them instead of parsing a 90 MB protobuf.
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         _GRAPH_DATA)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=["CPUExecutionProvider"])


def _cpu_identity() -> str:
    """The machine and CPU model and features: an optimised graph may use all of them."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor is enough
                name, _, value = line.partition(":")
                if name.strip() in ("vendor_id", "model name", "flags", "Features", "CPU part"):
                    parts.append(value.strip())
    except OSError:
        pass
    return " | ".join(parts)


def graph_key(model_fp: str) -> str:
    """The cache key of a model's optimised graph: what the saved graph is a function of."""
    digest = hashlib.sha256(
        f"oxidize-optimised-graph-v{GRAPH_FORMAT}\nmodel {model_fp}\nonnxruntime {ort.__version__}\n"
        f"level all\ncpu {_cpu_identity()}\nplatform {platform_key()}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def _graph_files(directory: Path) -> dict[str, list]:
    """Each file of an entry (but the record itself): ``[size, sha256]``."""
    from oxidize.engine.fingerprint import file_sha256

    return {p.name: [p.stat().st_size, file_sha256(p)] for p in sorted(directory.iterdir())
            if p.is_file() and p.name != _GRAPH_META}


def _load_cached_graph(entry: Path, threads: int) -> tuple[ort.InferenceSession, int] | None:
    """The cached optimised graph as a session and its number of int8 products, or ``None``
    when there is none usable."""
    meta_file = entry / _GRAPH_META
    if not entry.is_dir():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("key") != entry.name:
            raise ValueError("the record names another entry")
        recorded, found = meta.get("files") or {}, _graph_files(entry)
        changed = sorted(set(recorded) ^ set(found) | {n for n in recorded if found.get(n) != recorded[n]})
        if changed:
            raise ValueError(f"{', '.join(changed)} differ{'s' if len(changed) == 1 else ''} from "
                             f"what was written")
        int8_matmuls = int(meta.get("int8_matmuls", 0))
        session = _create_session(entry / _GRAPH_MODEL, threads, optimise=False)
    except Exception as exc:  # unreadable or damaged: set it aside, optimise again, save afresh
        _set_aside(entry, exc)
        return None
    try:
        os.utime(meta_file)  # recently used: kept by _evict
    except OSError:
        pass
    return session, int8_matmuls


def _set_aside(entry: Path, exc: Exception) -> None:
    import warnings

    from oxidize.errors import CacheWarning
    from oxidize.util.quarantine import move_aside

    try:
        dest = move_aside(entry, companions=())
    except OSError:
        shutil.rmtree(entry, ignore_errors=True)
        dest = None
    reason = str(exc).strip() or type(exc).__name__
    where = f"moved it to {dest}" if dest else "removed it"
    warnings.warn(f"optimised-graph cache {entry} was damaged ({reason}); {where}; optimising the "
                  f"model again", CacheWarning, stacklevel=3)


def _new_graph_tmp(cache_dir: Path) -> Path | None:
    """A fresh temporary directory beside the entries, or ``None`` if none can be made."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=_GRAPH_TMP, dir=cache_dir))
    except OSError:
        return None  # a read-only build folder: optimise in memory every time


def _publish_graph(tmp: Path, entry: Path, model_fp: str, int8_matmuls: int) -> None:
    """Describe the graph written to ``tmp`` and rename it to ``entry`` (atomic: a reader
    sees the whole entry or none). A concurrent build that published first wins."""
    try:
        meta = {"key": entry.name, "format": GRAPH_FORMAT, "model_fingerprint": model_fp,
                "onnxruntime": ort.__version__, "cpu": _cpu_identity(), "platform": platform_key(), "int8_matmuls": int8_matmuls,
                "files": _graph_files(tmp)}
        with open(tmp / _GRAPH_META, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
        for name in (*meta["files"], _GRAPH_META):
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, entry)
    except OSError:  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
        return
    _evict(entry.parent)


def _evict(cache_dir: Path) -> None:
    """Keep the :data:`GRAPH_KEEP` most recently used entries; drop killed builds' temporaries."""
    entries, now = [], time.time()
    for path in cache_dir.iterdir():
        try:
            if path.name.startswith(_GRAPH_TMP):
                if now - path.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and path.name != FOLDER:  # damaged entries are kept for a look
                meta = path / _GRAPH_META
                entries.append((meta.stat().st_mtime if meta.exists() else 0.0, path))
        except OSError:
            continue
    entries.sort(reverse=True)
    for _, path in entries[GRAPH_KEEP:]:
        shutil.rmtree(path, ignore_errors=True)
