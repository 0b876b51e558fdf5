#!/usr/bin/python3
"""Stand-in for the vendor tool `ostree-production`, shipped as /usr/bin/ostree-production in the stand-in deb.

Behaves like the vendor tool as far as the installer can see:
  ostree-production list-isos                 list *.iso in /data (name and size), rc 0
  ostree-production -D <disk> from <iso>      check, ask "Proceed ...? [y/N]", copy the ISO onto the disk

Refusals (rc 2, nothing written): the ISO is not under /data, does not exist, the disk is not a block device,
or the disk is smaller than the ISO. Any answer but y/yes, or end of input, aborts with rc 1, nothing written.
Exactly one line is read per question (byte by byte, so a second question gets the next line).

Fault knobs, from /etc/ostree-standin.conf (KEY=VALUE lines, '#' comments) and then the environment
(OSTREE_STANDIN_<KEY>, which wins). OSTREE_STANDIN_CONF_FILE, _LOG_FILE and _ISO_DIR move the fixed paths.
  EXTRA_PROMPT       text of a second question asked after the first ("" = none)
  NO_PROMPT          1: ask nothing
  FAIL_AT_START      1: exit with EXIT_CODE before doing anything
  FAIL_AFTER_BYTES   N: write N bytes, then exit with EXIT_CODE
  EXIT_CODE          the status of an injected failure (default 1)
  HANG               start | prompt | write: sleep forever at that point (before the checks, after the
                     questions, after the first block)
  BLOCK_DELAY        seconds to sleep after each block (to make a write slow enough to interrupt)
  CREATE_BOOT_ENTRY  1: after a successful write, create a UEFI boot entry for the disk's first partition
                     (`efibootmgr --create`, loader \\EFI\\BOOT\\BOOTX64.EFI, label BOOT_ENTRY_LABEL), as a vendor
                     installer that registers its OS with the firmware does; like efibootmgr's default, the new
                     entry goes first in BootOrder. A failure is a warning (rc stays 0: the image is written).
  BOOT_ENTRY_LABEL   the entry's label (default "CableOS", unlike the installer's own "Harmonic cOS" entry)
Every invocation is appended to /var/log/ostree-standin.log (argv, answers, outcome).

Runs on the target's python3 (3.10 on Ubuntu 22.04, 3.11 in the Debian sandbox); standard library only.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

# Fixed paths on the target; the environment may move them for tests that run the tool outside a sandbox.
CONF = os.environ.get("OSTREE_STANDIN_CONF_FILE", "/etc/ostree-standin.conf")
LOG = os.environ.get("OSTREE_STANDIN_LOG_FILE", "/var/log/ostree-standin.log")
ISO_DIR = os.environ.get("OSTREE_STANDIN_ISO_DIR", "/data").rstrip("/")
BLOCK = 1024 * 1024


def knobs() -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        with open(CONF, encoding="utf-8") as fh:
            for raw in fh:
                line = raw.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, _, value = line.partition("=")
                    values[key.strip().upper()] = value.strip().strip('"')
    except FileNotFoundError:
        pass
    for key, value in os.environ.items():
        if key.startswith("OSTREE_STANDIN_"):
            values[key[len("OSTREE_STANDIN_") :]] = value
    return values


def journal(message: str) -> None:
    try:
        os.makedirs(os.path.dirname(LOG), exist_ok=True)
        with open(LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {message}\n")
    except OSError:
        pass


def say(text: str, end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def hang(where: str, conf: dict[str, str]) -> None:
    if conf.get("HANG", "") == where:
        journal(f"hanging at {where}")
        say(f"(stand-in: hanging at {where})")
        while True:
            time.sleep(3600)


def read_line() -> str | None:
    """One line from stdin, byte by byte; None at end of input."""
    data = b""
    while True:
        ch = os.read(0, 1)
        if not ch:
            return data.decode(errors="replace") if data else None
        if ch == b"\n":
            return data.decode(errors="replace")
        data += ch


def ask(question: str) -> bool:
    say(f"{question} [y/N] ", end="")
    answer = read_line()
    journal(f"asked {question!r} answer={answer!r}")
    if answer is None:
        say("")
        say("No answer (end of input): aborting, nothing written.")
        return False
    if answer.strip().lower() in ("y", "yes"):
        return True
    say(f"Answer {answer.strip()!r}: aborting, nothing written.")
    return False


def list_isos() -> int:
    try:
        names = sorted(n for n in os.listdir(ISO_DIR) if n.endswith(".iso"))
    except FileNotFoundError:
        names = []
    say(f"ISO images in {ISO_DIR}:")
    for name in names:
        size = os.path.getsize(os.path.join(ISO_DIR, name))
        say(f"  {name}  {size} bytes")
    if not names:
        say("  (none)")
    return 0


def refuse(message: str) -> int:
    say(f"ostree-production: error: {message}")
    journal(f"refused: {message}")
    return 2


def disk_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


def install(disk: str, iso: str, conf: dict[str, str]) -> int:
    real_iso = os.path.realpath(iso)
    if not real_iso.startswith(ISO_DIR + "/"):
        return refuse(f"{iso} is not in {ISO_DIR}")
    if not os.path.isfile(real_iso):
        return refuse(f"{iso} does not exist")
    try:
        st = os.stat(disk)
    except FileNotFoundError:
        return refuse(f"{disk} does not exist")
    if not stat.S_ISBLK(st.st_mode):
        return refuse(f"{disk} is not a block device")
    iso_size = os.path.getsize(real_iso)
    fd = os.open(disk, os.O_RDONLY)
    try:
        size = disk_size(fd)
    finally:
        os.close(fd)
    if size < iso_size:
        return refuse(f"{disk} ({size} bytes) is smaller than {iso} ({iso_size} bytes)")
    say(f"Installing {iso} ({iso_size} bytes) on {disk} ({size} bytes).")
    say(f"All data on {disk} will be lost.")
    if conf.get("NO_PROMPT", "0") != "1":
        if not ask(f"Proceed with installing {iso} on {disk}?"):
            return 1
        extra = conf.get("EXTRA_PROMPT", "")
        if extra and not ask(extra):
            return 1
    hang("prompt", conf)
    rc = copy(real_iso, disk, iso_size, conf)
    if rc == 0 and conf.get("CREATE_BOOT_ENTRY", "0") == "1":
        create_boot_entry(disk, conf.get("BOOT_ENTRY_LABEL", "CableOS"))
    return rc


def create_boot_entry(disk: str, label: str) -> None:
    """Register the written disk's ESP loader with the firmware (efibootmgr --create puts it first in BootOrder)."""
    argv = ["efibootmgr", "--create", "--disk", disk, "--part", "1", "--label", label]
    argv += ["--loader", "\\EFI\\BOOT\\BOOTX64.EFI"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        say(f"ostree-production: warning: cannot create a UEFI boot entry: {exc}")
        journal(f"boot entry not created: {exc}")
        return
    if done.returncode != 0:
        say(f"ostree-production: warning: efibootmgr failed (rc {done.returncode}): {done.stderr.strip()}")
        journal(f"boot entry not created: efibootmgr rc={done.returncode} {done.stderr.strip()!r}")
        return
    created = [line for line in done.stdout.splitlines() if line.startswith("Boot") and label in line]
    say(f"UEFI boot entry created: {created[-1] if created else label}")
    journal(f"boot entry created: {created[-1] if created else label}")


def copy(iso: str, disk: str, iso_size: int, conf: dict[str, str]) -> int:
    fail_after = int(conf.get("FAIL_AFTER_BYTES", "-1"))
    delay = float(conf.get("BLOCK_DELAY", "0"))
    written = 0
    with open(iso, "rb") as src:
        out = os.open(disk, os.O_WRONLY)
        try:
            while True:
                block = src.read(BLOCK)
                if not block:
                    break
                if 0 <= fail_after < written + len(block):
                    os.write(out, block[: fail_after - written])
                    os.fsync(out)
                    say(f"ostree-production: error: write failed after {fail_after} bytes (injected)")
                    journal(f"failed after {fail_after} bytes")
                    return int(conf.get("EXIT_CODE", "1"))
                os.write(out, block)
                before = 10 * written // iso_size
                written += len(block)
                if 10 * written // iso_size != before or written == len(block):  # the first block, then every 10%
                    say(f"Writing image: {written} of {iso_size} bytes ({100 * written // iso_size}%)")
                if written == len(block):
                    hang("write", conf)
                if delay:
                    time.sleep(delay)
            os.fsync(out)
        finally:
            os.close(out)
    say(f"Image {os.path.basename(iso)} installed on {disk}.")
    journal(f"wrote {written} bytes to {disk}")
    return 0


def usage() -> int:
    say("usage: ostree-production list-isos | ostree-production -D <disk> from <iso>")
    return 2


def main(argv: list[str]) -> int:
    conf = knobs()
    journal(f"argv={argv!r}")
    if conf.get("FAIL_AT_START", "0") == "1":
        say("ostree-production: error: injected failure at start")
        return int(conf.get("EXIT_CODE", "1"))
    hang("start", conf)
    if argv == ["list-isos"]:
        return list_isos()
    if len(argv) == 4 and argv[0] == "-D" and argv[2] == "from":
        return install(argv[1], argv[3], conf)
    return usage()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
