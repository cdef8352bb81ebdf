"""Replacing a file whole: the one writer for every file the appliance rewrites
(state.py keeps its own, which works on a directory descriptor it has checked).

Readers see the old file or the new one, never a part. The new content goes to a
fresh file beside the old (O_EXCL | O_NOFOLLOW: a link planted under that name is
not followed), which has its owner and mode before it has any content, and is
then renamed over the old."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int, owner: tuple[int, int] | None = None,
                 durable: bool = True) -> None:
    """`owner` (uid, gid) needs root; None keeps the writer's. `durable`: the file and
    its rename are on disk before this returns (fsync), for what must survive a crash."""
    tmp = path.with_name(f".{path.name}.tmp")
    if os.path.lexists(tmp):  # left by a writer that died
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
