# ruff: noqa: E501  (case descriptions read best on one line)
"""Secrets and trust through the real entry point: proxy credentials, server credentials and the MAAS token
never appear in logs, reports, errors or process titles; TLS verification is on for https with a CA file
option; files get safe permissions in directories the program owns."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.failsafe.harness import Host, Run, no_traceback, one_line, patterned_disk
from tests.failsafe.recorder import Recorder
from tests.failsafe.webserver import ISO_NAME, File, install_args, serve, standard_files
from tests.support.loopdev import MiB

pytestmark = pytest.mark.integration

ISO = bytes(range(256)) * 8192  # 2 MiB
PROXY_PW, SERVER_PW, MAAS_SECRET = "PROXYPW-s3cr3t", "SERVERPW-s3cr3t", "MAASTOKEN-s3cr3t"
SECRETS = (PROXY_PW, SERVER_PW, MAAS_SECRET)


def _leaks(*texts: str) -> list[str]:
    return [s for s in SECRETS if any(s in t for t in texts)]


def _secret_env(site_url: str, proxy_url: str, maas_url: str) -> dict[str, str]:
    host = site_url.split("://", 1)[1]
    return {
        "HARMONIC_SERVER_URL": f"http://bob:{SERVER_PW}@{host}",
        "HARMONIC_PROXY_URL": proxy_url.replace("://", f"://alice:{PROXY_PW}@"),
        "HARMONIC_MAAS_ENABLED": "true",
        "HARMONIC_MAAS_ENDPOINT": f"{maas_url}/MAAS/metadata/status/abc123",
        "HARMONIC_MAAS_CONSUMER_KEY": "ckey",
        "HARMONIC_MAAS_TOKEN_KEY": "tkey",
        "HARMONIC_MAAS_TOKEN_SECRET": MAAS_SECRET,
        "HARMONIC_MAAS_FLUSH_TIMEOUT_S": "2",
    }


def test_settings_listing_and_plan_show_no_secret(tmp_path: Path, failsafe: Recorder) -> None:
    """`settings` (text and JSON) and the plan show every setting with credentials as '***'."""
    host = Host(tmp_path)
    env = _secret_env("http://127.0.0.1:9", "http://127.0.0.1:8", "http://127.0.0.1:7")
    for name, args in (
        ("settings listing", ["settings"]),
        ("settings listing as JSON", ["--json", "settings"]),
        ("plan (no -i)", ["-p", *host.dirs(), "--disk", "/dev/null"]),
    ):
        case = failsafe.case(
            "secrets and trust",
            f"credentials in the environment: {name}",
            injected="proxy and server user:password, MAAS token secret in HARMONIC_*",
            expect_exit=0,
        )
        run = host.run(args, env)
        case.exit(run.returncode, run.explain())
        case.check(
            "no secret in the output or the log",
            _leaks(run.stdout, run.stderr) == [],
            str(_leaks(run.stdout, run.stderr)),
        )
        case.check("credentials shown as ***", "***@127.0.0.1" in run.stdout, run.stdout)


def test_failing_install_shows_no_secret(tmp_path: Path, failsafe: Recorder) -> None:
    """-p -v -i --json through a proxy that answers 407, MAAS reporting failing with 500: exit 4, and no secret
    in the report, the one-line error, the verbose log or the reports' error messages."""
    case = failsafe.case(
        "secrets and trust",
        "credentials in the environment: failing install, verbose",
        injected="-p -v -i --json; the proxy answers 407; MAAS answers 500",
        expect_exit=4,
    )
    host = Host(tmp_path)
    with (
        serve(standard_files(ISO)) as site,
        serve({}) as proxy,
        serve({}) as maas,
        patterned_disk(tmp_path / "d", 4 * MiB) as loop,
    ):
        proxy.force_status = 407
        env = {**_secret_env(site.url, proxy.url, maas.url), "HARMONIC_DOWNLOAD_ATTEMPTS": "1"}
        run = host.run(
            [
                "-p",
                "-v",
                "-i",
                "--json",
                "--no-reboot",
                *host.dirs(),
                "--disk",
                loop.path,
                "--no-proxy",
                "localhost",
                "--packages",
                "a_1_all.deb",
            ],
            env,
        )
        case.exit(run.returncode, run.explain())
        case.check("the request went through the proxy", bool(proxy.requests), str(proxy.requests))
        case.check("MAAS was reported to (and failed)", bool(maas.posts), str(maas.posts))
        case.check("the token reached MAAS only in the signature", any(MAAS_SECRET in str(h) for _, h, _ in maas.posts))
        case.check(
            "no secret in the report, the error or the log",
            _leaks(run.stdout, run.stderr) == [],
            str(_leaks(run.stdout, run.stderr)),
        )
        case.check("no traceback", no_traceback(run), run.explain())


def test_process_titles_show_no_secret(tmp_path: Path, failsafe: Recorder) -> None:
    """While an install runs with credentials in the environment, no process's command line carries them; a
    credential given as a flag (visible to every local user) is warned about, without repeating it."""
    case = failsafe.case(
        "secrets and trust",
        "process titles during a download",
        injected="server user:password and proxy credentials in HARMONIC_*; /proc/<pid>/cmdline of the installer and its children read mid-download",
        expect_exit=143,
    )
    host = Host(tmp_path)
    with (
        serve(standard_files(ISO, iso_file=File(ISO, rate=256 * 1024))) as site,
        patterned_disk(tmp_path / "d", 4 * MiB) as loop,
    ):
        env = {**_secret_env(site.url, "http://127.0.0.1:8", "http://127.0.0.1:7"), "HARMONIC_MAAS_ENABLED": "false"}
        proc = host.popen(
            [
                "-i",
                "--no-reboot",
                *host.dirs(),
                "--disk",
                loop.path,
                "--packages",
                "a_1_all.deb,b_1_all.deb",
                "--iso-path",
                f"apollo/{ISO_NAME}",
                "--iso-release",
                ISO_NAME[16:-4],
            ],
            env,
        )
        part = host.data / f".{ISO_NAME}.part"
        deadline = time.monotonic() + 30
        while not part.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        titles = _cmdlines(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        run = Run(proc.returncode, out, err)
        case.exit(run.returncode, run.explain())
        case.check("no secret in any process title", bool(titles) and _leaks(*titles) == [], "\n".join(titles))
        case.check("no secret in the output or the log", _leaks(run.stdout, run.stderr) == [])

    flag = failsafe.case(
        "secrets and trust",
        "credentials given as a flag",
        injected="`--proxy-url http://alice:<pw>@...` on the command line",
        expect_exit=0,
    )
    run = host.run(["-p", *host.dirs(), "--disk", "/dev/null", "--proxy-url", f"http://alice:{PROXY_PW}@127.0.0.1:8"])
    flag.exit(run.returncode, run.explain())
    warned = [e for e in run.log_events() if e.get("event") == "config.credentials_on_command_line"]
    flag.check(
        "a warning names the safer channel", bool(warned) and "HARMONIC_PROXY_URL" in str(warned[0]), run.explain()
    )
    flag.check(
        "no secret in the output or the log", _leaks(run.stdout, run.stderr) == [], str(_leaks(run.stdout, run.stderr))
    )


def _cmdlines(pid: int) -> list[str]:
    """The command lines of pid and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            found.append(Path(f"/proc/{current}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return found


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("with_ca", [False, True], ids=["no-ca", "ca-file"])
def test_tls_is_verified(tmp_path: Path, failsafe: Recorder, self_signed: tuple[Path, Path], with_ca: bool) -> None:
    """https to a self-signed server fails at once naming TLS (exit 4, nothing stored); with --ca-file the same
    server is trusted and the ISO verifies (the run then stops at the 1 MiB disk: exit 3)."""
    cert, key = self_signed
    name = "TLS: self-signed server, --ca-file given" if with_ca else "TLS: self-signed server, no CA file"
    case = failsafe.case(
        "secrets and trust",
        name,
        injected="https server with a self-signed certificate" + (", its certificate as --ca-file" if with_ca else ""),
        expect_exit=3 if with_ca else 4,
    )
    host = Host(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    # No Content-Length: the small disk is found only after the ISO verified (with one, before its body).
    files = standard_files(ISO, iso_file=File(ISO, announce_length=False))
    with serve(files, tls=context) as site, patterned_disk(tmp_path / "d", MiB) as loop:
        args = [*install_args(site, loop.path), *host.dirs(), *(["--ca-file", str(cert)] if with_ca else [])]
        run = host.run(args, {"HARMONIC_DOWNLOAD_ATTEMPTS": "3", "HARMONIC_DOWNLOAD_BACKOFF_MAX_S": "0"})
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        if with_ca:
            case.check(
                "the ISO verifies over https",
                (host.data / ISO_NAME).exists() and "smaller than the image" in line,
                run.explain(),
            )
        else:
            case.check("message names TLS verification", "TLS verification failed" in line, line)
            case.check("nothing created", host.created() == [], str(host.created()))
            case.check("not retried", len(site.requests) == 0, str(site.requests))
        case.check("no traceback", no_traceback(run), run.explain())
        case.check(
            "no setting turns verification off",
            "verify"
            not in subprocess.run(
                [sys.executable, "-m", "harmonic_installer", "settings"],
                check=False,
                cwd=host.root,
                env=host.env(),
                capture_output=True,
                text=True,
            ).stdout.replace("checksums", ""),
        )


DIR_CASES = [
    ("ISO dir owned by another user", "data", "chown", "paths.iso_dir", "owned by uid 65534"),
    ("working dir writable by every user", "work", "chmod", "paths.working_dir", "writable by every user"),
    ("state dir owned by another user", "state", "chown", "paths.state_dir", "owned by uid 65534"),
    (
        "ISO dir inside a directory writable by every user",
        "shared/data",
        "chmod-parent",
        "paths.iso_dir",
        "writable by every user",
    ),
]


@pytest.mark.parametrize(("name", "where", "how", "key", "says"), DIR_CASES, ids=[c[0] for c in DIR_CASES])
def test_directories_other_users_control_are_refused(
    tmp_path: Path, failsafe: Recorder, name: str, where: str, how: str, key: str, says: str
) -> None:
    """A directory another user could change (owned by them, or writable by everyone without the sticky bit,
    itself or a parent): exit 3 naming the setting, before any request or any file."""
    case = failsafe.case("secrets and trust", name, injected=f"{where}: {how} (uid 65534 / mode 0777)", expect_exit=3)
    host = Host(tmp_path)
    target = tmp_path / where
    target.mkdir(parents=True)
    if how == "chown":
        os.chown(target, 65534, 65534)
    elif how == "chmod":
        target.chmod(0o777)
    else:
        target.parent.chmod(0o777)
    dirs = host.dirs()
    if where == "shared/data":
        dirs[dirs.index(str(host.data))] = str(target)
    with serve(standard_files(ISO)) as site, patterned_disk(tmp_path / "d", 4 * MiB) as loop:
        run = host.run([*install_args(site, loop.path), *dirs])
        case.exit(run.returncode, run.explain())
        line = one_line(run) or ""
        case.check("message names the setting and the reason", key in line and says in line, line)
        case.check("no traceback", no_traceback(run), run.explain())
        case.check("nothing requested", site.requests == [], str(site.requests))
        case.check("nothing created", list(target.rglob("*")) == [] and host.created() == [], str(host.created()))


def test_file_planted_in_a_shared_iso_dir_is_not_reused(tmp_path: Path, failsafe: Recorder) -> None:
    """In a sticky world-writable ISO dir (like /tmp), a correct ISO planted under the final name by another
    user is not reused (they could change it after it verifies): it is replaced by our own download."""
    case = failsafe.case(
        "secrets and trust",
        "ISO planted by another user in a shared ISO dir",
        injected="ISO dir mode 1777; the right ISO under the final name, owned by uid 65534",
        expect_exit=3,
    )
    host = Host(tmp_path)
    host.data.mkdir()
    host.data.chmod(0o1777)
    planted = host.data / ISO_NAME
    planted.write_bytes(ISO)
    os.chown(planted, 65534, 65534)
    # No Content-Length: the small disk is found only after the ISO verified (with one, before its body).
    files = standard_files(ISO, iso_file=File(ISO, announce_length=False))
    with serve(files) as site, patterned_disk(tmp_path / "d", MiB) as loop:
        run = host.run([*install_args(site, loop.path), *host.dirs()])
        case.exit(run.returncode, run.explain())
        case.check("stops only at the small disk", "smaller than the image" in (one_line(run) or ""), run.explain())
        case.check(
            "the planted file was not reused",
            any(e.get("event") == "download.existing_untrusted" for e in run.log_events()),
            run.explain(),
        )
        case.check("the ISO was fetched", any(p.endswith(ISO_NAME) for p, _ in site.requests), str(site.requests))
        st = planted.stat()
        case.check(
            "the file in place is ours: root, 0644",
            st.st_uid == 0 and oct(st.st_mode & 0o777) == "0o644",
            f"{st.st_uid} {oct(st.st_mode)}",
        )
