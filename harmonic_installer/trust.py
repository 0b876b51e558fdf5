"""Trust in the file system: whether a directory could be changed by a user other than root."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def directory_problem(path: Path) -> str | None:
    """Why another user could change what is in `path`, or None when only root (we) can.

    `path` and each existing parent must be owned by root (or us), not writable by a non-root group, and
    not writable by everyone unless sticky (like /tmp: others cannot replace our files there). A path that
    does not exist yet is judged by its existing parents.
    """
    euid = os.geteuid()
    current = Path(os.path.abspath(path))
    for candidate in (current, *current.parents[:-1]):  # not / itself: if that is writable, all is lost anyway
        try:
            st = os.stat(candidate)
        except FileNotFoundError:
            continue
        except OSError as exc:
            return f"{candidate} cannot be inspected ({exc.strerror})"
        if not stat.S_ISDIR(st.st_mode):
            return f"{candidate} is not a directory"
        if st.st_uid not in (0, euid):
            return f"{candidate} is owned by uid {st.st_uid}, not root"
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            return f"{candidate} is writable by every user"
        if st.st_mode & 0o020 and st.st_gid != 0:
            return f"{candidate} is writable by group {st.st_gid}"
    return None
