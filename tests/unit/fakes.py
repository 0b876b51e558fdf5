"""Fakes for the injected edges (DiskProbe, Runner), shared by unit tests; each subclasses its Protocol, so mypy
checks it against the real edge."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from harmonic_installer.disks import DiskInfo, DiskProbe
from harmonic_installer.errors import CommandError
from harmonic_installer.gpt import PartitionTable
from harmonic_installer.runner import CommandResult, Runner

GB = 10**9


def disk(path: str = "/dev/sda", **overrides: object) -> DiskInfo:
    """A healthy 480 GB SATA disk, with any field overridden."""
    base = DiskInfo(
        path=path,
        name=path.rsplit("/", 1)[-1],
        devtype="disk",
        size_bytes=480 * GB,
        read_only=False,
        removable=False,
        usb=False,
        model="SAMSUNG MZ7LH480",
        serial="S45NNA0M123456",
        wwn="0x5002538e40a1b2c3",
        links=(f"/dev/disk/by-id/ata-SAMSUNG_MZ7LH480_{path[-3:]}",),
        partitions=(),
        holders=(),
        mountpoints=(),
        holds_root=False,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]  # overrides untyped on purpose


@dataclass
class FakeDisks(DiskProbe):
    """A DiskProbe over a fixed set of disks."""

    known: list[DiskInfo] = field(default_factory=list)
    not_block: set[str] = field(default_factory=set)
    tables: dict[str, PartitionTable] = field(default_factory=dict)  # what each disk holds now

    def lookup(self, path: str) -> DiskInfo | None:
        if path in self.not_block:
            raise ValueError(f"{path} is not a block device")
        for d in self.known:
            if d.path == path or path in d.links:
                return d
        return None

    def disks(self) -> list[DiskInfo]:
        return [d for d in self.known if d.devtype == "disk"]

    def partition_table(self, path: str) -> PartitionTable | None:
        return self.tables.get(path)


Handler = Callable[[tuple[str, ...], str | None], tuple[int, str]]


@dataclass
class FakeRunner(Runner):
    """A Runner that records argv and answers from handlers keyed by the program name."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    envs: list[Mapping[str, str] | None] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        answer: str | None = None,
        check: bool = True,
        log_output: bool = False,
    ) -> CommandResult:
        args = tuple(argv)
        self.calls.append(args)
        self.envs.append(env)
        self.timeouts.append(timeout)
        handler = self.handlers.get(args[0])
        if handler is None:
            raise CommandError(f"cannot run {args[0]}: not found", argv=args)
        rc, out = handler(args, answer)
        if rc != 0 and check:
            raise CommandError(
                f"`{' '.join(args)}` failed with exit status {rc}", argv=args, returncode=rc, output_tail=out
            )
        return CommandResult(args, rc, out, 0.01)

    def programs(self) -> list[str]:
        return [c[0] for c in self.calls]
