"""Advisory lock files (one run at a time per tree, cache or environment build)
and atomic writes: the one home of both."""

from __future__ import annotations

import fcntl
import json
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
        self.wait = wait  # seconds to wait for the holder; 0 fails at once, math.inf never
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


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old or the new file, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """`data` as indented, key-sorted JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
