# ruff: noqa: E501  (the case tables read best one case per line)
"""Bad input through the real entry point: the documented exit code, one line naming the problem, no
traceback, nothing created, nothing installed, the disk untouched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.failsafe.harness import Host, digest, no_traceback, one_line, patterned_disk
from tests.failsafe.recorder import Recorder
from tests.failsafe.webserver import DEBS, ISO_NAME, RELEASE, File, install_args, serve, standard_files, sums
from tests.support.loopdev import MiB, loop_device

pytestmark = pytest.mark.integration

ISO = bytes(range(256)) * 4096 * 2  # 2 MiB


@dataclass(frozen=True)
class Bad:
    """One bad input given to a settings source."""

    name: str
    injected: str
    args: tuple[str, ...] = ()
    config: str | None = None  # TOML written to config.toml and passed with --config
    cmdline: str | None = None  # the kernel command line
    env: dict[str, str] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # what the one line must mention
    code: int = 2


SETTINGS_CASES = [
    Bad("malformed TOML", "config file `[server` (unclosed table)", config="[server\nurl = 1\n", names=("config.toml", "not valid TOML")),
    Bad("unknown key in the config file", "`[server] adress = ...`", config='[server]\nadress = "http://127.0.0.1"\n', names=("unknown key server.adress",)),
    Bad("unknown section in the config file", "`[disks] device = ...`", config='[disks]\ndevice = "/dev/sdb"\n', names=("disks.device",)),
    Bad("wrong type: string for a number", '`download.attempts = "many"`', config='[download]\nattempts = "many"\n', names=("download.attempts",)),
    Bad("wrong type: number for a bool", "`disk.allow_removable = 3`", config="[disk]\nallow_removable = 3\n", names=("disk.allow_removable",)),
    Bad("wrong type: table for a string", "`server.url = {a = 1}`", config="[server]\nurl = {a = 1}\n", names=("server.url",)),
    Bad("negative timeout", "`HARMONIC_WRITE_TIMEOUT_S=-5`", env={"HARMONIC_WRITE_TIMEOUT_S": "-5"}, names=("write.timeout_s",)),
    Bad("URL not http(s): ftp", "`--server-url ftp://127.0.0.1/pub`", args=("--server-url", "ftp://127.0.0.1/pub"), names=("server.url", "http")),
    Bad("URL not http(s): file", "`--server-url file:///etc/passwd`", args=("--server-url", "file:///etc/passwd"), names=("server.url",)),
    Bad("URL without a host", "`--server-url http:///x`", args=("--server-url", "http:///x"), names=("server.url",)),
    Bad("proxy URL not http(s)", "`--proxy-url socks5://127.0.0.1:1080`", args=("-p", "--proxy-url", "socks5://127.0.0.1:1080"), names=("proxy.url",)),
    Bad("disk path traversing out of /dev", "`--disk /dev/../etc/passwd`", args=("--disk", "/dev/../etc/passwd"), names=("disk.device", "..")),
    Bad("disk path outside /dev", "`--disk /etc/passwd`", args=("--disk", "/etc/passwd"), names=("disk.device",)),
    Bad("package name with a path separator", "`--packages ../../etc/x.deb`", args=("--packages", "../../etc/x.deb"), names=("packages.names",)),
    Bad("package name with a slash", "`--packages sub/x.deb`", args=("--packages", "sub/x.deb"), names=("packages.names",)),
    Bad("package that is not a .deb", "`--packages x.sh`", args=("--packages", "x.sh"), names=("packages.names",)),
    Bad("ISO path traversing", "`--iso-path apollo/../../etc/shadow`", args=("--iso-path", "apollo/../../etc/shadow"), names=("iso.path",)),
    Bad("pinned SHA-256 not hex", "`--iso-sha256 xyz`", args=("--iso-sha256", "xyz"), names=("iso.sha256",)),
    Bad("kernel command line: unknown parameter", "`harmonic.disk.devise=/dev/sdb`", cmdline="BOOT_IMAGE=/vmlinuz harmonic.disk.devise=/dev/sdb quiet", names=("harmonic.disk.devise",)),
    Bad("kernel command line: parameter without value", "`harmonic.server.url`", cmdline="ro harmonic.server.url quiet", names=("harmonic.server.url",)),
    Bad("kernel command line: junk value", "`harmonic.download.attempts=lots`", cmdline="harmonic.download.attempts=lots", names=("download.attempts", "kernel command line")),
    Bad("kernel command line: control characters", "`harmonic.iso.release=a\\x1b[2Jb`", cmdline="harmonic.iso.release=a\x1b[2Jb", names=("iso.release",)),
    Bad("environment: unknown variable", "`HARMONIC_DISK_DEVISE=/dev/sdb`", env={"HARMONIC_DISK_DEVISE": "/dev/sdb"}, names=("HARMONIC_DISK_DEVISE",)),
    Bad("relative directory", "`--iso-dir data`", args=("--iso-dir", "data"), names=("paths.iso_dir",)),
    Bad("NaN read timeout", "`HARMONIC_DOWNLOAD_READ_TIMEOUT_S=nan`", env={"HARMONIC_DOWNLOAD_READ_TIMEOUT_S": "nan"}, names=("download.read_timeout_s", "finite")),
    Bad("infinite connect timeout", "`harmonic.download.connect_timeout_s=inf`", cmdline="harmonic.download.connect_timeout_s=inf", names=("download.connect_timeout_s", "finite")),
    Bad("NaN wall-time budget in TOML", "`[download] max_time_s = nan`", config="[download]\nmax_time_s = nan\n", names=("download.max_time_s", "finite")),
    Bad("overflowing number of attempts", "`HARMONIC_DOWNLOAD_ATTEMPTS=1e400`", env={"HARMONIC_DOWNLOAD_ATTEMPTS": "1e400"}, names=("download.attempts",)),
    Bad("absurd read timeout", "`HARMONIC_DOWNLOAD_READ_TIMEOUT_S=1e12`", env={"HARMONIC_DOWNLOAD_READ_TIMEOUT_S": "1e12"}, names=("download.read_timeout_s", "at most")),
    Bad("absurd stall window", "`[download] stall_window_s = 1e300`", config="[download]\nstall_window_s = 1e300\n", names=("download.stall_window_s", "at most")),
    Bad("over-long ISO release", "`--iso-release` of 250 characters", args=("--iso-release", "r" * 250), names=("iso.release", "255")),
]  # fmt: skip


@pytest.mark.parametrize("bad", SETTINGS_CASES, ids=lambda b: b.name)
def test_bad_setting(tmp_path: Path, failsafe: Recorder, bad: Bad) -> None:
    """A bad setting from any source: exit 2, one line naming it, no traceback, nothing created."""
    case = failsafe.case("bad input", bad.name, injected=bad.injected, expect_exit=bad.code)
    host = Host(tmp_path)
    args = ["-p", "-i", *host.dirs(), *bad.args]
    if "--iso-dir" in bad.args:
        args = ["-i", "--working-dir", str(host.work), "--state-dir", str(host.state), *bad.args]
    if bad.config is not None:
        (tmp_path / "config.toml").write_text(bad.config)
        args += ["--config", str(tmp_path / "config.toml")]
    env = dict(bad.env)
    if bad.cmdline is not None:
        (tmp_path / "cmdline").write_text(bad.cmdline)
        env["HARMONIC_CMDLINE_FILE"] = str(tmp_path / "cmdline")
    run = host.run(args, env)
    case.exit(run.returncode, run.explain())
    line = one_line(run)
    case.check("one-line message", line is not None and line.startswith("harmonic-install: "), run.explain())
    assert line is not None
    case.check("message names the problem", all(n in line for n in bad.names), line)
    case.check("no traceback", no_traceback(run), run.explain())
    case.check("no control characters echoed", not any(ord(c) < 32 and c != "\t" for c in line), repr(line))
    case.check(
        "nothing created",
        not host.work.exists() and not host.data.exists() and not host.state.exists(),
        str(list(tmp_path.iterdir())),
    )
    case.check("nothing ran (no dpkg, no vendor tool, no reboot)", host.tripped() == "", host.tripped())


def test_disk_that_is_not_a_block_device(tmp_path: Path, failsafe: Recorder) -> None:
    """`--disk /dev/null` (a character device): exit 3 naming it, nothing downloaded."""
    case = failsafe.case("bad input", "disk that is not a block device", injected="`--disk /dev/null`", expect_exit=3)
    host = Host(tmp_path)
    run = host.run(["-i", *host.dirs(), "--disk", "/dev/null", "--server-url", "http://127.0.0.1:9"])
    case.exit(run.returncode, run.explain())
    line = one_line(run) or ""
    case.check("one-line message", line.startswith("harmonic-install: "), run.explain())
    case.check("message names the problem", "/dev/null" in line and "not a block device" in line, line)
    case.check("no traceback", no_traceback(run), run.explain())
    case.check("nothing created", host.created() == [], str(host.created()))


def test_disk_that_is_a_partition(tmp_path: Path, failsafe: Recorder) -> None:
    """`--disk /dev/loopNp1`: exit 3 naming the whole disk to give instead; the disk untouched."""
    case = failsafe.case("bad input", "disk that is a partition", injected="`--disk /dev/loopNp1`", expect_exit=3)
    host = Host(tmp_path)
    with loop_device(tmp_path / "disk", size=32 * MiB, partitions=["size=8MiB", ","]) as loop:
        before = digest(loop.path, loop.size)
        run = host.run(["-i", *host.dirs(), "--disk", loop.partitions[0], "--server-url", "http://127.0.0.1:9"])
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        case.check("one-line message", line.startswith("harmonic-install: "), run.explain())
        case.check("message names the problem", "partition" in line and loop.path in line, line)
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("nothing created", host.created() == [], str(host.created()))


SUMS_CASES = [
    ("SHA256SUMS with a malformed line", "a line `this is not a checksum line`", b"this is not a checksum line\n", "malformed"),
    ("SHA256SUMS naming a path with /", "`<sha>  ../a_1_all.deb`, `<sha>  sub/b_1_all.deb`", sums({"../a_1_all.deb": b"x"}) + sums({"sub/b_1_all.deb": b"y"}), "not a plain file name"),
    ("SHA256SUMS naming ..", "`<sha>  ..`", sums({"..": b"x"}), "not a plain file name"),
    ("SHA256SUMS with a duplicate name", "a_1_all.deb listed twice with different sums", sums({"a_1_all.deb": b"x"}) + sums({"a_1_all.deb": b"y"}), "second time"),
    ("SHA256SUMS with a short digest", "`abc123  a_1_all.deb`", b"abc123  a_1_all.deb\n", "malformed"),
    ("SHA256SUMS with a CR inside a line", "CRLF line ends and `<sha>  a_1_all.deb\\r\\r\\n`", sums({"b_1_all.deb": b"x"}).replace(b"\n", b"\r\n") + sums({"a_1_all.deb": b"x"}).replace(b"\n", b"\r\r\n"), "not a plain file name"),
    ("SHA256SUMS that is an HTML page", "an HTML welcome page with status 200", b"<!DOCTYPE html><html><title>Welcome</title></html>", "HTML"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "what", "body", "says"), SUMS_CASES, ids=[c[0] for c in SUMS_CASES])
def test_bad_checksum_file(tmp_path: Path, failsafe: Recorder, name: str, what: str, body: bytes, says: str) -> None:
    """A hostile or broken SHA256SUMS: exit 4 naming the line, nothing downloaded, the disk untouched."""
    case = failsafe.case("bad input", name, injected=f"packages/SHA256SUMS with {what}", expect_exit=4)
    host = Host(tmp_path)
    files = standard_files(ISO)
    files["/packages/SHA256SUMS"] = File(body)
    with serve(files) as site, patterned_disk(tmp_path / "disk", 8 * MiB) as loop:
        before = digest(loop.path, loop.size)
        run = host.run([*install_args(site, loop.path), *host.dirs()])
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        case.check("one-line message", line.startswith("harmonic-install: "), run.explain())
        case.check("message names the problem", "SHA256SUMS" in line and says in line, line)
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("nothing created", host.created() == [], str(host.created()))
        case.check("no package installed", host.tripped() == "", host.tripped())
        case.check("no deb requested", not any(p.endswith(".deb") for p, _ in site.requests), str(site.requests))


DISPOSITIONS = [
    ("hostile Content-Disposition: ../../etc/cron.d/x", 'attachment; filename="../../etc/cron.d/x"'),
    ("hostile Content-Disposition: ../../etc/cron.d/x.iso", 'attachment; filename="../../etc/cron.d/x.iso"'),
    ("hostile Content-Disposition: encoded traversal", "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fcron.d%2Fx.iso"),
    ("hostile Content-Disposition: absolute path", 'attachment; filename="/etc/cron.d/x.iso"'),
    ("hostile Content-Disposition: newline in the name", "attachment; filename*=UTF-8''x%0A.iso"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "header"), DISPOSITIONS, ids=[d[0] for d in DISPOSITIONS])
def test_hostile_content_disposition(tmp_path: Path, failsafe: Recorder, name: str, header: str) -> None:
    """apollo/latest answered with a path in Content-Disposition: at most the last component is used, as a
    plain *.iso name inside the ISO dir, and only once the ISO verified against SHA256SUMS; the run stops at
    the too-small disk (exit 3, from the announced size). Refusing the name outright (exit 4, nothing stored) is as safe. Either way
    nothing is written outside the installer's directories."""
    case = failsafe.case("bad input", name, injected=f"Content-Disposition: {header}", expect_exit=None)
    host = Host(tmp_path)
    files = standard_files(ISO, iso_file=File(ISO, headers={"Content-Disposition": header}), iso_at="latest")
    cron = Path("/etc/cron.d")
    cron_before = sorted(p.name for p in cron.iterdir()) if cron.exists() else []
    with serve(files) as site, patterned_disk(tmp_path / "disk", 1 * MiB) as loop:
        before = digest(loop.path, loop.size)
        run = host.run([*install_args(site, loop.path, iso_at="latest"), *host.dirs()])
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        isos = [f for f in host.created() if f.startswith("data/") and f.endswith(".iso")]
        if run.returncode == 3:
            case.check("exit 3: the small disk refused", "smaller than the image" in line, line)
            plain = len(isos) <= 1 and all(i.count("/") == 1 and "\n" not in i for i in isos)
            case.check("any ISO stored only in the ISO dir, under a plain name", plain, str(host.created()))
        else:
            case.check(
                "exit 4: the offered name refused, naming it", run.returncode == 4 and "x.iso" in line, run.explain()
            )
            case.check("nothing stored under the offered name", isos == [], str(host.created()))
        case.check("no traceback", no_traceback(run), run.explain())
        case.check(
            "nothing written outside the installer's directories",
            sorted(p.name for p in tmp_path.iterdir()) == ["data", "disk", "state", "tripwire-bin", "work"],
            str(list(tmp_path.iterdir())),
        )
        case.check(
            "nothing written to /etc/cron.d",
            (sorted(p.name for p in cron.iterdir()) if cron.exists() else []) == cron_before,
        )
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())


__all__ = ["DEBS", "ISO_NAME", "RELEASE"]


def test_checksum_file_with_windows_line_endings_is_accepted(tmp_path: Path, failsafe: Recorder) -> None:
    """packages/SHA256SUMS with CRLF line ends verifies the debs; the run goes on (to the too-small disk, exit 3)."""
    case = failsafe.case(
        "bad input",
        "SHA256SUMS with Windows line endings",
        injected="CRLF line ends in packages/SHA256SUMS",
        expect_exit=3,
    )
    host = Host(tmp_path)
    files = standard_files(ISO)
    files["/packages/SHA256SUMS"] = File(files["/packages/SHA256SUMS"].body.replace(b"\n", b"\r\n"))
    with serve(files) as site, patterned_disk(tmp_path / "disk", 1 * MiB) as loop:
        before = digest(loop.path, loop.size)
        run = host.run([*install_args(site, loop.path), *host.dirs()])
        case.exit(run.returncode, run.explain())
        verified = [e.get("artifact") for e in run.log_events() if e.get("event") == "download.verified"]
        case.check(
            "both debs verified against the CRLF file", sorted(map(str, verified)) == sorted(DEBS), str(verified)
        )
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())


@pytest.mark.parametrize(
    ("name", "credentials", "status"),
    [
        ("proxy without its password", "", "407 Proxy Authentication Required"),
        ("proxy with a wrong password", "ops:Wr0ngPw@", "401 Unauthorized"),
    ],
)
def test_proxy_refusing_the_credentials(
    tmp_path: Path, failsafe: Recorder, name: str, credentials: str, status: str
) -> None:
    """tinyproxy with BasicAuth refuses the request: exit 4 at once, one line naming the proxy (no password)."""
    from tests.e2e.proxy import tinyproxy

    case = failsafe.case("bad input", name, injected=f"-p through tinyproxy with BasicAuth, {status}", expect_exit=4)
    host = Host(tmp_path)
    with (
        serve(standard_files(ISO)) as site,
        tinyproxy(tmp_path / "proxy", allow=("127.0.0.1",), basic_auth=("ops", "right")) as proxy,
        patterned_disk(tmp_path / "disk", 8 * MiB) as loop,
    ):
        before = digest(loop.path, loop.size)
        proxy_url = f"http://{credentials}{proxy.host}:{proxy.port}"
        run = host.run(
            ["-p", *install_args(site, loop.path), *host.dirs(), "--proxy-url", proxy_url, "--no-proxy", "localhost"]
        )
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        case.check(
            "one-line message naming the proxy and the status",
            f"{proxy.host}:{proxy.port}" in line and status in line,
            line,
        )
        case.check("says what to check", "proxy.url" in line, line)
        case.check("password not shown", "Wr0ngPw" not in run.stdout + run.stderr, line)
        case.check("not retried", len(proxy.requests()) == 1, str(proxy.requests()))
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("disk unchanged", digest(loop.path, loop.size) == before)
        case.check("no package installed", host.tripped() == "", host.tripped())
