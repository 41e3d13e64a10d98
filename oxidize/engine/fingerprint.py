"""What makes a target fresh or stale.

A target is **fresh** when every input it was built from is unchanged since its last
successful build, and **stale** otherwise. doit does the bookkeeping; this module defines
what oxidize feeds it, so that a rebuild happens when — and only when — something the
target actually reads has changed.

| target       | inputs                                                              |
|--------------|---------------------------------------------------------------------|
| `R:model`    | `model.onnx`, `tokenizer.json` (content), `embedding_model`         |
| `R:P.pairs`  | the event log file (content), the pair keys of projection `P`       |
| `R:P.embed`  | `texts.jsonl` (content), `model.json` (the model fingerprint)       |
| `R:P.train`  | `embeddings.npy`, `triplets.npy` (content), the training keys of `P`|

File inputs are doit ``file_dep``s: doit compares mtime first and falls back to an MD5 of
the content only when the mtime moved, so a ``touch`` that leaves content unchanged makes
nothing stale, and the common no-op check costs one ``stat`` per file.

Recipe inputs are tracked **per key** (like DVC's params): each stage is checked against a
flat dict of exactly the keys it reads (``projections.semantic.epochs`` → 10). Editing one
projection's ``epochs`` leaves its pairs and embeddings — and every other projection — fresh.
The full dict, not just a digest, is stored in doit's state so that an explanation can name
the key with its old and new values.

Outputs are checked too: after a build the size, mtime and sha256 of every target are
stored, and a target whose content no longer matches (edited by hand) makes its task stale.
The oxidize version that built a target is stored as well; a different version rebuilds.

Never hashed: mtimes (a checkout or a container resets them), absolute paths (moving the
project must keep its build fresh), the device, the wall-clock time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: The key under which :class:`StageInputs` stores its record in doit's per-task values.
VALUES_KEY = "_oxidize_inputs"


def digest(obj: Any) -> str:
    """sha256 of ``obj`` dumped as canonical JSON (sorted keys, no whitespace)."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """sha256 hex of a file's content, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def target_state(path: Path | str) -> list:
    """``[size, mtime_ns, sha256]`` of a built file, recorded after a successful build."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, file_sha256(path)]


def target_unchanged(path: Path | str, stored: list | None) -> bool:
    """True when ``path`` still holds what the build wrote.

    Same size and mtime means unchanged without reading the file (the common no-op case);
    otherwise the content hash decides, so a ``touch`` or a restore from a CI cache with new
    mtimes is not a change, while an edit by hand is.
    """
    if not stored:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    size, mtime_ns, sha = stored
    if st.st_size != size:
        return False
    if st.st_mtime_ns == mtime_ns:
        return True
    return file_sha256(path) == sha


def input_state(path: Path | str) -> list:
    """``[device, inode, ctime_ns, size, mtime_ns, sha256]`` of an input file (the event log):
    what a copy over it cannot keep (``cp -p`` and ``rsync -t`` keep size and mtime, but not
    the inode's change time; a re-pointed symlink leads to another inode)."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns, file_sha256(path)]


def input_unchanged(path: Path | str, stored: list | None) -> bool:
    """True when ``path`` is the file recorded, or a file with the same content.

    The same inode with the same change time is the common no-op case (no read); any other
    file is compared by content, so a ``touch`` or an identical copy is no change.
    """
    if not stored or len(stored) != 6:
        return True  # recorded by an older oxidize: doit's own file check decides
    try:
        st = os.stat(path)
    except OSError:
        return False
    if [st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size, st.st_mtime_ns] == stored[:5]:
        return True
    return st.st_size == stored[3] and file_sha256(path) == stored[5]


class StageInputs:
    """doit ``uptodate`` checker for one stage: its recipe keys, oxidize's version, its outputs.

    Like doit's ``config_changed``, but after a successful build it saves the whole
    ``{key: value}`` dict (not only a digest), the oxidize version, and the state of every
    target, so that ``doit stale`` can say which key changed from what to what, and so that
    a target modified by hand is rebuilt rather than trusted.
    """

    def __init__(self, settings: dict[str, Any], targets: list[str] = (), inputs: list[str] = ()):
        self.settings = dict(settings)
        self.targets = list(targets)
        #: input files also tracked by identity (:func:`input_state`): the event log
        self.inputs = list(inputs)
        self.digest = digest(self.settings)

    def configure_task(self, task) -> None:
        """Register the value saver doit calls after the task succeeded."""
        task.value_savers.append(self.record)

    def record(self) -> dict:
        """What is stored after success (doit's ``save_success``)."""
        from oxidize import __version__

        targets = {t: target_state(t) for t in self.targets if os.path.exists(t)}
        inputs = {i: input_state(i) for i in self.inputs if os.path.exists(i)}
        return {VALUES_KEY: {"keys": self.settings, "version": __version__, "targets": targets,
                             "inputs": inputs}}

    def __call__(self, task, values) -> bool:
        """True when keys, version and outputs are as last built (doit's uptodate protocol)."""
        from oxidize import __version__

        stored = values.get(VALUES_KEY)
        if not stored or digest(stored.get("keys")) != self.digest:
            return False
        if stored.get("version") != __version__:
            return False
        saved = stored.get("targets") or {}
        if not all(target_unchanged(t, saved.get(t)) for t in self.targets):
            return False
        inputs = stored.get("inputs") or {}
        return all(input_unchanged(i, inputs.get(i)) for i in self.inputs)

    def __repr__(self) -> str:  # shown by `doit info`
        return f"StageInputs({self.settings!r})"


class RecordedFiles:
    """doit ``uptodate`` entry for outputs that may be absent by design (patina's
    ``P.safetensors`` is removed when the projection does not beat the raw embedding).

    ``record`` (a JSON file the task writes, itself a target) maps each such path to its
    :func:`target_state`, or to ``null`` for a file the build removed. Fresh when each file is
    still as recorded; a file edited, deleted or (where it was removed) put back is stale.
    """

    def __init__(self, record: str):
        self.record = record

    def changed(self) -> list[str]:
        """The recorded files that no longer match; every file when the record is unreadable."""
        try:
            files = json.loads(Path(self.record).read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return [self.record]
        return [path for path, state in files.items()
                if (os.path.exists(path) if state is None else not target_unchanged(path, state))]

    def __call__(self) -> bool:
        return not self.changed()

    def __repr__(self) -> str:  # shown by `doit info`
        return f"RecordedFiles({self.record!r})"


def changed_keys(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every key whose value differs, sorted by key.

    A key missing on one side shows ``None`` there.
    """
    old = old or {}
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]
