"""Writing secret files: readable by their owner only, never half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_owner_only(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` with mode 0600 from creation on, atomically.

    The bytes go to a temporary file beside the target, created 0600 (never chmod-ed down after
    the fact), which is then renamed into place, so a reader never sees half a key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)  # the umask could only have narrowed it; make it exact
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
