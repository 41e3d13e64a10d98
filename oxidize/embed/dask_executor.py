"""The embed step on a Dask cluster: shards of texts out, vectors back, the cache written here.

What travels (docs/distributed.md has the picture):

* **to each worker, once:** an :class:`EncoderPlugin` (a ``distributed.WorkerPlugin``) with
  the model's paths and spec, the model fingerprint's file hashes and this machine's
  platform key. Its ``setup`` opens one onnxruntime session per worker process (sessions
  cannot be pickled) with the worker's thread count, after checking that the worker has the
  same model files (same sha256) and computes with the same arithmetic (same platform key);
* **to a worker, per shard:** a list of texts (only texts missing from the cache, distinct,
  :data:`~oxidize.embed.executor.SHARD_TEXTS` at a time);
* **back:** a ``float32 [n, dim]`` array per shard.

Only this process writes: each finished shard is stored in the embedding cache as it
arrives, so a killed build keeps every finished shard and the next build sends only the
rest. A worker killed mid-shard loses that shard to Dask, which runs it again elsewhere
(``retries``, and the scheduler's own reassignment); a shard's result is stored once, when
its future completes.

**Models on workers.** The worker opens the model at the path this machine resolved; if it
is not there, it resolves the model's name itself (its own install of the default model's
packages, ``$OXIDIZE_MODELS``, patina's cache). Either way the files' sha256 must equal the
fingerprint's, else the worker reports an error naming itself. A ``model_dir`` must
therefore exist at the same path on every worker (a shared file system or a copy); nothing
is sent, since models are hundreds of megabytes and workers usually share storage.

**Arithmetic.** The int8 kernels (:mod:`oxidize.embed.int8`) run only on CPUs with int8 dot
products, so the same model gives other bits elsewhere. A worker whose platform key
(:mod:`oxidize.platform`) differs from this machine's is refused with a message naming it,
rather than letting its vectors into the cache under this machine's key.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from oxidize.errors import BuildError, ModelError, OxidizeError

#: Times Dask runs a shard again after it raised on a worker.
RETRIES = 2
#: Times the plugin is installed again when a worker dies during its set-up.
REGISTER_ATTEMPTS = 3
#: Seconds to reach the scheduler, and to wait for a first worker.
CONNECT_TIMEOUT_S = 10
WORKER_WAIT_S = 60
#: Shards in flight per worker thread: enough to keep every worker busy, few enough that
#: the scheduler does not hold the whole log's texts at once.
IN_FLIGHT_PER_THREAD = 3

_clients: dict[tuple, Any] = {}
#: Plugins this process registered, by (client, name): the workers' reports.
_registered: dict[tuple[int, str], dict] = {}


try:
    from distributed import WorkerPlugin
except ImportError:  # pragma: no cover - the module is imported only when Dask is selected
    WorkerPlugin = object


class EncoderPlugin(WorkerPlugin):
    """Holds one oxidize Encoder per worker process, opened in :meth:`setup`; a problem is kept
    in ``error`` (reported by every shard and by :func:`_report`), never raised into Dask."""

    def __init__(self, resolved: Any, model_shas: tuple[str, str], model_fp: str, platform: str,
                 mask: str):
        self.resolved, self.model_shas, self.model_fp = resolved, model_shas, model_fp
        self.platform, self.mask = platform, mask
        self.encoder = None
        self.error: str | None = None

    def setup(self, worker) -> None:
        import os

        from oxidize.platform import MASK_ENV, platform_key

        self.lock = threading.Lock()
        self.address = worker.address
        try:
            if self.mask:
                os.environ[MASK_ENV] = self.mask  # compute as the build machine was told to
            here = platform_key()
            if here != self.platform:
                self.error = (f"computes with arithmetic {here}, the build machine with {self.platform}: "
                              f"its vectors would differ from a local build's; use workers of the build "
                              f"machine's CPU class and library versions")
                return
            from oxidize.embed.encoder import Encoder

            threads = int(getattr(worker.state, "nthreads", 0) or getattr(worker, "nthreads", 1) or 1)
            self.encoder = Encoder(self._model_here(), threads=threads, model_fp=self.model_fp)
        except Exception as exc:  # reported by name, not a traceback in the worker's log
            self.error = _first_line(exc)

    def _model_here(self):
        from dataclasses import replace

        from oxidize.embed.models import file_sha256, resolve_model

        resolved = self.resolved
        if not (resolved.model_file.is_file() and resolved.tokenizer_file.is_file()):
            try:
                found = resolve_model(resolved.spec.name, int8_matmul=resolved.spec.int8_matmul)
            except ModelError:
                raise ModelError(f"model '{resolved.spec.name}' is not at {resolved.model_file} here, and "
                                 f"the name resolves nowhere on this worker; a model_dir must exist at the "
                                 f"same path on every worker") from None
            resolved = replace(found, spec=resolved.spec)
        shas = (file_sha256(resolved.model_file), file_sha256(resolved.tokenizer_file))
        if shas != tuple(self.model_shas):
            raise ModelError(f"model '{resolved.spec.name}' at {resolved.model_file} differs from the build "
                             f"machine's (sha256 {shas[0][:12]}…, expected {self.model_shas[0][:12]}…)")
        return resolved


def _report(name: str, dask_worker=None) -> dict:
    """Run on each worker by ``client.run``: its plugin's state."""
    plugin = dask_worker.plugins.get(name)
    if plugin is None:
        return {"error": "the oxidize encoder plugin is not installed here", "dim": None, "threads": 0}
    return {"error": plugin.error, "dim": plugin.encoder.dim if plugin.encoder is not None else None,
            "threads": int(getattr(dask_worker.state, "nthreads", 1) or 1)}


def _embed_shard(name: str, texts: list[str], kind: str) -> np.ndarray:
    """One shard, on a worker: its texts through the worker's encoder."""
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(name)
    if plugin is None or plugin.encoder is None:
        reason = plugin.error if plugin is not None else "no oxidize encoder plugin"
        raise ModelError(f"Dask worker {worker.address}: {reason}")
    with plugin.lock:  # one shard at a time: the encoder already uses the worker's threads
        return np.asarray(plugin.encoder.encode(texts, kind=kind), dtype=np.float32)


def shard_size(n: int, most: int, threads: int) -> int:
    """Texts per shard: at most ``most``, with the shard count a multiple of the worker threads
    so that no thread idles through the last round (10,000 texts on 2 threads: 6 shards of
    1,667, not 5 of 2,048 — measured 1.32× against 1.14× the in-process time)."""
    threads = max(1, threads)
    shards = max(1, -(-n // max(1, most)))
    shards = -(-shards // threads) * threads
    return max(1, -(-n // shards))


class DaskEncoder:
    """The encoder interface of :class:`~oxidize.embed.encoder.Encoder` (``dim``, ``encode``),
    plus :meth:`embed_shards`, which the cache uses to store shards as they complete."""

    def __init__(self, executor: Any, resolved: Any, model_record: dict, model_fp: str):
        import os

        from oxidize.platform import MASK_ENV, platform_key

        self.executor = executor
        self.client, self.address = _client(executor)
        self.name = f"oxidize-encoder-{model_fp[:16]}"
        shas = (model_record["model_onnx"]["sha256"], model_record["tokenizer_json"]["sha256"])
        plugin = EncoderPlugin(resolved, shas, model_fp, platform_key(), os.environ.get(MASK_ENV, ""))
        reports = _registered.get((id(self.client), self.name))
        if reports is None:  # once per build process: the next embed task of the model reuses it
            reports = self._register(plugin)
        if not reports:
            raise BuildError(f"no Dask worker is connected to the scheduler at {self.address}; "
                             f"start some with `dask worker {self.address}`")
        bad = {addr: r["error"] for addr, r in reports.items() if r["error"]}
        if bad:
            shown = "; ".join(f"Dask worker {addr}: {err}" for addr, err in list(bad.items())[:3])
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise BuildError(f"{len(bad)} of {len(reports)} Dask worker(s) at {self.address} cannot embed: "
                             f"{shown}{more}")
        _registered[(id(self.client), self.name)] = reports
        self.workers = len(reports)
        self.threads = sum(r["threads"] for r in reports.values())
        self.dim = next(r["dim"] for r in reports.values())
        self.shards = 0
        self.texts_sent = 0
        self.shard_size = executor.shard_texts

    def _register(self, plugin: EncoderPlugin) -> dict:
        """Install the plugin on every worker and collect their reports. A worker lost meanwhile
        (the scheduler still names it for a moment) is retried without, never a traceback."""
        for attempt in range(REGISTER_ATTEMPTS):
            try:
                self.client.register_plugin(plugin, name=self.name)
                reports = self.client.run(_report, self.name, on_error="return")
                return {addr: r for addr, r in reports.items() if isinstance(r, dict)}
            except OSError as exc:  # distributed's CommClosedError: a worker died mid-setup
                if attempt == REGISTER_ATTEMPTS - 1:
                    raise BuildError(f"could not set up the Dask workers at {self.address}: "
                                     f"{_first_line(exc)}") from None
                time.sleep(1 + attempt)
        return {}

    def embed_shards(self, texts: Sequence[str], kind: str = "passage") -> Iterator[tuple[list[int], np.ndarray]]:
        """Yield ``(positions, vectors)`` per shard of ``texts`` as shards complete, in any order."""
        from distributed import as_completed

        size = shard_size(len(texts), self.executor.shard_texts, self.threads)
        self.shard_size = size
        starts = list(range(0, len(texts), size))
        window = max(2, IN_FLIGHT_PER_THREAD * self.threads)
        run = uuid.uuid4().hex[:12]
        pending: dict = {}

        def submit(start: int):
            future = self.client.submit(_embed_shard, self.name, list(texts[start:start + size]), kind,
                                        retries=RETRIES, pure=False, key=f"oxidize-embed-{run}-{start}")
            pending[future] = start
            self.shards += 1
            self.texts_sent += min(size, len(texts) - start)
            return future

        queue = iter(starts)
        flow = as_completed([submit(s) for s in itertools.islice(queue, window)])
        try:
            for future in flow:
                start = pending.pop(future)
                try:
                    vectors = future.result()
                except OxidizeError:  # a worker's own clear message (a model missing there)
                    raise
                except Exception as exc:  # KilledWorker after repeated deaths, a lost scheduler
                    raise BuildError(f"a shard of {min(size, len(texts) - start):,} texts failed on the Dask "
                                     f"cluster at {self.address}: {type(exc).__name__}: {_first_line(exc)}; "
                                     f"finished shards are cached, run the build again") from None
                future.release()
                yield list(range(start, min(start + size, len(texts)))), vectors
                nxt = next(queue, None)
                if nxt is not None:
                    flow.add(submit(nxt))
        finally:
            if pending:
                self.client.cancel(list(pending))

    def fill(self, unique: list[str], missing: list[int], cache: Any, matrix: np.ndarray | None,
             progress: Any) -> None:
        """Embed ``unique[i]`` for each ``i`` in ``missing`` into ``cache`` (and ``matrix[i]``),
        storing each shard as it completes: a killed build keeps every finished shard."""
        from oxidize.embed.cache import store_checked

        texts, done = [unique[i] for i in missing], 0
        for positions, vectors in self.embed_shards(texts, cache.kind):
            vectors = store_checked(vectors, [texts[p] for p in positions], cache)
            if matrix is not None:
                matrix[[missing[p] for p in positions]] = vectors
            done += len(positions)
            progress.update(done, f"on {self.workers} Dask worker(s)")

    def encode(self, texts: Sequence[str], kind: str = "passage", progress=None) -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        done = 0
        for positions, vectors in self.embed_shards(texts, kind):
            out[positions] = vectors
            done += len(positions)
            if progress is not None:
                progress.update(done)
        return out

    def describe(self) -> dict:
        return {"executor": "dask", "scheduler": self.address, "workers": self.workers,
                "threads": self.threads, "shards": self.shards, "shard_texts": self.shard_size,
                "texts_sent": self.texts_sent}


def _client(executor: Any):
    """This process's Dask client for ``executor`` (one per process, closed at exit)."""
    key = (executor.local_workers,)
    if key in _clients:
        client = _clients[key]
        return client, client.scheduler.address
    import logging

    import dask
    from distributed import Client, LocalCluster

    if executor.local_workers:
        import os

        threads = max(1, (os.cpu_count() or 1) // executor.local_workers)
        cluster = LocalCluster(n_workers=executor.local_workers, threads_per_worker=threads, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
        atexit.register(_close, client, cluster)
    else:
        address = dask.config.get("scheduler-address", None)
        if not address:
            raise BuildError(f"{executor.source} selects Dask, but Dask's configuration names no scheduler: "
                             f"set DASK_SCHEDULER_ADDRESS=tcp://host:8786 (or scheduler-address in "
                             f"~/.config/dask/dask.yaml), or use 'dask:local:N' for a cluster on this machine")
        try:
            client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as exc:
            raise BuildError(f"cannot reach the Dask scheduler at {address} (DASK_SCHEDULER_ADDRESS or Dask's "
                             f"config; selected by {executor.source}): {_first_line(exc)}") from None
        atexit.register(_close, client, None)
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (TimeoutError, OSError):
            raise BuildError(f"no Dask worker joined the scheduler at {address} within {WORKER_WAIT_S} s; "
                             f"start some with `dask worker {address}`") from None
    _clients[key] = client
    return client, client.scheduler.address


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _close(client, cluster) -> None:
    deadline = time.monotonic() + 10
    try:
        client.close(timeout=max(1, deadline - time.monotonic()))
        if cluster is not None:
            cluster.close(timeout=max(1, deadline - time.monotonic()))
    except Exception:  # at exit: nothing left to report to
        pass
