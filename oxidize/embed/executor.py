"""Where the embed work runs: in this process (the default), or on a Dask cluster.

Where the work runs is not a build input: it never enters a fingerprint, a lock or a cache
key (a worker must produce the bytes this process would, :mod:`oxidize.embed.dask_executor`
checks it). It is chosen, first hit wins, by

1. ``$OXIDIZE_EXECUTOR``;
2. ``executor`` in ``[tool.oxidize]`` of the project's ``pyproject.toml``;

with the values

* ``local`` (or nothing) — this process, as always; ``dask`` is never imported;
* ``dask`` — the Dask scheduler of Dask's own configuration (``$DASK_SCHEDULER_ADDRESS``, or
  ``scheduler-address`` in Dask's YAML config, ``~/.config/dask/*.yaml``);
* ``dask:local:N`` (or ``local:N``) — a ``LocalCluster`` of N worker processes on this machine.

``$OXIDIZE_DASK_SHARD`` sets the texts per work unit (default :data:`SHARD_TEXTS`).
Light: the standard library only; the Dask side is imported when a build first embeds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oxidize.errors import BuildError

EXECUTOR_ENV = "OXIDIZE_EXECUTOR"
SHARD_ENV = "OXIDIZE_DASK_SHARD"
#: Texts per Dask work unit. At ~260–290 texts/s per single-threaded worker with the default
#: model (E5 several times slower) a shard is seconds of work: the scheduler's ~2 ms per task
#: is under 0.1 %, a killed worker loses at most one shard, and 10^7 texts are ~5,000 tasks
#: (docs/distributed.md, "Sizing").
SHARD_TEXTS = 2048


@dataclass(frozen=True)
class Executor:
    """The chosen executor: ``kind`` is ``"local"`` or ``"dask"``; for Dask, ``local_workers``
    (a LocalCluster of that many processes) or ``None`` (the scheduler of Dask's config,
    resolved when connecting); ``source`` says where the choice came from."""

    kind: str
    local_workers: int | None = None
    source: str = "default"
    shard_texts: int = SHARD_TEXTS

    @property
    def distributed(self) -> bool:
        return self.kind == "dask"


def selected_executor(root: Path | str = ".") -> Executor:
    """The executor for builds in ``root`` (see the module docstring).

    Raises:
        BuildError: an unknown value, or a bad worker count or shard size.
    """
    value, source = os.environ.get(EXECUTOR_ENV, "").strip(), f"${EXECUTOR_ENV}"
    if not value:
        value, source = _pyproject_value(Path(root)), f"{Path(root) / 'pyproject.toml'} [tool.oxidize] executor"
    if not value or value == "local":
        return Executor("local", source=source if value else "default")
    shard = _shard_texts()
    if value == "dask":
        return Executor("dask", source=source, shard_texts=shard)
    count = value.removeprefix("dask:").removeprefix("local:")
    if value.startswith(("local:", "dask:local:")) and _number(count) >= 1:
        return Executor("dask", local_workers=int(count), source=source, shard_texts=shard)
    raise BuildError(f"{source} is {value!r}; expected 'local' (this process), 'dask' (the scheduler "
                     f"of Dask's configuration, e.g. $DASK_SCHEDULER_ADDRESS) or 'dask:local:N' "
                     f"(a local cluster of N worker processes)")


def _pyproject_value(root: Path) -> str:
    import tomllib

    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    value = ((data.get("tool") or {}).get("oxidize") or {}).get("executor", "")
    return value.strip() if isinstance(value, str) else ""


def _shard_texts() -> int:
    value = os.environ.get(SHARD_ENV, "").strip()
    if not value:
        return SHARD_TEXTS
    if _number(value) < 1:
        raise BuildError(f"${SHARD_ENV} is {value!r}; expected a positive number of texts per shard")
    return int(value)


def _number(text: str) -> int:
    """``text`` as a plain decimal number (ASCII digits only: ``"²".isdigit()`` is true but
    ``int("²")`` fails), else -1."""
    return int(text) if text.isascii() and text.isdigit() else -1


#: Encoders made in this process, by model fingerprint and graph cache: doit runs every task of
#: a build in one process (without -n), so the embed and index steps of all projections of a
#: recipe, and the eval step's query sets, load the model once (docs/benchmarks.md).
_ENCODERS: dict[tuple, Any] = {}


def shared_encoder(resolved: Any, model_fp: str | None, graph_cache_dir: Path | None):
    """This process's :class:`~oxidize.embed.encoder.Encoder` of ``resolved``, made once."""
    key = (model_fp, str(resolved.model_file), resolved.spec, str(graph_cache_dir))
    if model_fp is None or key not in _ENCODERS:
        from oxidize.embed.encoder import Encoder

        encoder = Encoder(resolved, graph_cache_dir=graph_cache_dir, model_fp=model_fp)
        if model_fp is None:
            return encoder
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


class EncoderFactory:
    """Makes the encoder of one model at most once, and only when called (when some text is
    missing from the cache): oxidize's :class:`~oxidize.embed.encoder.Encoder` in this
    process, or a :class:`~oxidize.embed.dask_executor.DaskEncoder` that embeds on the cluster.
    ``made`` is the encoder once made (its ``describe()`` goes into ``embed.json``)."""

    def __init__(self, resolved: Any, model_record: dict, model_fp: str,
                 graph_cache_dir: Path | None, executor: Executor | None = None):
        self.resolved, self.model_record, self.model_fp = resolved, model_record, model_fp
        self.graph_cache_dir = graph_cache_dir
        self.executor = executor if executor is not None else selected_executor()
        self.made: Any = None

    def __call__(self):
        if self.made is None:
            if self.executor.distributed:
                from oxidize.embed.dask_executor import DaskEncoder

                self.made = DaskEncoder(self.executor, self.resolved, self.model_record, self.model_fp)
            else:
                self.made = shared_encoder(self.resolved, self.model_fp, self.graph_cache_dir)
        return self.made

    def describe(self) -> dict:
        """Where the texts were embedded, for ``embed.json``."""
        if self.made is not None and hasattr(self.made, "describe"):
            return self.made.describe()
        return {"executor": self.executor.kind if self.made is not None else "none (all cached)"}

