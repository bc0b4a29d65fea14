"""Writing files whole: a reader sees the old content or the new, never half of either.

One writer for every file fedrad replaces in place: secret keys (owner-only), the privacy
ledger (durable) and small caches.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` by renaming a finished temporary file over it.

    The temporary file (``.NAME.*.tmp`` beside the target) is created readable by its owner only
    (0600) and keeps that mode. ``durable`` also flushes the file and its folder to disk, so the
    write survives a crash of the machine, not only of the process.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # the umask could only have narrowed it; make it exact
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        with contextlib.suppress(OSError):  # not every platform can fsync a folder
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    return path


def write_owner_only(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` with mode 0600 from creation on, atomically.

    The bytes go to a temporary file beside the target, created 0600 (never chmod-ed down after
    the fact), which is then renamed into place, so a reader never sees half a key.
    """
    return write_atomically(path, data)
