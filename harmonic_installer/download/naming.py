"""The name a file is saved under when the URL stands for 'latest': what the server reveals, sanitised.

Content-Disposition first, then the last redirect's target, then (resuming) the name recorded in the .part's
sidecar, then a SHA256SUMS entry with the same digest; a name that is not a plain file name, or carries a
path, is refused with a warning and the configured name is kept.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import httpx  # noqa: TID251  # download owner: reads httpx responses (DESIGN.md)

from harmonic_installer.download.headers import disposition_filename
from harmonic_installer.download.transfer import Transfer
from harmonic_installer.names import is_plain_name


def offered_name(resp: httpx.Response) -> str | None:
    """The plain file name a response reveals (Content-Disposition, else the redirect target), or None."""
    name = disposition_filename(resp.headers.get("content-disposition", ""))
    if name is None and resp.history:
        name = unquote(resp.url.path.rsplit("/", 1)[-1])
    return name if name is not None and is_plain_name(name) else None


def server_name(t: Transfer, resp: httpx.Response) -> tuple[str, bool]:
    """The name the server reveals (Content-Disposition, else redirect target), sanitised; else the fallback.

    Returns (name, revealed): revealed is False for the configured fallback.
    """
    offered: list[tuple[str, str]] = []
    disposition = disposition_filename(resp.headers.get("content-disposition", ""))
    if disposition is not None:
        offered.append(("Content-Disposition", disposition))
    if resp.history:
        offered.append(("redirect", unquote(resp.url.path.rsplit("/", 1)[-1])))
    suffix = Path(t.spec.filename).suffix
    for source, name in offered:
        problem = _problem(name, suffix)
        if problem is None:
            if name != t.name:
                t.lg.info("download.server_name", name=name, source=source)
            return name, True
        t.lg.warning(
            "download.server_name_rejected",
            offered=repr(name)[:120],
            source=source,
            reason=problem,
            fallback=t.spec.filename,
        )
    if not offered and t.part_name and _problem(t.part_name, suffix) is None:
        # Resuming: the server named the file when this .part was started (the validator vouches for it).
        if t.part_name != t.name:
            t.lg.info("download.server_name", name=t.part_name, source="the partial download's sidecar")
        return t.part_name, True
    if not offered and t.name is None:
        t.lg.info("download.server_name", name=t.spec.filename, source="configured (the server did not say)")
    return t.spec.filename, False


def _problem(name: str, suffix: str) -> str | None:
    """Why an offered name is refused, or None."""
    if "/" in name or "\\" in name:
        return "carries a path (a plain file name was expected; nothing of it is used)"
    if not is_plain_name(name):
        return "not a plain file name"
    if suffix and not name.endswith(suffix):
        return f"does not end in {suffix}"
    return None


def name_from_sums(t: Transfer, digest: str, sums: dict[str, str]) -> Path | None:
    """For 'latest' served without a name: the one other entry in SHA256SUMS with the same digest."""
    suffix = Path(t.spec.filename).suffix
    names = [n for n, d in sums.items() if d == digest and n.endswith(suffix) and is_plain_name(n)]
    if len(names) != 1:
        return None
    t.lg.info("download.server_name", name=names[0], source="SHA256SUMS entry with the same digest")
    return t.spec.dest_dir / names[0]
