# ruff: noqa: E501  (case descriptions read best on one line)
"""Local faults with the real tools in the isolated root (tests/support/sandbox.py): real dpkg with broken
stand-in debs, the stand-in ostree-production failing, hanging or missing, a failing reboot command, and
SIGTERM/SIGINT during dpkg and during the write. A loop device is the disk; the reboot command only writes
/var/log/fake-reboot.log, so "no reboot" is checked, not assumed."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.failsafe.harness import Run, digest, fill_pattern, no_traceback
from tests.failsafe.recorder import Case, Recorder
from tests.support.loopdev import LoopDevice, MiB, first_difference, loop_device, read_device
from tests.support.sandbox import Command, CommandResult, Proxy, Sandbox, SessionResult, WebServer
from tests.support.standin import (
    BOOTSTRAP,
    UPGRADE,
    DebSpec,
    WebRoot,
    build_web_root,
    corrupt,
    tool_files,
    write_sha256sums,
)

pytestmark = pytest.mark.integration

DISK = 32 * MiB
ISO_SIZE = 4 * MiB + 2048
FIFO = "/var/log/ostree-standin-dpkg.log"  # the stand-in postinst appends here: a FIFO makes it block
FAKE_REBOOT = '#!/bin/sh\necho "reboot requested: $*" >> /var/log/fake-reboot.log\n'
SIGNAL_DURING = """#!/bin/sh
# signal-during SIGNAL SETTLE CONDITION COMMAND...: start COMMAND, wait until the shell CONDITION holds,
# wait SETTLE seconds, send SIGNAL to COMMAND, and exit with COMMAND's status.
sig=$1; settle=$2; cond=$3; shift 3
"$@" &
pid=$!
n=0
until sh -c "$cond" >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then echo "signal-during: $1 ended before: $cond" >&2; wait "$pid"; exit 97; fi
  n=$((n + 1)); if [ "$n" -gt 1200 ]; then echo "signal-during: gave up waiting for: $cond" >&2; kill -KILL "$pid"; exit 98; fi
  sleep 0.1
done
sleep "$settle"
kill -s "$sig" "$pid"
wait "$pid"
"""
QUERY = Command(("dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\\n", "ostree-upgrade*"))
PS = Command(("ps", "-eo", "args"))
JOURNAL = Command(("cat", "/run/harmonic-installer/journal.json"))


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> WebRoot:
    """The stand-in web root, built once for the module."""
    return build_web_root(tmp_path_factory.mktemp("failsafe-web") / "www", iso_size=ISO_SIZE)


def _sandbox(tmp_path: Path, conf: str | None = None) -> Sandbox:
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.write("/usr/local/bin/fake-reboot", FAKE_REBOOT, 0o755)
    sandbox.write("/usr/local/bin/signal-during", SIGNAL_DURING, 0o755)
    if conf is not None:
        sandbox.write("/etc/ostree-standin.conf", conf)
    return sandbox


def _installer(
    web: WebServer, disk: str, *extra: str, env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()
) -> Command:
    argv = (*wrapper, "harmonic-install", "-i", "--server-url", web.url, "--disk", disk, *extra)
    base = {"HARMONIC_CMDLINE_FILE": "/dev/null", "HARMONIC_REBOOT_COMMAND": "/usr/local/bin/fake-reboot"}
    return Command(argv, env={**base, **(env or {})}, timeout=300)


def _run(result: CommandResult) -> Run:
    return Run(-1 if result.returncode is None else result.returncode, result.stdout, result.stderr)


def _first(result: SessionResult) -> Run:
    assert result.commands, f"the session ran nothing (status {result.status}):\n{result.driver_stderr[-3000:]}"
    return _run(result.commands[0])


def _installed(query: CommandResult) -> list[str]:
    return sorted(w[0] for w in (line.split() for line in query.stdout.splitlines()) if w[1:2] == ["ii"])


def _tool_output(run: Run, text: str) -> bool:
    return any(e.get("event") == "command.output" and text in str(e.get("line", "")) for e in run.log_events())


def _processes(ps: CommandResult, *programs: str) -> list[str]:
    """The `ps -eo args` lines whose program (or script run by an interpreter) is one of `programs`."""
    found = []
    for line in ps.stdout.splitlines()[1:]:
        words = line.split()[:2]
        if any(Path(w).name.startswith(p) or w.endswith(".postinst") for w in words for p in programs):
            found.append(line)
    return found


def _rebooted(sandbox: Sandbox) -> bool:
    return sandbox.host_path("/var/log/fake-reboot.log") is not None


def _common(case: Case, run: Run, says: str) -> None:
    lines = run.operator_lines()
    line = lines[-1] if lines else ""
    case.check("one-line message", len([ln for ln in lines if ln.startswith("harmonic-install: ")]) == 1, run.explain())
    case.check("message names the cause", says in line, line)
    case.check("no traceback", no_traceback(run), run.explain())


def _disk(tmp_path: Path) -> AbstractContextManager[LoopDevice]:
    return loop_device(tmp_path / "disk", size=DISK)


# --- dpkg fails ------------------------------------------------------------------------------------------


def _broken_web(tmp_path: Path, *, bootstrap: DebSpec | None = None, upgrade: DebSpec | None = None) -> WebRoot:
    return build_web_root(tmp_path / "www", iso_size=ISO_SIZE, bootstrap=bootstrap, upgrade=upgrade)


DPKG_CASES = [
    ("dpkg fails: missing dependency", "ostree-upgrade Depends: no-such-package", "upgrade-dep", "no-such-package"),
    (
        "dpkg fails: postinst exits 3",
        "ostree-upgrade-bootstrap's postinst fails",
        "bootstrap-postinst",
        "postinst failing on purpose",
    ),
    (
        "dpkg fails: corrupt archive",
        "ostree-upgrade.deb damaged before SHA256SUMS was made (verifies, does not unpack)",
        "corrupt",
        "",
    ),
]


@pytest.mark.parametrize(("name", "injected", "how", "output"), DPKG_CASES, ids=[c[2] for c in DPKG_CASES])
def test_dpkg_fails(tmp_path: Path, failsafe: Recorder, name: str, injected: str, how: str, output: str) -> None:
    """dpkg fails: exit 5, one line with the cause, dpkg's output in the log, the disk untouched, no reboot."""
    case = failsafe.case("local fault", name, injected=injected, expect_exit=5)
    if how == "upgrade-dep":
        web_root = _broken_web(tmp_path, upgrade=DebSpec(UPGRADE, depends=("no-such-package",), files=tool_files()))
    elif how == "bootstrap-postinst":
        web_root = _broken_web(tmp_path, bootstrap=DebSpec(BOOTSTRAP, postinst_exit=3))
    else:
        web_root = _broken_web(tmp_path)
        corrupt(web_root.debs[1].path, offset=web_root.debs[1].size - 200)
        write_sha256sums(web_root.root / "packages", [d.name for d in web_root.debs])
    web = WebServer(web_root.root)
    sandbox = _sandbox(tmp_path)
    with _disk(tmp_path) as loop:
        fill_pattern(loop.path, DISK)
        before = digest(loop.path, DISK)
        result = sandbox.run([_installer(web, loop.path), QUERY], web=web, devices=loop.nodes())
        run = _first(result)
        case.exit(run.returncode, run.explain())
        _common(case, run, "dpkg" if how != "corrupt" else web_root.debs[1].name)
        if how == "corrupt":
            line = (run.operator_lines() or [""])[-1]
            case.check(
                "the line gives dpkg-deb's own reason, not dpkg's closing header",
                "dpkg-deb" in line and "Errors were encountered" not in line,
                line,
            )
        if output:
            case.check("dpkg's output in the log", _tool_output(run, output), run.explain())
        case.check("disk unchanged", digest(loop.path, DISK) == before)
    case.check("no reboot", not _rebooted(sandbox))
    case.check("the vendor tool never ran", sandbox.host_path("/var/log/ostree-standin.log") is None)


def test_vendor_tool_missing_after_the_install(tmp_path: Path, failsafe: Recorder) -> None:
    """The debs install but do not provide ostree-production: exit 6 naming it, the disk untouched, no reboot."""
    case = failsafe.case(
        "local fault",
        "ostree-production missing after the install",
        injected="ostree-upgrade.deb without /usr/bin/ostree-production",
        expect_exit=6,
    )
    web = WebServer(_broken_web(tmp_path, upgrade=DebSpec(UPGRADE, depends=(f"{BOOTSTRAP} (= 2.0.41)",))).root)
    sandbox = _sandbox(tmp_path)
    with _disk(tmp_path) as loop:
        fill_pattern(loop.path, DISK)
        before = digest(loop.path, DISK)
        result = sandbox.run([_installer(web, loop.path)], web=web, devices=loop.nodes())
        run = _first(result)
        case.exit(run.returncode, run.explain())
        _common(case, run, "ostree-production is not installed")
        case.check("disk unchanged", digest(loop.path, DISK) == before)
    case.check("no reboot", not _rebooted(sandbox))


# --- ostree-production fails, hangs; the reboot fails ------------------------------------------------------

TOOL_CASES = [
    (
        "ostree-production fails at start",
        "FAIL_AT_START=1 EXIT_CODE=4 (list-isos fails before any write)",
        "FAIL_AT_START=1\nEXIT_CODE=4\n",
        (),
        "unchanged",
        "injected failure at start",
    ),
    (
        "ostree-production fails mid-write",
        f"FAIL_AFTER_BYTES={2 * MiB} EXIT_CODE=5",
        f"FAIL_AFTER_BYTES={2 * MiB}\nEXIT_CODE=5\n",
        (),
        "wiped",
        "write failed after",
    ),
    (
        "ostree-production fails mid-write, --keep-disk-on-failure",
        f"FAIL_AFTER_BYTES={2 * MiB} and --keep-disk-on-failure",
        f"FAIL_AFTER_BYTES={2 * MiB}\nEXIT_CODE=5\n",
        ("--keep-disk-on-failure",),
        "kept",
        "write failed after",
    ),
    (
        "ostree-production hangs past its timeout",
        "HANG=write (after the first MiB), write.timeout_s=4",
        "HANG=write\n",
        ("--config", "/etc/failsafe-timeout.toml"),
        "wiped",
        "hanging at write",
    ),
]


@pytest.mark.parametrize(
    ("name", "injected", "conf", "extra", "disk_after", "output"),
    TOOL_CASES,
    ids=["at-start", "mid-write", "keep", "hang"],
)
def test_vendor_tool_fails(
    tmp_path: Path,
    good: WebRoot,
    failsafe: Recorder,
    name: str,
    injected: str,
    conf: str,
    extra: tuple[str, ...],
    disk_after: str,
    output: str,
) -> None:
    """The vendor tool fails or hangs: exit 6, one line with the cause, its output in the log, no process
    left, no reboot; a disk the tool started writing is wiped (cannot boot) unless the operator keeps it."""
    case = failsafe.case("local fault", name, injected=injected, expect_exit=6)
    web = WebServer(good.root)
    sandbox = _sandbox(tmp_path, conf)
    sandbox.write("/etc/failsafe-timeout.toml", "[write]\ntimeout_s = 4\n")
    with _disk(tmp_path) as loop:
        fill_pattern(loop.path, DISK)
        before = digest(loop.path, DISK)
        result = sandbox.run([_installer(web, loop.path, *extra), PS], web=web, devices=loop.nodes())
        run = _first(result)
        case.exit(run.returncode, run.explain())
        _common(case, run, "ostree-production")
        case.check("the tool's output in the log", _tool_output(run, output), run.explain())
        left = _processes(result.commands[1], "ostree-production")
        case.check("no tool process left", left == [], "\n".join(left))
        start, end = read_device(loop.path, MiB), read_device(loop.path, MiB, offset=DISK - MiB)
        iso_head = good.iso.path.read_bytes()[:MiB]
        if disk_after == "unchanged":
            case.check("disk unchanged", digest(loop.path, DISK) == before)
        elif disk_after == "wiped":
            case.check("disk wiped (cannot boot half-written)", start == bytes(MiB) and end == bytes(MiB))
            if "mid-write" in name:
                iso_second = good.iso.path.read_bytes()[MiB : 2 * MiB]
                case.check("the tool had written before failing", read_device(loop.path, MiB, offset=MiB) == iso_second)
        else:
            case.check("disk left as is (--keep-disk-on-failure)", start == iso_head, "first MiB is not the ISO's")
            case.check(
                "the choice is logged",
                any(e.get("event") == "write.disk_left_as_is" for e in run.log_events()),
                run.explain(),
            )
    case.check("no reboot", not _rebooted(sandbox))


def test_reboot_command_fails(tmp_path: Path, good: WebRoot, failsafe: Recorder) -> None:
    """The reboot command fails after a good write: exit 6, one line saying to reboot by hand, the disk holds
    the ISO."""
    case = failsafe.case(
        "local fault", "the reboot command fails", injected="reboot.command = /bin/false", expect_exit=6
    )
    web = WebServer(good.root)
    sandbox = _sandbox(tmp_path)
    with _disk(tmp_path) as loop:
        result = sandbox.run(
            [_installer(web, loop.path, env={"HARMONIC_REBOOT_COMMAND": "/bin/false"})], web=web, devices=loop.nodes()
        )
        run = _first(result)
        case.exit(run.returncode, run.explain())
        _common(case, run, "reboot by hand")
        case.check("the disk holds the ISO", first_difference(loop.path, good.iso.path) is None)
        case.check("the failing command is in the log", "/bin/false" in run.stderr, run.explain())


# --- signals during dpkg and during the write -----------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [("TERM", 143), ("INT", 130)])
def test_signal_during_dpkg_then_rerun(tmp_path: Path, good: WebRoot, failsafe: Recorder, sig: str, code: int) -> None:
    """SIG{TERM,INT} while dpkg runs a postinst: exit 143/130, dpkg stopped (no process left), the journal
    says the download is done and the packages are not, the disk untouched; a re-run installs both packages
    (dpkg --install finishes the interrupted configuration; no `dpkg --configure -a` needed) and writes the
    disk."""
    case = failsafe.case(
        "local fault",
        f"SIG{sig} during dpkg, then a re-run",
        injected=f"SIG{sig} while the bootstrap postinst blocks (its log is a FIFO)",
        expect_exit=code,
    )
    web = WebServer(good.root)
    sandbox = _sandbox(tmp_path)
    with _disk(tmp_path) as loop:
        fill_pattern(loop.path, DISK)
        before = digest(loop.path, DISK)
        wrapper = ("signal-during", sig, "0.5", 'pgrep -f "[p]ostinst configure"')
        commands = [
            Command(("mkfifo", FIFO)),
            _installer(web, loop.path, wrapper=wrapper),
            PS,
            JOURNAL,
            QUERY,
            Command(("sha256sum", loop.path)),
            Command(("rm", "-f", FIFO)),
            _installer(web, loop.path, "--json"),
            QUERY,
        ]
        result = sandbox.run(commands, web=web, devices=loop.nodes())
        assert len(result.commands) == len(commands), result.driver_stderr
        run = _run(result.commands[1])
        case.exit(run.returncode, run.explain())
        _common(case, run, f"interrupted by SIG{sig}")
        left = _processes(result.commands[2], "dpkg", "postinst")
        case.check("dpkg stopped (no process left)", left == [], "\n".join(left))
        steps = json.loads(result.commands[3].stdout or "{}").get("steps", {})
        case.check(
            "state consistent: download journaled, packages not",
            "download" in steps and "packages" not in steps,
            str(steps),
        )
        case.check(
            "dpkg shows the interrupted package unfinished",
            BOOTSTRAP not in _installed(result.commands[4]),
            result.commands[4].stdout,
        )
        case.check("disk unchanged", result.commands[5].stdout.split()[:1] == [before], result.commands[5].stdout)
        rerun = _run(result.commands[7])
        case.check(
            "re-run completes",
            rerun.returncode == 0 and first_difference(loop.path, good.iso.path) is None,
            rerun.explain(),
        )
        case.check(
            "re-run installs both packages",
            set(_installed(result.commands[8])) == {BOOTSTRAP, UPGRADE},
            result.commands[8].stdout,
        )
        reboots = sandbox.read("/var/log/fake-reboot.log").decode().splitlines()
        case.check("no reboot (only the successful re-run reboots)", len(reboots) == 1, str(reboots))


@pytest.mark.parametrize(("sig", "code"), [("TERM", 143), ("INT", 130)])
def test_signal_during_write_then_rerun(tmp_path: Path, good: WebRoot, failsafe: Recorder, sig: str, code: int) -> None:
    """SIG{TERM,INT} while ostree-production writes: the tool stopped, the disk wiped (cannot boot
    half-written), exit 143/130, no reboot; a re-run writes the whole ISO."""
    case = failsafe.case(
        "local fault",
        f"SIG{sig} during the write, then a re-run",
        injected=f"SIG{sig} after the tool wrote its first MiB (HANG=write)",
        expect_exit=code,
    )
    web = WebServer(good.root)
    sandbox = _sandbox(tmp_path, "HANG=write\n")
    with _disk(tmp_path) as loop:
        fill_pattern(loop.path, DISK)
        wrapper = ("signal-during", sig, "0.3", "grep -q 'hanging at write' /var/log/ostree-standin.log")
        commands = [
            _installer(web, loop.path, wrapper=wrapper),
            PS,
            JOURNAL,
            Command(("rm", "-f", "/etc/ostree-standin.conf")),
        ]
        result = sandbox.run(commands, web=web, devices=loop.nodes())
        run = _run(result.commands[0])
        case.exit(run.returncode, run.explain())
        _common(case, run, f"interrupted by SIG{sig}")
        left = _processes(result.commands[1], "ostree-production")
        case.check("the tool stopped (no process left)", left == [], "\n".join(left))
        steps = json.loads(result.commands[2].stdout or "{}").get("steps", {})
        case.check(
            "state consistent: packages journaled, write not", "packages" in steps and "write" not in steps, str(steps)
        )
        case.check(
            "disk wiped (cannot boot half-written)",
            read_device(loop.path, MiB) == bytes(MiB) and read_device(loop.path, MiB, offset=DISK - MiB) == bytes(MiB),
        )
        case.check("no reboot", not _rebooted(sandbox))
        again = sandbox.run([_installer(web, loop.path)], web=web, devices=loop.nodes())
        rerun = _first(again)
        case.check(
            "re-run completes",
            rerun.returncode == 0 and first_difference(loop.path, good.iso.path) is None,
            rerun.explain(),
        )


# --- not one byte reaches the disk before everything is verified and installed ----------------------------


def test_no_byte_reaches_the_disk_before_the_write_step(tmp_path: Path, good: WebRoot, failsafe: Recorder) -> None:
    """Each step before the write fails in turn (preflight, the proxy, a deb, the ISO, its signature,
    dpkg): each run stops with its family's exit code and the disk's bytes are unchanged after each."""
    www = tmp_path / "www"
    import shutil

    shutil.copytree(good.root, www, symlinks=True)
    (www / "packages-missing").mkdir()
    shutil.copy(www / "packages" / "SHA256SUMS", www / "packages-missing" / "SHA256SUMS")
    shutil.copy(good.debs[0].path, www / "packages-missing" / good.debs[0].name)
    (www / "apollo-corrupt").mkdir()
    shutil.copy(good.iso.path, www / "apollo-corrupt" / good.iso.name)
    shutil.copy(www / "apollo" / "SHA256SUMS", www / "apollo-corrupt" / "SHA256SUMS")
    corrupt(www / "apollo-corrupt" / good.iso.name)
    broken = _broken_web(tmp_path / "broken", bootstrap=DebSpec(BOOTSTRAP, postinst_exit=3))
    shutil.copytree(broken.root / "packages", www / "packages-postinst")
    (tmp_path / "keyring").write_bytes(b"")
    web = WebServer(www)
    fast = {"HARMONIC_DOWNLOAD_ATTEMPTS": "2", "HARMONIC_DOWNLOAD_BACKOFF_MAX_S": "0"}
    steps = [
        (
            "preflight fails: no disk matches the hints",
            "`--disk-serial NO-SUCH-SERIAL`",
            3,
            ("--disk-serial", "NO-SUCH-SERIAL"),
            {},
        ),
        (
            "download fails: the proxy is unreachable",
            "`-p --proxy-url http://127.0.0.1:1`",
            4,
            ("-p", "--proxy-url", "http://127.0.0.1:1", "--no-proxy", "localhost"),
            fast,
        ),
        (
            "download fails: a deb is missing (404)",
            "packages/ holds one of the two debs",
            4,
            (),
            {**fast, "HARMONIC_PACKAGES_PATH": "packages-missing"},
        ),
        (
            "download fails: the ISO does not match SHA256SUMS",
            "ISO damaged after SHA256SUMS was made",
            4,
            ("--iso-path", f"apollo-corrupt/{good.iso.name}"),
            fast,
        ),
        (
            "download fails: SHA256SUMS.gpg missing with a keyring",
            "`checksums.keyring` set, no SHA256SUMS.gpg on the server",
            4,
            ("--keyring", "/etc/failsafe-keyring.gpg"),
            fast,
        ),
        (
            "packages fail: dpkg postinst exits 3",
            "ostree-upgrade-bootstrap's postinst fails",
            5,
            (),
            {"HARMONIC_PACKAGES_PATH": "packages-postinst"},
        ),
    ]
    sandbox = _sandbox(tmp_path)
    sandbox.write("/etc/failsafe-keyring.gpg", b"")
    with _disk(tmp_path) as loop:
        fill_pattern(loop.path, DISK)
        before = digest(loop.path, DISK)
        commands: list[Command] = []
        for _name, _injected, _code, extra, env in steps:
            commands += [_installer(web, loop.path, *extra, env=env), Command(("sha256sum", loop.path))]
        result = sandbox.run(commands, web=web, devices=loop.nodes())
        assert len(result.commands) == len(commands), result.driver_stderr
        for i, (name, injected, code, _extra, _env) in enumerate(steps):
            case = failsafe.case(
                "disk safety", f"no byte before verify+install: {name}", injected=injected, expect_exit=code
            )
            run = _run(result.commands[2 * i])
            case.exit(run.returncode, run.explain())
            case.check("no traceback", no_traceback(run), run.explain())
            after = result.commands[2 * i + 1].stdout.split()[0] if result.commands[2 * i + 1].stdout else ""
            case.check("disk unchanged", after == before, f"{after} != {before}")
            case.check("the vendor tool never ran", sandbox.host_path("/var/log/ostree-standin.log") is None)
    case.check("no reboot", not _rebooted(sandbox))


def test_files_have_safe_permissions_after_an_install(tmp_path: Path, good: WebRoot, failsafe: Recorder) -> None:
    """After a real install: state dir 0700, journal and lock 0600, downloads 0644 in root-owned 0755 dirs, and
    nothing left in the world-writable temporary directories."""
    case = failsafe.case(
        "secrets and trust",
        "file permissions after an install",
        injected="a complete -i --no-reboot install in the isolated root",
        expect_exit=0,
    )
    web = WebServer(good.root)
    sandbox = _sandbox(tmp_path)
    files = [
        "/run/harmonic-installer",
        "/run/harmonic-installer/journal.json",
        "/run/harmonic-installer/lock",
        "/data",
        f"/data/{good.iso.name}",
        "/media/root-rw",
        *(f"/media/root-rw/{d.name}" for d in good.debs),
    ]
    with _disk(tmp_path) as loop:
        commands = [
            _installer(web, loop.path, "--no-reboot"),
            Command(("stat", "-c", "%a %U %n", *files)),
            Command(("find", "/tmp", "/var/tmp", "/dev/shm", "-mindepth", "1")),
            Command(("sh", "-c", "ls -A /data /media/root-rw /run/harmonic-installer")),
        ]
        result = sandbox.run(commands, web=web, devices=loop.nodes())
        run = _first(result)
        case.exit(run.returncode, run.explain())
    modes = {line.split()[2]: (line.split()[0], line.split()[1]) for line in result.commands[1].stdout.splitlines()}
    expected = {
        "/run/harmonic-installer": "700",
        "/run/harmonic-installer/journal.json": "600",
        "/run/harmonic-installer/lock": "600",
        "/data": "755",
        f"/data/{good.iso.name}": "644",
        **{f"/media/root-rw/{d.name}": "644" for d in good.debs},
    }
    case.check(
        "state 0600 in a 0700 dir, downloads 0644 in 0755 dirs",
        all(modes.get(k, ("?",))[0] == v for k, v in expected.items()),
        result.commands[1].stdout,
    )
    case.check(
        "everything owned by root", all(owner == "root" for _, owner in modes.values()), result.commands[1].stdout
    )
    case.check(
        "nothing left in /tmp, /var/tmp, /dev/shm", result.commands[2].stdout.strip() == "", result.commands[2].stdout
    )
    listing = result.commands[3].stdout
    case.check("no leftover partial or temporary files", ".part" not in listing and ".journal-" not in listing, listing)


def test_no_secret_in_any_process_title_while_the_tool_writes(
    tmp_path: Path, good: WebRoot, failsafe: Recorder
) -> None:
    """With proxy credentials and a MAAS token in the environment, every process title in the isolated root,
    read while ostree-production writes (dpkg and the tool have run as children), is free of them."""
    case = failsafe.case(
        "secrets and trust",
        "process titles of the installer's children",
        injected="-p with proxy user:password in HARMONIC_PROXY_URL; every /proc/*/cmdline read while ostree-production writes",
        expect_exit=143,
    )
    web = WebServer(good.root)
    proxy = Proxy()
    secret = "PROXYPW-s3cr3t"
    sandbox = _sandbox(tmp_path, "HANG=write\n")
    dump = "for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < $f; echo; done > /var/log/cmdlines.txt"
    cond = f"grep -q 'hanging at write' /var/log/ostree-standin.log && {{ {dump}; }}"
    env = {"HARMONIC_PROXY_URL": proxy.url.replace("://", f"://alice:{secret}@")}
    with _disk(tmp_path) as loop:
        command = _installer(
            web, loop.path, "-p", "--no-proxy", "localhost", env=env, wrapper=("signal-during", "TERM", "0", cond)
        )
        result = sandbox.run([command], web=web, proxy=proxy, devices=loop.nodes())
        run = _first(result)
        case.exit(run.returncode, run.explain())
    titles = sandbox.read("/var/log/cmdlines.txt").decode(errors="replace")
    case.check("the tool's title was captured", "ostree-production -D" in titles, titles)
    case.check("no secret in any process title", secret not in titles, titles)
    case.check("no secret in the output or the log", secret not in run.stdout + run.stderr)
    case.check("the downloads went through the proxy", bool(result.proxied_requests()), str(result.proxy_log[-5:]))


def test_sigkill_during_the_write_leaves_no_writer_behind(tmp_path: Path, good: WebRoot, failsafe: Recorder) -> None:
    """SIGKILL to the installer while ostree-production writes: the tool does not outlive it (no second writer
    when the installer is started again), and a re-run writes the whole ISO."""
    case = failsafe.case(
        "local fault",
        "SIGKILL during the write, then a re-run",
        injected="SIGKILL to the installer after the tool wrote its first MiB (HANG=write)",
        expect_exit=137,
    )
    web = WebServer(good.root)
    sandbox = _sandbox(tmp_path, "HANG=write\n")
    with _disk(tmp_path) as loop:
        fill_pattern(loop.path, DISK)
        wrapper = ("signal-during", "KILL", "0.3", "grep -q 'hanging at write' /var/log/ostree-standin.log")
        commands = [
            _installer(web, loop.path, wrapper=wrapper),
            Command(("sleep", "1")),
            PS,
            Command(("rm", "-f", "/etc/ostree-standin.conf")),
            _installer(web, loop.path),
        ]
        result = sandbox.run(commands, web=web, devices=loop.nodes())
        run = _run(result.commands[0])
        case.exit(run.returncode, run.explain())
        left = _processes(result.commands[2], "ostree-production")
        case.check("the tool stopped with the installer (no process left)", left == [], "\\n".join(left))
        rerun = _run(result.commands[4])
        case.check(
            "re-run completes",
            rerun.returncode == 0 and first_difference(loop.path, good.iso.path) is None,
            rerun.explain(),
        )
