"""Write-to-temporary-then-rename, so a killed build never leaves a target that looks done.

doit decides what is up to date by the targets that exist. A half-written
``weights.safetensors`` left by ``kill -9`` would look like a finished target, so every
output goes through :func:`atomic_path`: the data is written to a temporary file in the
same directory (same file system, so the rename is atomic), flushed to disk, and only then
renamed onto the target name.
"""

from __future__ import annotations

import contextlib
import errno
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
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        cause = out_of_room(exc, path.parent)
        if cause:
            raise no_room(path, cause) from None
        raise


#: errno values that mean "no room to write": a full disk, a quota, a file size limit.
_ROOM_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EFBIG: "file too large "
                "(the file size limit, ulimit -f, was reached)"}
if hasattr(errno, "EDQUOT"):
    _ROOM_ERRNOS[errno.EDQUOT] = "disk quota exceeded"


def out_of_room(exc: BaseException, folder: Path | None = None) -> str | None:
    """Why a write failed for want of room — a full disk, a quota, a file size limit — in
    words, or ``None`` for any other failure. Knows OSError's errno, SQLite's "database or
    disk is full" and USearch's "Failed to serialize" (which says nothing more: the folder's
    free space and the file size limit are looked at)."""
    if isinstance(exc, OSError) and exc.errno in _ROOM_ERRNOS:
        return _ROOM_ERRNOS[exc.errno]
    text = str(exc)
    if "database or disk is full" in text:
        return "no space left on device, or the file size limit was reached (database or disk is full)"
    if (isinstance(exc, RuntimeError) and "serialize" in text.lower()) or "disk I/O error" in text:
        return _why_no_room(folder) or None  # SQLite's WAL writes say only "disk I/O error"
    return None


def _why_no_room(folder: Path | None) -> str:
    import resource
    import shutil

    try:
        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return _ROOM_ERRNOS[errno.EFBIG]
    except (ValueError, OSError):
        pass
    try:
        if folder is not None and shutil.disk_usage(folder).free < (64 << 20):
            return _ROOM_ERRNOS[errno.ENOSPC]
    except OSError:
        pass
    return ""


def no_room(path: Path | str, cause: str):
    """The error for a write that found no room (a BuildError naming the file)."""
    from oxidize.errors import BuildError

    return BuildError(f"cannot write {path}: {cause}; nothing half-written was kept — make room "
                      f"and run `doit` again")


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
