"""An isolated root filesystem that stands in for the MAAS ephemeral OS, with the installer from this checkout.

Layers (overlayfs, lowest first), so tests never contaminate each other or the cache:
  1. rootfs  Debian bookworm from mmdebstrap (python3, dpkg, udev, ...), cached under
             ${HARMONIC_TEST_CACHE:-/var/cache/harmonic-installer-tests}/rootfs-<recipe hash>
  2. pylib   the runtime dependencies from requirements/runtime.lock (pip --require-hashes), cached too,
             at /opt/harmonic-installer/lib
  3. src     per sandbox: harmonic_installer/ at /opt/harmonic-installer/src, /usr/local/bin/harmonic-install,
             /etc/hosts, /media/root-rw (as in the ephemeral OS; /data is left for the installer to create)
  4. upper   per sandbox: every change made inside (dpkg's database, /data, ...), readable with `read()`

`Sandbox.run()` starts one session (sandbox_session.py) in fresh mount, network and PID namespaces: only `lo`
exists there, nginx serves the stand-in web root on 127.0.0.2, tinyproxy listens on 127.0.0.1 and forwards
only to 127.0.0.2, and the commands run in a chroot that sees /proc, /sys, a private /dev holding only the
given devices (never the host's disks), and a fresh /run. When the session ends, or is killed, the kernel
removes all of it; nothing is mounted in the caller's namespace.

Building the rootfs cache is the one step that reaches the network (the Debian mirror, ~30-60 s, once per
recipe); `python -m tests.support.sandbox build` does it ahead of time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
CACHE = Path(os.environ.get("HARMONIC_TEST_CACHE", "/var/cache/harmonic-installer-tests"))
SUITE = "bookworm"
SANDBOX_PYTHON = "3.11"  # bookworm's python3
INCLUDE = (
    "python3",
    "libudev1",
    "udev",
    "dpkg",
    "ca-certificates",
    "util-linux",
    "mount",
    "fdisk",
    "e2fsprogs",
    "procps",
)
RECIPE_VERSION = 1  # bump when the way the rootfs is built changes
INSTALL_ROOT = "/opt/harmonic-installer"
WRAPPER = f"""#!/bin/sh
# harmonic-install from the source tree copied into this sandbox (tests/support/sandbox.py)
PYTHONPATH={INSTALL_ROOT}/lib:{INSTALL_ROOT}/src exec python3 -m harmonic_installer "$@"
"""
WEB_HOST, WEB_PORT = "127.0.0.2", 8080
PROXY_HOST, PROXY_PORT = "127.0.0.1", 3128


def _log(message: str) -> None:
    print(f"sandbox: {message}", file=sys.stderr, flush=True)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def recipe() -> dict[str, object]:
    """Everything that decides the rootfs' content; its hash names the cache entry."""
    return {"version": RECIPE_VERSION, "suite": SUITE, "variant": "apt", "include": sorted(INCLUDE)}


def _key(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def rootfs() -> Path:
    """The cached Debian root for the current recipe, built with mmdebstrap when missing (~30-60 s)."""
    target = CACHE / f"rootfs-{_key(recipe())}"
    with _locked("rootfs"):
        if (target / ".complete").exists():
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _log(f"building the isolated root with mmdebstrap ({SUITE}; once per recipe) into {target}")
        started = time.monotonic()
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=apt", "--include=" + ",".join(INCLUDE), SUITE, str(tmp)],
            check=True,
        )
        (tmp / ".complete").write_text(json.dumps({**recipe(), "seconds": round(time.monotonic() - started, 1)}))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        _log(f"isolated root built in {time.monotonic() - started:.0f} s")
        return target


def pylib() -> Path:
    """A layer holding the runtime dependencies at /opt/harmonic-installer/lib, installed from the hash lock."""
    lock = REPO / "requirements" / "runtime.lock"
    target = CACHE / f"pylib-{_key([lock.read_text(), SANDBOX_PYTHON])}"
    with _locked("pylib"):
        if (target / ".complete").exists():
            return target
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        lib = tmp / INSTALL_ROOT.lstrip("/") / "lib"
        _log(f"installing the runtime dependencies for Python {SANDBOX_PYTHON} into {target}")
        result = subprocess.run(
            [
                str(VENV_PYTHON),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(lib),
                "--python-version",
                SANDBOX_PYTHON,
                "--only-binary=:all:",
                "--require-hashes",
                "--no-deps",
                "-r",
                str(lock),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip could not install {lock} for the sandbox:\n{result.stdout}{result.stderr}")
        (tmp / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return target


@dataclass(frozen=True, slots=True)
class Command:
    """One command to run in the chroot."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None  # text on stdin; None: /dev/null
    timeout: float = 600
    stop_on_failure: bool = False  # skip the session's later commands when this one fails
    echo_stdout: bool = True  # with Sandbox.run(echo=True): show stdout live too (not for a JSON report)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended and what it printed."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool


@dataclass(frozen=True, slots=True)
class WebServer:
    """nginx serving a web root inside the session's network namespace."""

    root: Path
    host: str = WEB_HOST
    port: int = WEB_PORT
    extra_server: str = ""

    @property
    def url(self) -> str:
        """The base URL as seen from inside the sandbox."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Proxy:
    """tinyproxy inside the session's network namespace, forwarding only to `allow`."""

    host: str = PROXY_HOST
    port: int = PROXY_PORT
    allow: tuple[str, ...] = (WEB_HOST,)

    @property
    def url(self) -> str:
        """The proxy URL as seen from inside the sandbox."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SessionResult:
    """The outcome of one session: each command's result and the services' logs."""

    commands: tuple[CommandResult, ...]
    status: int  # 0, or 128+signal when stopped, 70 when the session itself failed
    driver_stderr: str
    web_access: tuple[str, ...]
    proxy_log: tuple[str, ...]

    def proxied_requests(self) -> list[str]:
        """The request lines tinyproxy logged ('GET http://127.0.0.2:8080/packages/... HTTP/1.1')."""
        return [line.split("): ", 1)[1] for line in self.proxy_log if "Request (file descriptor" in line]


def _interrupt(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGINT to the session's PID 1 (unshare itself ignores SIGINT and passes nothing on); SIGKILL to unshare,
    and with it the whole session (--kill-child), if it has not ended within `grace` seconds."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        for pid in children.read_text().split():
            os.kill(int(pid), signal.SIGINT)
    except (OSError, ValueError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sandbox:
    """One isolated root (its own upper layer) in which sessions run; see the module docstring."""

    def __init__(self, workdir: Path, *, source: Path | None = None) -> None:
        """Args: source: the harmonic_installer package to install (default: this checkout's, or the
        directory named by HARMONIC_TEST_SANDBOX_SOURCE, e.g. to try another branch's installer)."""
        self.workdir = workdir
        source = source or Path(os.environ.get("HARMONIC_TEST_SANDBOX_SOURCE", REPO / "harmonic_installer"))
        self.layers = (self._source_layer(workdir / "src", source), pylib(), rootfs())
        self.upper = workdir / "upper"
        self.upper.mkdir(parents=True, exist_ok=True)
        self.sessions = 0

    @staticmethod
    def _source_layer(layer: Path, source: Path) -> Path:
        src = layer / INSTALL_ROOT.lstrip("/") / "src" / "harmonic_installer"
        shutil.copytree(source, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        wrapper = layer / "usr/local/bin/harmonic-install"
        wrapper.parent.mkdir(parents=True)
        wrapper.write_text(WRAPPER)
        wrapper.chmod(0o755)
        (layer / "etc").mkdir()
        (layer / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
        (layer / "media/root-rw").mkdir(parents=True)
        return layer

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Put a file into the sandbox's root (e.g. /etc/ostree-standin.conf) before a session."""
        target = self.upper / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        target.chmod(mode)

    def host_path(self, path: str) -> Path | None:
        """Where `path` of the sandbox's root lies on the host (topmost layer), or None if absent or deleted."""
        for layer in (self.upper, *self.layers):
            candidate = layer / path.lstrip("/")
            try:
                st = candidate.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # overlayfs whiteout: deleted in the sandbox
                return None
            return candidate
        return None

    def read(self, path: str) -> bytes:
        """A file's content as the sandbox sees it (between sessions)."""
        found = self.host_path(path)
        if found is None:
            raise FileNotFoundError(path)
        return found.read_bytes()

    def run(
        self,
        commands: Sequence[Command],
        *,
        web: WebServer | None = None,
        proxy: Proxy | None = None,
        devices: Sequence[str] = (),
        tmpfs: Mapping[str, str] | None = None,
        echo: bool = False,
        timeout: float = 900,
    ) -> SessionResult:
        """Run commands one after another in one session (same namespaces, same /run, same services).

        Args:
            web: serve this web root with nginx in the session.
            proxy: run tinyproxy in the session.
            devices: block device nodes (e.g. a loop device and its partitions) the chroot may see.
            tmpfs: mount point -> size of tmpfs mounts in the chroot (default: /run and /tmp).
            echo: also show the commands' output live on this process' stdout/stderr.
            timeout: for the whole session; on expiry the session and everything in it is killed.
        """
        self.sessions += 1
        session = self.workdir / f"session-{self.sessions}"
        session.mkdir()
        (session / "work").mkdir()
        merged = session / "root"
        spec = {
            "session": str(session),
            "merged": str(merged),
            "lower": [str(p) for p in self.layers],
            "upper": str(self.upper),
            "work": str(session / "work"),
            "devices": list(devices),
            "tmpfs": dict(tmpfs) if tmpfs is not None else {"/run": "64m", "/tmp": "256m"},
            "web": None
            if web is None
            else {
                "root": str(web.root),
                "host": web.host,
                "port": web.port,
                "extra_server": web.extra_server,
                "access_copy": str(session / "nginx-access.log"),
            },
            "proxy": None
            if proxy is None
            else {
                "host": proxy.host,
                "port": proxy.port,
                "allow": list(proxy.allow),
                "log": str(session / "tinyproxy.log"),
            },
            "commands": [
                {
                    "argv": list(c.argv),
                    "env": dict(c.env),
                    "stdin": c.stdin,
                    "timeout": c.timeout,
                    "stop_on_failure": c.stop_on_failure,
                    "echo_stdout": c.echo_stdout,
                }
                for c in commands
            ],
            "results": str(session / "results.json"),
            "echo": echo,
        }
        spec_path = session / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        argv = [
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            str(VENV_PYTHON),
            "-m",
            "tests.support.sandbox_session",
            str(spec_path),
        ]
        driver_err = session / "driver.stderr"
        with driver_err.open("wb") as err_file:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=None if echo else subprocess.DEVNULL,
                stderr=None if echo else err_file,
            )
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # --kill-child: the session's PID 1 and with it every process in the namespace die
                proc.wait()
            except BaseException:  # Ctrl-C, pytest-timeout, ...: let the session pass it on and clean up
                _interrupt(proc)
                raise
        return self._collect(session, proc.returncode)

    @staticmethod
    def _collect(session: Path, driver_rc: int) -> SessionResult:
        results_file = session / "results.json"
        data: dict[str, Any] = (
            json.loads(results_file.read_text()) if results_file.exists() else {"commands": [], "status": driver_rc}
        )
        commands = tuple(
            CommandResult(
                argv=tuple(c["argv"]),
                returncode=c["returncode"],
                stdout=Path(c["stdout"]).read_text(errors="replace"),
                stderr=Path(c["stderr"]).read_text(errors="replace"),
                duration_s=c["duration_s"],
                timed_out=c["timed_out"],
            )
            for c in data["commands"]
        )
        access_log = session / "nginx-access.log"
        access = access_log.read_text(errors="replace").splitlines() if access_log.exists() else []
        proxy_log = session / "tinyproxy.log"
        driver_err = session / "driver.stderr"
        return SessionResult(
            commands=commands,
            status=int(data["status"]) if results_file.exists() else driver_rc,
            driver_stderr=driver_err.read_text(errors="replace") if driver_err.exists() else "",
            web_access=tuple(access),
            proxy_log=tuple(proxy_log.read_text(errors="replace").splitlines()) if proxy_log.exists() else (),
        )


def installer_command(
    web: WebServer,
    proxy: Proxy,
    disk: str,
    *extra: str,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> Command:
    """`harmonic-install -p -i --no-reboot --json` against the session's web server, proxy and loop disk."""
    argv = (
        "harmonic-install",
        "-p",
        "-i",
        "--no-reboot",
        "--json",
        "--server-url",
        web.url,
        "--proxy-url",
        proxy.url,
        "--no-proxy",
        "localhost",
        "--disk",
        disk,
        "--state-dir",
        "/run/harmonic-installer",
        *extra,
    )
    return Command(argv, env=dict(env or {}), stdin=stdin, timeout=timeout)


def main(argv: Sequence[str]) -> int:
    """`python -m tests.support.sandbox build`: build (or check) the cached layers ahead of time."""
    if list(argv) != ["build"]:
        print("usage: python -m tests.support.sandbox build", file=sys.stderr)
        return 2
    print(rootfs())
    print(pylib())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
