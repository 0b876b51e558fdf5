"""The hash of a file computed on a second thread while the file is written (read back from the page cache).

The receive loop only writes; a follower thread reads back what was written (`preadv` into one reused
buffer) and feeds the hasher. hashlib and the system calls release the GIL, so on two cores the hash costs
the download almost no time. The digest covers exactly the bytes on disk, which are the bytes verified.
"""

from __future__ import annotations

import contextlib
import os
import threading
from types import TracebackType
from typing import Protocol

BLOCK = 4 * 1024 * 1024


class Hasher(Protocol):
    """What the follower needs of a hashlib object."""

    def update(self, data: bytes | memoryview, /) -> None: ...


class Follower:
    """Feeds `hasher` with the bytes of `fd` from `start` on, as far as `advance()` says they were written.

    `close()` waits until every byte announced is hashed and raises what the thread met (an OSError reading
    the file back). Use it as a context manager: leaving the block closes it.
    """

    def __init__(self, fd: int, start: int, hasher: Hasher, *, block: int = BLOCK) -> None:
        self._fd = fd
        self._pos = start
        self._target = start
        self._hasher = hasher
        self._block = block
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hash-follower", daemon=True)
        self._thread.start()

    def advance(self, n: int) -> None:
        """`n` more bytes were written after the previous ones."""
        with self._cond:
            self._target += n
            self._cond.notify()

    def close(self) -> None:
        """Wait until everything announced is hashed; re-raise the thread's error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Follower:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.close()
            return
        with contextlib.suppress(OSError):  # the body's own error is the one to report
            self.close()

    def _run(self) -> None:
        view = memoryview(bytearray(self._block))
        try:
            while True:
                with self._cond:
                    while self._pos == self._target and not self._closed:
                        self._cond.wait()
                    if self._pos == self._target:
                        return
                    end = self._target
                pos = self._pos
                while pos < end:
                    n = os.preadv(self._fd, [view[: min(self._block, end - pos)]], pos)
                    if n == 0:
                        raise OSError(f"the file ended at {pos} bytes while {end} were written")
                    self._hasher.update(view[:n])
                    pos += n
                with self._cond:
                    self._pos = pos
        except BaseException as exc:  # handed to close(), raised in the receiving thread
            self._error = exc
