"""Atomic file writes: a crash leaves the old file or the new one, never half of either.

Why one place: the roster, the key folders, enrolment requests, privacy ledgers and the
client's result files all need it, and each step is easy to get subtly wrong once: the
temporary file sits in the target's folder (so the rename is atomic), it is created 0600
by mkstemp and given its final mode before the rename (a secret is never briefly
readable), its bytes are fsync'd before the rename, and, where the write must survive a
power cut (a privacy ledger charged before an upload leaves), the folder is fsync'd too
so the rename itself is on disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomically(
    path: Path,
    data: bytes | Callable[[BinaryIO], None],
    *,
    mode: int = SECRET_MODE,
    sync_folder: bool = False,
) -> None:
    """Replace `path` with `data` (bytes, or a function that writes to the open file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_folder:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
