"""Files that hold users' data are the proxy's alone: directories 0700, files 0600.

The data dir holds the records database (facts, their history, queued turn text, stored
responses and completions) and the retrieval index. A looser existing data dir or database
file is tightened (and logged): the proxy owns them, nobody else on the machine needs them.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("profilo.store")

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` created 0700 (its missing parents too), or tightened to 0700."""
    if not path.exists():
        for parent in reversed([path, *path.parents]):
            if not parent.exists():
                parent.mkdir(mode=DIR_MODE)
    _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty 0600 if missing (before SQLite creates it with the umask's
    mode: its -wal / -shm files take the database file's mode), or tightened to 0600."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    _tighten(path, FILE_MODE)
    return path


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & ~mode:
        try:
            os.chmod(path, mode)
        except PermissionError:
            log.warning("%s is mode %o and cannot be made %o: others may read it", path,
                        current, mode)  # fmt: skip
            return
        log.warning("%s was mode %o: tightened to %o", path, current, mode)
