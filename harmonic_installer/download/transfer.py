"""The state of one fetch across its attempts, and the signals between the parts of the downloader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmonic_installer.artifacts import ArtifactSpec
from harmonic_installer.download.request import Exchange
from harmonic_installer.download.verify import Expected
from harmonic_installer.errors import DownloadError


class OverBudget(DownloadError):
    """The wall-time budget ran out mid-transfer; the .part file is kept for the next run."""


class FinalExists(Exception):
    """The server revealed a name whose final file already exists: check it before transferring."""


@dataclass(slots=True)
class Transfer:
    """Mutable state of one fetch across attempts."""

    spec: ArtifactSpec
    lg: Any
    url_shown: str
    part: Path
    meta: Path
    name: str | None = None
    revealed: bool = False
    expected: Expected | None = None
    hasher: Any = None
    size: int = 0
    transferred: int = 0
    attempts: int = 0
    part_name: str | None = None  # the server-revealed name recorded in the sidecar of a resumed .part
    checked_existing: set[str] = field(default_factory=set)
    warned_no_validator: bool = False
    exchange: Exchange = field(default_factory=Exchange)
    failures: list[str] = field(default_factory=list)  # the reason of each failed attempt, oldest first

    @property
    def final(self) -> Path:
        """Where the verified file lands."""
        return self.spec.dest_dir / (self.name or self.spec.filename)
