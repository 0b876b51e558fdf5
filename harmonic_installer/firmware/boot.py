"""Boot entries and BootNext: point the next boot at the disk, with efibootmgr or through efivarfs directly.

`BootNext` (one-shot) is used so the firmware's order (network first, as MAAS needs it) is left alone.
"""

from __future__ import annotations

import errno
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from harmonic_installer.errors import CommandError
from harmonic_installer.firmware.efivars import GLOBAL_GUID, Efivars
from harmonic_installer.gpt import Partition, PartitionTable
from harmonic_installer.runner import Runner

log = structlog.get_logger()

ESP_LOADER = "\\EFI\\BOOT\\BOOTX64.EFI"  # the removable-media path every UEFI firmware boots
ENTRY_LABEL = "Harmonic cOS"
EFIBOOTMGR = "efibootmgr"
_TOOL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class BootEntry:
    """One Boot#### load option."""

    number: int
    label: str
    active: bool
    partuuid: str | None  # the GPT partition GUID of an HD() node, lower case
    path: str  # the device path as text

    def describe(self) -> str:
        """'Boot0003* debian HD(1,GPT,...)/File(...)'."""
        return f"Boot{self.number:04X}{'*' if self.active else ' '} {self.label} {self.path}".rstrip()


@dataclass(frozen=True, slots=True)
class BootOutcome:
    """Where the next boot goes."""

    entry: BootEntry | None  # the entry BootNext now names; None: BootNext not set
    summary: str
    warning: str | None = None


_EFIBOOTMGR_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s?(.*)$")
_HD_GPT = re.compile(r"HD\((\d+),GPT,([0-9A-Fa-f-]{36})", re.IGNORECASE)
_DEVICE_PATH_START = re.compile(r"\b(HD|PciRoot|Pci|FvVol|FvFile|BBS|VenHw|VenMsg|MAC|Uri|Acpi|File)\(")


def parse_efibootmgr(output: str) -> tuple[list[BootEntry], list[int]]:
    """The entries and the BootOrder in `efibootmgr -v` output (efibootmgr 17 and 18 formats)."""
    entries: list[BootEntry] = []
    order: list[int] = []
    for line in output.splitlines():
        if line.startswith("BootOrder:"):
            order = [int(x, 16) for x in re.findall(r"[0-9A-Fa-f]{4}", line.split(":", 1)[1])]
            continue
        match = _EFIBOOTMGR_ENTRY.match(line)
        if match is None:
            continue
        number, star, rest = int(match.group(1), 16), match.group(2), match.group(3)
        if "\t" in rest:
            label, path = rest.split("\t", 1)
        else:
            start = _DEVICE_PATH_START.search(rest)
            label, path = (rest[: start.start()], rest[start.start() :]) if start else (rest, "")
        hd = _HD_GPT.search(path)
        entries.append(BootEntry(number, label.strip(), bool(star), hd.group(2).lower() if hd else None, path.strip()))
    return entries, order


def parse_load_option(number: int, data: bytes) -> BootEntry | None:
    """A Boot#### variable's EFI_LOAD_OPTION (attributes, path length, UCS-2 label, device path), or None."""
    if len(data) < 6:
        return None
    attributes, path_len = struct.unpack_from("<IH", data, 0)
    end = 6
    while end + 1 < len(data) and data[end : end + 2] != b"\0\0":
        end += 2
    label = data[6:end].decode("utf-16-le", "replace")
    dp = data[end + 2 : end + 2 + path_len]
    nodes: list[str] = []
    partuuid = None
    offset = 0
    while offset + 4 <= len(dp):
        kind, sub, length = struct.unpack_from("<BBH", dp, offset)
        if length < 4 or offset + length > len(dp) or kind == 0x7F:
            break
        node = dp[offset : offset + length]
        if kind == 4 and sub == 1 and length >= 42:
            part, first, size = struct.unpack_from("<IQQ", node, 4)
            if node[41] == 2:
                partuuid = str(uuid.UUID(bytes_le=bytes(node[24:40])))
                nodes.append(f"HD({part},GPT,{partuuid},{first:#x},{size:#x})")
            else:
                nodes.append(f"HD({part},MBR,...)")
        elif kind == 4 and sub == 4:
            nodes.append("File(" + node[4:].decode("utf-16-le", "replace").rstrip("\0") + ")")
        else:
            nodes.append(f"Node({kind},{sub})")
        offset += length
    return BootEntry(number, label, bool(attributes & 1), partuuid, "/".join(nodes))


def load_option(label: str, partition: Partition, loader: str = ESP_LOADER) -> bytes:
    """An EFI_LOAD_OPTION for `loader` on a GPT partition: HD(...)/File(...), the form efibootmgr writes."""
    description = (label + "\0").encode("utf-16-le")
    hd = struct.pack(
        "<BBHIQQ16sBB",
        4,
        1,
        42,
        partition.number,
        partition.first_lba,
        partition.last_lba - partition.first_lba + 1,
        uuid.UUID(partition.part_guid).bytes_le,
        2,  # partition format: GPT
        2,  # signature type: GUID
    )
    path = (loader + "\0").encode("utf-16-le")
    device_path = hd + struct.pack("<BBH", 4, 4, 4 + len(path)) + path + struct.pack("<BBH", 0x7F, 0xFF, 4)
    return struct.pack("<IH", 1, len(device_path)) + description + device_path


class _Efibootmgr:
    """Boot entries through efibootmgr (the runner)."""

    name = "efibootmgr"

    def __init__(self, runner: Runner, env: Mapping[str, str] | None) -> None:
        self._runner = runner
        self._env = env

    def entries(self) -> tuple[list[BootEntry], list[int]]:
        out = self._runner.run([EFIBOOTMGR, "-v"], env=self._env, timeout=_TOOL_TIMEOUT_S).output
        return parse_efibootmgr(out)

    def create(self, disk: str, partition: Partition) -> None:
        # -C: create the entry without putting it into BootOrder (the firmware order stays as MAAS set it).
        argv = [EFIBOOTMGR, "-C", "-d", disk, "-p", str(partition.number), "-L", ENTRY_LABEL, "-l", ESP_LOADER]
        self._runner.run(argv, env=self._env, timeout=_TOOL_TIMEOUT_S)

    def set_next(self, number: int) -> None:
        self._runner.run([EFIBOOTMGR, "-n", f"{number:04X}"], env=self._env, timeout=_TOOL_TIMEOUT_S)

    def delete(self, number: int) -> None:
        self._runner.run([EFIBOOTMGR, "-b", f"{number:04X}", "-B"], env=self._env, timeout=_TOOL_TIMEOUT_S)


class _EfivarsBoot:
    """Boot entries through efivarfs directly (no efibootmgr needed)."""

    name = "efivarfs"

    def __init__(self, efivars: Efivars) -> None:
        self._efivars = efivars

    def entries(self) -> tuple[list[BootEntry], list[int]]:
        found = []
        for name in self._efivars.names(GLOBAL_GUID):
            if re.fullmatch(r"Boot[0-9A-Fa-f]{4}", name):
                data = self._efivars.read(name, GLOBAL_GUID)
                entry = parse_load_option(int(name[4:], 16), data or b"")
                if entry is not None:
                    found.append(entry)
        raw = self._efivars.read("BootOrder", GLOBAL_GUID) or b""
        order = [struct.unpack_from("<H", raw, i)[0] for i in range(0, len(raw) - 1, 2)]
        return sorted(found, key=lambda e: e.number), order

    def create(self, _disk: str, partition: Partition) -> None:
        used = {e.number for e in self.entries()[0]}
        number = next(n for n in range(0x10000) if n not in used)
        self._efivars.write(f"Boot{number:04X}", GLOBAL_GUID, load_option(ENTRY_LABEL, partition))

    def set_next(self, number: int) -> None:
        self._efivars.write("BootNext", GLOBAL_GUID, struct.pack("<H", number))

    def delete(self, number: int) -> None:
        self._efivars.delete(f"Boot{number:04X}", GLOBAL_GUID)  # ours are never in BootOrder


def boot_next_to_disk(
    runner: Runner, efivars: Efivars, disk: str, table: PartitionTable | None, *, env: Mapping[str, str] | None
) -> BootOutcome:
    """Point UEFI BootNext at the disk: the vendor's entry for one of its partitions if there is one, else a new
    entry for its EFI system partition (\\EFI\\BOOT\\BOOTX64.EFI). Never raises: problems are the warning."""
    why_not = efivars.unavailable()
    if why_not is not None:
        return BootOutcome(None, f"BootNext not set: {why_not}", f"{why_not}: the next boot follows the firmware order")
    if table is None or table.kind != "gpt":
        warning = f"{disk} has no GPT after the write: no boot entry can point at it; the firmware order decides"
        log.warning("firmware.boot_next_failed", disk=disk, reason="no GPT on the disk")
        return BootOutcome(None, "BootNext not set: no GPT on the disk", warning)
    tool: _Efibootmgr | _EfivarsBoot = _Efibootmgr(runner, env)
    listed = None
    try:
        listed = tool.entries()
    except CommandError as exc:
        log.warning("firmware.efibootmgr_unavailable", error=str(exc), instead="reading and writing efivarfs directly")
        tool = _EfivarsBoot(efivars)
    try:
        entries, order = listed or tool.entries()
        log.info("firmware.boot_entries", when="before", tool=tool.name, order=_order(order), entries=_shown(entries))
        ours = {p.part_guid.lower() for p in table.partitions}
        entry = _pick(entries, order, ours)
        if entry is None:
            esp = table.esp()
            if esp is None:
                warning = f"{disk} has no EFI system partition and no boot entry: the firmware order decides"
                log.warning("firmware.boot_next_failed", disk=disk, reason="no boot entry and no EFI system partition")
                return BootOutcome(None, "BootNext not set: no boot entry and no EFI system partition", warning)
            _forget_stale(tool, entries, ours)
            try:
                tool.create(disk, esp)
            except CommandError as exc:  # e.g. efibootmgr cannot work out this disk's device path
                log.warning("firmware.efibootmgr_create_failed", error=str(exc), instead="writing Boot#### directly")
                tool = _EfivarsBoot(efivars)
                tool.create(disk, esp)
            entries, order = tool.entries()
            entry = _pick(entries, order, {esp.part_guid.lower()})
            if entry is None:
                raise OSError(errno.EIO, "the new boot entry is not listed after creating it")
            log.info("firmware.boot_entry_created", entry=entry.describe(), tool=tool.name)
            how = f"created {entry.describe()}"
        else:
            how = f"the disk's entry {entry.describe()}"
        tool.set_next(entry.number)
        entries, order = tool.entries()
        log.info("firmware.boot_entries", when="after", tool=tool.name, order=_order(order), entries=_shown(entries))
    except (CommandError, OSError, ValueError, struct.error) as exc:  # never fail the install for this
        error = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        log.warning("firmware.boot_next_failed", disk=disk, error=error, tool=tool.name)
        return BootOutcome(None, f"BootNext not set: {error}", f"could not set BootNext to {disk}: {error}")
    log.info("firmware.boot_next_set", entry=f"Boot{entry.number:04X}", label=entry.label, disk=disk, tool=tool.name)
    return BootOutcome(entry, f"BootNext=Boot{entry.number:04X} ({how})")


def _forget_stale(tool: _Efibootmgr | _EfivarsBoot, entries: list[BootEntry], partuuids: set[str]) -> None:
    """Delete the entries an earlier install of ours made for partitions that are gone (best effort)."""
    for entry in entries:
        if entry.label == ENTRY_LABEL and entry.partuuid is not None and entry.partuuid not in partuuids:
            try:
                tool.delete(entry.number)
                log.info("firmware.boot_entry_deleted", entry=entry.describe(), reason="its partition is gone")
            except (CommandError, OSError) as exc:
                log.info("firmware.boot_entry_kept", entry=entry.describe(), error=str(exc))


def _pick(entries: list[BootEntry], order: list[int], partuuids: set[str]) -> BootEntry | None:
    """The entry for one of `partuuids`: the first in BootOrder, else the lowest number; active ones first."""
    mine = [e for e in entries if e.partuuid is not None and e.partuuid in partuuids]
    if not mine:
        return None
    rank = {n: i for i, n in enumerate(order)}
    return sorted(mine, key=lambda e: (not e.active, rank.get(e.number, len(rank)), e.number))[0]


def _order(order: list[int]) -> str:
    return ",".join(f"{n:04X}" for n in order)


def _shown(entries: list[BootEntry]) -> list[str]:
    return [e.describe() for e in entries]
