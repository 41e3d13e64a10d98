"""The embed step on a Dask cluster: chosen outside the build's inputs, the same bytes as a
local build, faults survived or reported in one line. Real LocalClusters of worker processes."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventlog_factory import make_sqlite_eventlog
from project_factory import cached_rows
from tiny_model import WORDS, make_tiny_model

distributed = pytest.importorskip("distributed", reason="Dask is an optional extra: pip install 'oxidize[dask]'")

RECIPE = """\
version: 1
embedding_model: tiny
model_dir: ../../model
eventlog: ../../events.db
projections:
  semantic:
    layers: [null, 16, 8]
    epochs: 1
    training:
      pairs: 100
"""
EMBED = "r:semantic.embed"
OUT = Path("build/r/semantic")


def make_project(root: Path, n_texts: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    make_tiny_model(root / "model", dim=32)
    texts = sorted({" ".join(rng.choices(WORDS, k=12)) for _ in range(n_texts)})
    sessions = {f"s{i}": texts[i::40] for i in range(40)}
    make_sqlite_eventlog(root / "events.db", sessions)
    (root / "recipes/r").mkdir(parents=True)
    (root / "recipes/r/oxidize.yaml").write_text(RECIPE)
    return root


def run(root: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OXIDIZE_", "DASK_"))}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "oxidize.engine.cli", *args], cwd=root, env=full,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    """The reference: the embed step in this process, as without Dask."""
    root = make_project(tmp_path_factory.mktemp("dask") / "local", n_texts=3000)
    proc = run(root, EMBED)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two worker processes (one thread each) on localhost."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            Client(c) as client:
        yield c, client


# --- choosing the executor --------------------------------------------------------------

def test_the_executor_comes_from_the_environment_or_pyproject(tmp_path, monkeypatch):
    from oxidize.embed.executor import EXECUTOR_ENV, SHARD_ENV, selected_executor
    from oxidize.errors import BuildError

    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    monkeypatch.delenv(SHARD_ENV, raising=False)
    assert selected_executor(tmp_path).kind == "local"
    (tmp_path / "pyproject.toml").write_text('[tool.oxidize]\nexecutor = "dask"\n')
    chosen = selected_executor(tmp_path)
    assert chosen.distributed and chosen.local_workers is None and "pyproject.toml" in chosen.source
    for value, workers in (("dask:local:3", 3), ("local:2", 2)):
        monkeypatch.setenv(EXECUTOR_ENV, value)
        assert selected_executor(tmp_path).local_workers == workers
    monkeypatch.setenv(EXECUTOR_ENV, "local")  # the environment wins over pyproject
    assert selected_executor(tmp_path).kind == "local"
    monkeypatch.setenv(SHARD_ENV, "64")
    monkeypatch.setenv(EXECUTOR_ENV, "dask")
    assert selected_executor(tmp_path).shard_texts == 64
    for bad in ("ray", "dask:local:0", "local:x"):
        monkeypatch.setenv(EXECUTOR_ENV, bad)
        with pytest.raises(BuildError, match=f"{EXECUTOR_ENV} is '{bad}'; expected 'local'"):
            selected_executor(tmp_path)


def test_a_build_without_dask_never_imports_it(tmp_path):
    root = make_project(tmp_path / "p", n_texts=100)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "oxidize.engine.cli", EMBED],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if not k.startswith("OXIDIZE_")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line}
    assert "oxidize.embed.encoder" in imported  # the embed step did run here
    assert not {m for m in imported if m.split(".")[0] in ("dask", "distributed")}
    assert json.loads((root / OUT / "embed.json").read_text())["where"] == {"executor": "local"}


# --- the same bytes -----------------------------------------------------------------------

def test_a_local_cluster_gives_the_bytes_of_a_local_build(tmp_path, local_build):
    root = make_project(tmp_path / "p", n_texts=3000)
    proc = run(root, EMBED, env={"OXIDIZE_EXECUTOR": "dask:local:2", "OXIDIZE_DASK_SHARD": "256"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / OUT / "embeddings.npy").read_bytes() == (local_build / OUT / "embeddings.npy").read_bytes()
    record = json.loads((root / OUT / "embed.json").read_text())
    n = record["unique"]
    assert record["where"]["workers"] == 2 and record["where"]["texts_sent"] == n == record["embedded"]
    from oxidize.embed.dask_executor import shard_size

    assert record["where"]["shards"] == -(-n // shard_size(n, 256, 2)) and record["where"]["shard_texts"] <= 256
    assert "on 2 Dask worker(s)" in proc.stdout
    assert cached_rows(root) == n
    again = run(root, EMBED, env={"OXIDIZE_EXECUTOR": "dask:local:2"})  # nothing stale: nothing sent
    assert again.returncode == 0 and ".  r:semantic.embed" not in again.stdout


def test_a_worker_killed_mid_build_and_the_build_still_finishes(tmp_path, local_build, cluster):
    _cluster, client = cluster
    root = make_project(tmp_path / "p", n_texts=3000)
    env = {"OXIDIZE_EXECUTOR": "dask", "DASK_SCHEDULER_ADDRESS": client.scheduler.address,
           "OXIDIZE_DASK_SHARD": "64"}
    pids = client.run(os.getpid)
    build = subprocess.Popen([sys.executable, "-m", "oxidize.engine.cli", EMBED], cwd=root,
                             env={**{k: v for k, v in os.environ.items() if not k.startswith("OXIDIZE_")}, **env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and build.poll() is None:
        busy = [w for w, keys in client.processing().items()
                if any(str(k).startswith("oxidize-embed-") for k in keys)]
        if busy and cached_rows(root) > 0:  # some shards are stored, others still running
            killed = pids[busy[0]]
            os.kill(killed, 9)
        time.sleep(0.005)
    out, err = build.communicate(timeout=600)
    assert killed is not None, "the build finished before a worker could be killed"
    assert build.returncode == 0, out + err
    assert (root / OUT / "embeddings.npy").read_bytes() == (local_build / OUT / "embeddings.npy").read_bytes()
    assert cached_rows(root) == json.loads((root / OUT / "embed.json").read_text())["unique"]


def test_an_interrupted_build_sends_only_what_no_shard_finished(tmp_path, local_build, cluster):
    _cluster, client = cluster
    root = make_project(tmp_path / "p", n_texts=3000)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OXIDIZE_")},
           "OXIDIZE_EXECUTOR": "dask", "DASK_SCHEDULER_ADDRESS": client.scheduler.address,
           "OXIDIZE_DASK_SHARD": "64"}
    build = subprocess.Popen([sys.executable, "-m", "oxidize.engine.cli", EMBED], cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while cached_rows(root) == 0 and build.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    build.kill()
    build.wait()
    kept = cached_rows(root)
    assert kept > 0
    proc = run(root, EMBED, env={"OXIDIZE_EXECUTOR": "dask", "DASK_SCHEDULER_ADDRESS": client.scheduler.address})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((root / OUT / "embed.json").read_text())
    assert record["cached"] >= kept and record["where"]["texts_sent"] == record["embedded"] == record["unique"] - record["cached"]
    assert (root / OUT / "embeddings.npy").read_bytes() == (local_build / OUT / "embeddings.npy").read_bytes()


# --- faults reported in one line -------------------------------------------------------------

def test_an_unreachable_scheduler_is_one_line_and_nothing_is_written(tmp_path):
    root = make_project(tmp_path / "p", n_texts=100)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = run(root, EMBED, env={"OXIDIZE_EXECUTOR": "dask", "DASK_SCHEDULER_ADDRESS": f"tcp://127.0.0.1:{port}"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in out and "Traceback" not in out
    assert not (root / OUT / "embeddings.npy").exists() and cached_rows(root) == 0


def test_no_scheduler_configured_says_how_to_name_one(tmp_path):
    root = make_project(tmp_path / "p", n_texts=100)
    proc = run(root, EMBED, env={"OXIDIZE_EXECUTOR": "dask", "DASK_CONFIG": str(tmp_path / "none")})
    assert proc.returncode != 0 and "set DASK_SCHEDULER_ADDRESS" in proc.stdout + proc.stderr


def test_workers_of_another_arithmetic_are_refused_by_name(tmp_path):
    """A worker whose platform key differs (here: told to compute without this CPU's SIMD
    class) would put other bits under this machine's cache key."""
    from distributed import Client, LocalCluster

    from oxidize.platform import simd_class

    if simd_class() in ("generic", "neon"):
        pytest.skip("no x86 SIMD class to mask on this machine")
    root = make_project(tmp_path / "p", n_texts=100)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"OXIDIZE_CPU_FEATURES": f"-{simd_class()}"}) as c, Client(c) as client:
        worker = next(iter(client.scheduler_info()["workers"]))
        proc = run(root, EMBED, env={"OXIDIZE_EXECUTOR": "dask", "DASK_SCHEDULER_ADDRESS": c.scheduler_address})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert f"Dask worker {worker}: computes with arithmetic" in out
    assert not (root / OUT / "embeddings.npy").exists() and cached_rows(root) == 0


def test_a_model_missing_on_a_worker_names_the_worker_and_the_path(tmp_path):
    from oxidize.embed.dask_executor import EncoderPlugin
    from oxidize.embed.models import ModelSpec, ResolvedModel
    from oxidize.platform import platform_key

    class Worker:
        address = "tcp://10.0.0.7:4001"
        state = type("S", (), {"nthreads": 1})()

    missing = ResolvedModel(ModelSpec(name="my-model", dim=None), tmp_path / "m/model.onnx",
                            tmp_path / "m/tokenizer.json", "model_dir from the recipe")
    plugin = EncoderPlugin(missing, ("a", "b"), "fp", platform_key(), "")
    plugin.setup(Worker())
    assert plugin.encoder is None
    assert f"not at {tmp_path / 'm/model.onnx'} here" in plugin.error and "same path on every worker" in plugin.error
    make_tiny_model(tmp_path / "m", dim=8)  # there, but other files than the build machine's
    plugin.setup(Worker())
    assert "differs from the build machine's" in plugin.error


def test_shards_are_a_multiple_of_the_worker_threads():
    from oxidize.embed.dask_executor import shard_size

    assert shard_size(10_000, 2048, 2) == 1667  # 6 shards, not 5 of 2,048
    assert shard_size(100_000, 2048, 2) == 2000  # 50 shards
    assert shard_size(300, 2048, 4) == 75  # small jobs: one shard per thread
    assert shard_size(1, 2048, 8) == 1
    for n, most, threads in ((10_000, 2048, 2), (12_345, 1000, 3), (7, 2, 4)):
        size = shard_size(n, most, threads)
        assert size <= most and -(-n // size) % threads == 0


def test_a_worker_lost_while_the_plugin_is_installed_is_retried_without(monkeypatch):
    """Found by hand: a worker killed while the plugin opens its session made the scheduler's
    broadcast fail with CommClosedError (an OSError) and the build print a traceback."""
    from oxidize.embed import dask_executor as dx
    from oxidize.errors import BuildError

    class Client:
        def __init__(self, failures):
            self.failures, self.calls = failures, 0

        def register_plugin(self, plugin, name):
            self.calls += 1
            if self.calls <= self.failures:
                raise OSError("in <TCP ConnectionPool.register_worker_plugin>: Stream is closed")

        def run(self, func, name, on_error):
            assert on_error == "return"
            return {"tcp://a:1": {"error": None, "dim": 8, "threads": 1}, "tcp://b:2": OSError("gone")}

    monkeypatch.setattr(dx.time, "sleep", lambda s: None)
    encoder = object.__new__(dx.DaskEncoder)
    encoder.name, encoder.address = "oxidize-encoder-x", "tcp://head:8786"
    encoder.client = Client(failures=1)
    assert encoder._register(None) == {"tcp://a:1": {"error": None, "dim": 8, "threads": 1}}
    assert encoder.client.calls == 2
    encoder.client = Client(failures=dx.REGISTER_ATTEMPTS)
    with pytest.raises(BuildError, match="could not set up the Dask workers at tcp://head:8786: in <TCP"):
        encoder._register(None)
