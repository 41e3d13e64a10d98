"""Write-to-temporary-then-rename, so a killed build never leaves a target that looks done.

doit decides what is up to date by the targets that exist. A half-written
``weights.safetensors`` left by ``kill -9`` would look like a finished target, so every
output goes through :func:`atomic_path`: the data is written to a temporary file in the
same directory (same file system, so the rename is atomic), flushed to disk, and only then
renamed onto the target name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it to ``path``.

    The caller writes the file at the yielded path (with any library: numpy, safetensors…).
    On an exception the temporary file is removed and ``path`` is left as it was.
    ``suffix`` is appended to the temporary name for libraries that insist on an extension
    (``numpy.save`` adds ``.npy`` otherwise).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    except PermissionError:
        raise unwritable(path.parent) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; give it the mode an ordinary open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except PermissionError as exc:  # a target made read-only (or immutable) since the folder was
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise unwritable(Path(exc.filename or path).parent if exc.filename else path.parent) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def unwritable(folder: Path):
    """The error for an output folder this process may not write in (a BuildError)."""
    from oxidize.errors import BuildError

    return BuildError(f"cannot write in {folder}: permission denied; make it writable "
                      f"(chmod u+w, or chattr -i where it was made immutable) or delete it, "
                      f"then run `doit` again")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> None:
    """Write ``obj`` as stable, diff-friendly JSON (sorted keys, 2-space indent, newline)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
