"""An advisory lock file: one run at a time per tree or cache."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Optional


class LockedError(RuntimeError):
    """Another run holds the lock."""


class FileLock:
    def __init__(self, path: Path, what: str, wait: float = 0.0):
        self.path = path
        self.what = what
        self.wait = wait  # seconds to wait for the holder; 0 fails at once
        self._fd: Optional[int] = None

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise LockedError(
                    f"{self.what} is in use by another run (pid {holder}, lock {self.path}); "
                    "wait for it to finish"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
