"""The stand-in vendor artifacts: real debs, a real ISO, checksums, and a vendor tool that behaves like one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.loopdev import MiB, first_difference, is_zero, loop_device, read_device
from tests.support.nginx import serve
from tests.support.standin import TOOL_SOURCE, DebSpec, WebRoot, build_deb, build_web_root

pytestmark = pytest.mark.integration

ISO_SIZE = 3 * MiB + 2048


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebRoot:
    """One stand-in web root for the module (building it takes a second)."""
    return build_web_root(tmp_path_factory.mktemp("standin") / "www", iso_size=ISO_SIZE)


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], check=True, capture_output=True, text=True).stdout


def test_web_root_has_the_real_layout_and_valid_checksums(web: WebRoot) -> None:
    """The tree matches the real server's paths and both SHA256SUMS verify with sha256sum -c."""
    names = sorted(str(p.relative_to(web.root)) for p in web.root.rglob("*"))
    assert names == [
        "apollo",
        "apollo/APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso",
        "apollo/SHA256SUMS",
        "apollo/latest",
        "packages",
        "packages/SHA256SUMS",
        "packages/ostree-upgrade-bootstrap_2.0.41_all.deb",
        "packages/ostree-upgrade_2.0.41_all.deb",
    ]
    for sub in ("apollo", "packages"):
        subprocess.run(
            ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=web.root / sub, check=True, capture_output=True
        )
    assert (web.root / "apollo/latest").resolve() == web.iso.path
    assert web.expected()["apollo/" + web.iso.name] == (web.iso.path, web.iso.sha256)


def test_debs_carry_the_dependency_and_the_tool(web: WebRoot) -> None:
    """ostree-upgrade depends on the same version of ostree-upgrade-bootstrap and ships ostree-production."""
    bootstrap, upgrade = (d.path for d in web.debs)
    assert _field(bootstrap, "Package").strip() == "ostree-upgrade-bootstrap"
    assert "ostree-upgrade-bootstrap (= 2.0.41)" in _field(upgrade, "Depends")
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(upgrade)], check=True, capture_output=True, text=True
    ).stdout
    assert "-rwxr-xr-x root/root" in listing
    assert "./usr/bin/ostree-production" in listing


def test_broken_deb_variants(tmp_path: Path) -> None:
    """A deb can be built with another version, a missing dependency or a failing postinst."""
    deb = build_deb(DebSpec("ostree-upgrade", "9.9.9", depends=("no-such-package",), postinst_exit=3), tmp_path)
    assert deb.name == "ostree-upgrade_9.9.9_all.deb"
    assert _field(deb, "Depends").strip() == "no-such-package"
    postinst = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], check=True, capture_output=True).stdout
    assert b"exit 3" in postinst


def test_iso_is_iso9660_with_seeded_padding(web: WebRoot, tmp_path: Path) -> None:
    """The ISO is a real ISO 9660 image of the asked size; another release gives different bytes."""
    data = web.iso.path.read_bytes()
    assert len(data) == ISO_SIZE
    assert data[32769:32774] == b"CD001"
    other = build_web_root(tmp_path / "other", release="release-9.9.9", iso_size=ISO_SIZE)
    tail = other.iso.path.read_bytes()[-MiB:]
    assert tail != data[-MiB:]
    assert len(set(tail[:4096])) > 200  # random, not a repeated pattern


def test_latest_redirect_snippet(web: WebRoot) -> None:
    """Served with latest_redirect(), /apollo/latest answers 302 to the ISO's real name."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    with serve(web.root, extra_server=web.latest_redirect()) as nginx:
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(f"{nginx.url}/apollo/latest")
        assert err.value.code == 302
        assert err.value.headers["Location"] == f"/apollo/{web.iso.name}"


# --- the ostree-production stand-in, run on the host with its paths moved into tmp_path -----------------


@pytest.fixture
def tool_env(tmp_path: Path, web: WebRoot) -> dict[str, str]:
    """Environment for the tool with /data, the config and the log under tmp_path, the ISO in 'data'."""
    data = tmp_path / "data"
    data.mkdir()
    os.link(web.iso.path, data / web.iso.name)
    return {
        "PATH": os.environ["PATH"],
        "OSTREE_STANDIN_ISO_DIR": str(data),
        "OSTREE_STANDIN_CONF_FILE": str(tmp_path / "standin.conf"),
        "OSTREE_STANDIN_LOG_FILE": str(tmp_path / "standin.log"),
    }


def _tool(
    args: list[str], env: dict[str, str], stdin: str | None = "", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL_SOURCE), *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_tool_lists_isos(tool_env: dict[str, str], web: WebRoot) -> None:
    """list-isos prints each ISO in /data with its size and exits 0."""
    result = _tool(["list-isos"], tool_env)
    assert result.returncode == 0
    assert f"{web.iso.name}  {ISO_SIZE} bytes" in result.stdout


def test_tool_writes_after_yes(tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """After 'y' the ISO's bytes are on the disk, byte for byte, and the tool exits 0."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    with loop_device(tmp_path, size=8 * MiB) as disk:
        result = _tool(["-D", disk.path, "from", iso], tool_env, stdin="y\n")
        assert result.returncode == 0, result.stdout
        assert f"Proceed with installing {iso} on {disk.path}? [y/N]" in result.stdout
        assert "Writing image" in result.stdout
        assert first_difference(disk.path, web.iso.path) is None
        assert read_device(disk.path, MiB, offset=ISO_SIZE) == bytes(MiB)


@pytest.mark.parametrize("answer", ["", "n\n", "no\n", "yy\n"])
def test_tool_aborts_without_yes(answer: str, tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """End of input or any answer but y/yes aborts with rc 1 and leaves the disk untouched."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    with loop_device(tmp_path, size=8 * MiB) as disk:
        result = _tool(["-D", disk.path, "from", iso], tool_env, stdin=answer)
        assert result.returncode == 1
        assert "aborting, nothing written" in result.stdout
        assert is_zero(disk.path, ISO_SIZE)


def test_tool_second_prompt_needs_a_second_yes(tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """With EXTRA_PROMPT one 'y' is not enough (nothing written); two are."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    Path(tool_env["OSTREE_STANDIN_CONF_FILE"]).write_text("EXTRA_PROMPT=The disk will be wiped. Continue?\n")
    with loop_device(tmp_path, size=8 * MiB) as disk:
        once = _tool(["-D", disk.path, "from", iso], tool_env, stdin="y\n")
        assert once.returncode == 1
        assert "The disk will be wiped. Continue? [y/N]" in once.stdout
        assert is_zero(disk.path, ISO_SIZE)
        twice = _tool(["-D", disk.path, "from", iso], tool_env, stdin="y\nyes\n")
        assert twice.returncode == 0
        assert first_difference(disk.path, web.iso.path) is None


def test_tool_refuses_bad_arguments(tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """An ISO outside /data, a missing ISO, a non-block disk or a too small disk: rc 2, nothing asked."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    plain = tmp_path / "plain-file"
    plain.write_bytes(bytes(8 * MiB))
    with loop_device(tmp_path, size=8 * MiB) as disk, loop_device(tmp_path, size=MiB, name="small.img") as small:
        cases = {
            "not in": ["-D", disk.path, "from", str(web.iso.path)],
            "does not exist": ["-D", disk.path, "from", iso + ".missing"],
            "is not a block device": ["-D", str(plain), "from", iso],
            "is smaller than": ["-D", small.path, "from", iso],
        }
        for message, args in cases.items():
            result = _tool(args, tool_env, stdin="y\n")
            assert result.returncode == 2, (message, result.stdout)
            assert message in result.stdout
            assert "Proceed" not in result.stdout
        assert is_zero(disk.path, ISO_SIZE)


def test_tool_fails_after_n_bytes(tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """FAIL_AFTER_BYTES writes exactly that many bytes of the ISO and exits with EXIT_CODE."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    env = {**tool_env, "OSTREE_STANDIN_FAIL_AFTER_BYTES": str(MiB + 100), "OSTREE_STANDIN_EXIT_CODE": "42"}
    with loop_device(tmp_path, size=8 * MiB) as disk:
        result = _tool(["-D", disk.path, "from", iso], env, stdin="y\n")
        assert result.returncode == 42
        assert first_difference(disk.path, web.iso.path) == MiB + 100


def test_tool_no_prompt_and_fail_at_start(tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """NO_PROMPT writes without reading stdin; FAIL_AT_START exits with EXIT_CODE before any check."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    with loop_device(tmp_path, size=8 * MiB) as disk:
        failed = _tool(
            ["-D", disk.path, "from", iso],
            {**tool_env, "OSTREE_STANDIN_FAIL_AT_START": "1", "OSTREE_STANDIN_EXIT_CODE": "7"},
            stdin="y\n",
        )
        assert failed.returncode == 7
        assert is_zero(disk.path, ISO_SIZE)
        silent = _tool(["-D", disk.path, "from", iso], {**tool_env, "OSTREE_STANDIN_NO_PROMPT": "1"}, stdin=None)
        assert silent.returncode == 0
        assert "[y/N]" not in silent.stdout
        assert first_difference(disk.path, web.iso.path) is None
    log = Path(tool_env["OSTREE_STANDIN_LOG_FILE"]).read_text()
    assert "injected failure" not in log
    assert "wrote" in log


def test_tool_hangs_when_asked(tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """HANG=write stops after the first block and sleeps until killed."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    with loop_device(tmp_path, size=8 * MiB) as disk:
        proc = subprocess.Popen(
            [sys.executable, str(TOOL_SOURCE), "-D", disk.path, "from", iso],
            env={**tool_env, "OSTREE_STANDIN_HANG": "write"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write("y\n")
        proc.stdin.flush()
        time.sleep(1.5)
        try:
            assert proc.poll() is None
        finally:
            proc.kill()
            proc.wait()
        assert first_difference(disk.path, web.iso.path) == MiB


FAKE_EFIBOOTMGR = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/efibootmgr.argv"
[ -n "${FAKE_EFIBOOTMGR_FAIL:-}" ] && { echo "Could not prepare Boot variable: No such file or directory" >&2; exit 5; }
printf 'BootCurrent: 0001\\nBootOrder: 0004,0001,0002\\nBoot0001* UEFI QEMU NVMe\\nBoot0004* CableOS\\n'
"""


@pytest.mark.parametrize("fails", [False, True])
def test_tool_creates_its_boot_entry_when_asked(
    fails: bool, tool_env: dict[str, str], web: WebRoot, tmp_path: Path
) -> None:
    """CREATE_BOOT_ENTRY=1: after the write, `efibootmgr --create` for partition 1's loader; a failure only warns."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "efibootmgr").write_text(FAKE_EFIBOOTMGR)
    (bin_dir / "efibootmgr").chmod(0o755)
    Path(tool_env["OSTREE_STANDIN_CONF_FILE"]).write_text("CREATE_BOOT_ENTRY=1\n")
    env = {**tool_env, "PATH": f"{bin_dir}:{tool_env['PATH']}", **({"FAKE_EFIBOOTMGR_FAIL": "1"} if fails else {})}
    with loop_device(tmp_path, size=8 * MiB) as disk:
        result = _tool(["-D", disk.path, "from", iso], env, stdin="y\n")
        assert result.returncode == 0, result.stdout
        assert first_difference(disk.path, web.iso.path) is None
    argv = (bin_dir / "efibootmgr.argv").read_text().split()
    assert argv == [
        "--create",
        "--disk",
        disk.path,
        "--part",
        "1",
        "--label",
        "CableOS",
        "--loader",
        "\\EFI\\BOOT\\BOOTX64.EFI",
    ]
    log = Path(tool_env["OSTREE_STANDIN_LOG_FILE"]).read_text()
    if fails:
        assert "warning: efibootmgr failed (rc 5)" in result.stdout
        assert "boot entry not created" in log
    else:
        assert "UEFI boot entry created: Boot0004* CableOS" in result.stdout
        assert "boot entry created: Boot0004* CableOS" in log


def test_tool_makes_no_boot_entry_by_default(tool_env: dict[str, str], web: WebRoot, tmp_path: Path) -> None:
    """Without CREATE_BOOT_ENTRY the tool never runs efibootmgr (a vendor tool that leaves the firmware alone)."""
    iso = f"{tool_env['OSTREE_STANDIN_ISO_DIR']}/{web.iso.name}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "efibootmgr").write_text(FAKE_EFIBOOTMGR)
    (bin_dir / "efibootmgr").chmod(0o755)
    with loop_device(tmp_path, size=8 * MiB) as disk:
        result = _tool(
            ["-D", disk.path, "from", iso], {**tool_env, "PATH": f"{bin_dir}:{tool_env['PATH']}"}, stdin="y\n"
        )
    assert result.returncode == 0, result.stdout
    assert not (bin_dir / "efibootmgr.argv").exists()
    assert "boot entry" not in result.stdout
