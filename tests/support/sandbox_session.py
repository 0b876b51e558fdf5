"""One sandbox session, run as PID 1 of fresh mount, network and PID namespaces (see sandbox.py).

    unshare --mount --net --pid --fork --kill-child --mount-proc python -m tests.support.sandbox_session SPEC

The spec (JSON, written by sandbox.Sandbox.run) names the overlay layers, the device nodes to expose, the web
root and proxy to serve, and the commands to run in the chroot. Everything this process sets up lives in its
namespaces: when it exits (or is killed) the kernel drops the mounts, the network namespace with nginx and
tinyproxy in it, and every process it started. Only `lo` exists in the network namespace, so nothing started
here can reach anything but loopback.

Results go to the spec's `results` file: one entry per command (rc, duration, stdout/stderr files).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from tests.support.nginx import serve

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
STANDARD_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


class Stopped(Exception):
    """SIGINT or SIGTERM reached the session."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _say(message: str) -> None:
    print(f"sandbox: {message}", file=sys.stderr, flush=True)


def _sh(*argv: str) -> None:
    subprocess.run(list(argv), check=True)


class Mounts:
    """The mounts made for the chroot, undone in reverse order."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def mount(self, *args: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        _sh("mount", *args, str(target))
        self.done.append(str(target))

    def undo(self) -> None:
        for target in reversed(self.done):
            subprocess.run(["umount", "--lazy", target], check=False, capture_output=True)
        self.done.clear()


def _make_dev(merged: Path, mounts: Mounts, devices: Sequence[str]) -> None:
    dev = merged / "dev"
    mounts.mount("-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", target=dev)
    for name, (major, minor) in STANDARD_NODES.items():
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)  # mknod's mode is filtered by the umask
    for link, to in {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
    }.items():
        os.symlink(to, dev / link)
    mounts.mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", target=dev / "shm")
    for path in devices:  # only the test's own devices: the host's disks stay invisible
        st = os.stat(path)
        if not stat.S_ISBLK(st.st_mode):
            raise RuntimeError(f"{path} is not a block device")
        node = merged / path.lstrip("/")
        node.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(node, 0o660 | stat.S_IFBLK, st.st_rdev)


def _prepare_root(spec: dict[str, Any], mounts: Mounts) -> Path:
    merged = Path(spec["merged"])
    lower = ":".join(spec["lower"])
    mounts.mount(
        "-t",
        "overlay",
        "-o",
        f"lowerdir={lower},upperdir={spec['upper']},workdir={spec['work']}",
        "overlay",
        target=merged,
    )
    mounts.mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", target=merged / "proc")
    mounts.mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", target=merged / "sys")
    _make_dev(merged, mounts, spec["devices"])
    for target, size in spec["tmpfs"].items():
        mounts.mount("-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs", target=merged / target.lstrip("/"))
    return merged


@contextlib.contextmanager
def _proxy(spec: dict[str, Any] | None, session: Path) -> Iterator[None]:
    if spec is None:
        yield
        return
    filter_file = session / "tinyproxy.filter"
    filter_file.write_text("".join(f"^{host.replace('.', '[.]')}$\n" for host in spec["allow"]))
    conf = session / "tinyproxy.conf"
    conf.write_text(
        f"Port {spec['port']}\nListen {spec['host']}\nTimeout 60\nMaxClients 20\n"
        f'LogFile "{spec["log"]}"\nLogLevel Info\nAllow 127.0.0.0/8\n'
        f'FilterDefaultDeny Yes\nFilter "{filter_file}"\nFilterURLs No\nFilterType ere\nDisableViaHeader Yes\n'
    )
    with (session / "tinyproxy.stderr").open("wb") as stderr:
        proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_listening(spec["host"], spec["port"], proc, "tinyproxy")
        _say(f"proxy  http://{spec['host']}:{spec['port']} (tinyproxy, forwards only to {', '.join(spec['allow'])})")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start-up with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {host}:{port} within 10 s") from None
            time.sleep(0.05)


@contextlib.contextmanager
def _web(spec: dict[str, Any] | None) -> Iterator[None]:
    if spec is None:
        yield
        return
    with serve(Path(spec["root"]), host=spec["host"], port=spec["port"], extra_server=spec["extra_server"]) as web:
        _say(f"web    {web.url} (nginx, root {spec['root']})")
        try:
            yield
        finally:
            copy = Path(spec["access_copy"])
            copy.write_bytes(web.access_log.read_bytes() if web.access_log.exists() else b"")
    shutil.rmtree(web.access_log.parent, ignore_errors=True)  # nginx's work dir next to the web root


_QUIET_KEYS = frozenset({"event", "level", "timestamp", "step"})


def pretty(line: bytes) -> bytes:
    """A structlog JSON log line as one short readable line ('12:00:01 info  [download] event k=v'); other
    lines unchanged."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "event" not in entry:
        return line
    clock = str(entry.get("timestamp", ""))[11:19]
    step = f"[{entry['step']}] " if "step" in entry else ""
    fields = " ".join(
        f"{k}={v if isinstance(v, (int, float)) else json.dumps(v) if not isinstance(v, str) or ' ' in v else v}"
        for k, v in entry.items()
        if k not in _QUIET_KEYS
    )
    return f"  {clock} {entry.get('level', ''):<7} {step}{entry['event']} {fields}".rstrip().encode() + b"\n"


def _pump(src: IO[bytes], sinks: Sequence[IO[bytes]], live: IO[bytes] | None) -> None:
    for line in iter(src.readline, b""):
        for sink in sinks:
            sink.write(line)
            sink.flush()
        if live is not None:
            live.write(pretty(line))
            live.flush()


def _run_command(merged: Path, cmd: dict[str, Any], index: int, session: Path, echo: bool) -> dict[str, Any]:
    env = {**BASE_ENV, **cmd["env"]}
    argv = ["chroot", str(merged), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd["argv"]]
    out_path, err_path = session / f"cmd-{index}.stdout", session / f"cmd-{index}.stderr"
    if echo:
        _say("$ " + " ".join(cmd["argv"]))
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if cmd["stdin"] is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    with out_path.open("wb") as out, err_path.open("wb") as err:
        pumps = [
            threading.Thread(
                target=_pump, args=(proc.stdout, [out], sys.stdout.buffer if echo and cmd["echo_stdout"] else None)
            ),
            threading.Thread(target=_pump, args=(proc.stderr, [err], sys.stderr.buffer if echo else None)),
        ]
        for t in pumps:
            t.start()
        if cmd["stdin"] is not None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(cmd["stdin"].encode())
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        timed_out, signalled = False, None
        try:
            proc.wait(timeout=cmd["timeout"])
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc, signal.SIGTERM)
        except Stopped as stop:
            signalled = stop.signum
            _say(f"{stop}: passing it on to {cmd['argv'][0]}")
            _stop(proc, stop.signum)
        with contextlib.suppress(ProcessLookupError):  # what the command left running in the background
            os.killpg(proc.pid, signal.SIGKILL)
        for t in pumps:
            t.join(timeout=10)
    result = {
        "argv": cmd["argv"],
        "returncode": proc.returncode,
        "duration_s": round(time.monotonic() - started, 3),
        "timed_out": timed_out,
        "stdout": str(out_path),
        "stderr": str(err_path),
    }
    if signalled is not None:
        result["signalled"] = signalled
    return result


def _stop(proc: subprocess.Popen[bytes], signum: int, grace: float = 15) -> None:
    """Send signum to the command's process group; SIGKILL what is left after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


def main(spec_path: str) -> int:
    """Set up the root, the services and run the commands; write results; 0 unless the session itself broke."""
    spec = json.loads(Path(spec_path).read_text())
    session = Path(spec["session"])
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    results: list[dict[str, Any]] = []
    mounts = Mounts()
    status = 0
    try:
        _sh("ip", "link", "set", "lo", "up")
        merged = _prepare_root(spec, mounts)
        with _web(spec["web"]), _proxy(spec["proxy"], session):
            for index, cmd in enumerate(spec["commands"]):
                result = _run_command(merged, cmd, index, session, spec["echo"])
                results.append(result)
                if "signalled" in result:
                    status = 128 + int(result["signalled"])
                    break
                if result["returncode"] != 0 and cmd["stop_on_failure"]:
                    break
    except Stopped as stop:
        _say(f"stopped by {stop}")
        status = 128 + stop.signum
    except Exception as exc:  # the session's own failure: report it, still clean up
        _say(f"session failed: {type(exc).__name__}: {exc}")
        status = 70
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        mounts.undo()
        Path(spec["results"]).write_text(json.dumps({"commands": results, "status": status}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
