"""packaging/build_pyz.py: the zipapp is pure Python, precompiled, reproducible, and runs isolated and read-only."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.nginx import serve
from tests.support.packaging import ROOT, build_pyz, python310


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_pyz", ROOT / "packaging" / "build_pyz.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(output: Path) -> float:
    started = time.monotonic()
    build_pyz(output)
    return time.monotonic() - started


@pytest.fixture(scope="module", name="python310")
def _python310_fixture() -> str:
    return python310()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory, python310: str) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "harmonic-install.pyz"
    took = _build(out)
    print(f"\npyz: built {out.stat().st_size} bytes in {took:.1f} s")
    return out


def test_rebuild_gives_identical_bytes(pyz: Path, tmp_path: Path) -> None:
    """A second build, in another directory, has the same SHA-256."""
    again = tmp_path / "elsewhere" / "harmonic-install.pyz"
    _build(again)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == hashlib.sha256(pyz.read_bytes()).hexdigest()


def test_archive_is_pure_python_and_precompiled_for_zipimport(pyz: Path) -> None:
    """No compiled extension; every module has a legacy .pyc beside it, hash-based and never re-checked."""
    with zipfile.ZipFile(pyz) as zf:
        names = zf.namelist()
        assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib"))]
        assert not [n for n in names if "__pycache__" in n or n.startswith("bin/")]
        sources = [n for n in names if n.endswith(".py")]
        assert "harmonic_installer/cli.py" in sources
        assert "__main__.py" in sources
        missing = [n for n in sources if n + "c" not in names]
        assert missing == []
        header = zf.read("harmonic_installer/cli.pyc")[:8]
    assert sys.version_info[:2] == (3, 10)  # the suite runs on the target's Python: same bytecode magic
    assert header[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, check_source off: unchecked-hash


def test_archive_metadata_is_fixed(pyz: Path) -> None:
    """Shebang runs the system python3 isolated and without site; entries are sorted with fixed dates and modes."""
    assert pyz.read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    with zipfile.ZipFile(pyz) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_runs_hermetic_help_with_python310(pyz: Path, python310: str) -> None:
    """`python3.10 -I -S harmonic-install.pyz --help` works: nothing comes from site-packages."""
    result = subprocess.run([python310, "-I", "-S", str(pyz), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "-i, --install" in result.stdout
    assert "maas-import-command" in result.stdout


def test_startup_time(pyz: Path, python310: str) -> None:
    """--help starts in well under the time a console user notices (printed; loosely bounded)."""
    runs = []
    for _ in range(5):
        started = time.monotonic()
        subprocess.run([python310, "-I", "-S", str(pyz), "--version"], check=True, capture_output=True)
        runs.append(time.monotonic() - started)
    median = statistics.median(runs)
    print(f"\npyz: --version median start-up {median * 1000:.0f} ms over {len(runs)} runs")
    assert median < 3.0


def _read_only_root_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --make-rprivate / && mount -o remount,bind,ro / && ! touch /.rw-probe"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.integration
@pytest.mark.skipif(not _read_only_root_works(), reason="needs root and mount namespaces (unshare -m)")
def test_runs_without_home_on_a_read_only_root(pyz: Path, python310: str, tmp_path: Path) -> None:
    """With HOME unset and / (so /tmp and the pyz's directory) read-only, the pyz plans, hashes and renders."""
    image = tmp_path / "image.tar.gz"
    image.write_bytes(b"image")
    runs = {
        "help": ["--help"],
        "plan": ["-p", "-i", "--dry-run", "--disk", "/dev/nonexistent-harmonic"],
        "import": ["maas-import-command", str(image)],
        "user-data": ["user-data", "--server-url", "http://127.0.0.1:8080", "--pyz", str(pyz)],
    }
    script = 'mount --make-rprivate / && mount -o remount,bind,ro / && cd / && exec "$@"'
    for name, args in runs.items():
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", python310, "-I", "-S", str(pyz), *args],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HARMONIC_CMDLINE_FILE": "/dev/null"},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
    assert hashlib.sha256(pyz.read_bytes()).hexdigest() in result.stdout


LEFT_OUT_MODULES = ("rich", "pygments", "markdown_it", "mdurl", "anyio", "exceptiongroup")


def test_archive_leaves_out_what_never_runs(pyz: Path) -> None:
    """rich, pygments, markdown-it, mdurl and anyio are not in the archive, which stays under 2 MB."""
    with zipfile.ZipFile(pyz) as zf:
        tops = {n.split("/")[0].split(".")[0].split("-")[0] for n in zf.namelist()}
    assert not tops & set(LEFT_OUT_MODULES)
    assert {"typer", "httpx", "httpcore", "structlog", "pyudev", "tenacity", "certifi", "harmonic_installer"} <= tops
    assert pyz.stat().st_size < 2 * 1000 * 1000, f"{pyz.stat().st_size} bytes"


def test_shipped_requirements_drop_only_the_left_out_entries() -> None:
    """The lock less LEFT_OUT keeps every other pin with all its hashes, and nothing of the left-out ones."""
    build = _load_build_module()
    lock = (ROOT / "requirements" / "runtime.lock").read_text()
    shipped = build.shipped_requirements(lock)

    def pins(text: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        name = ""
        for line in text.splitlines():
            if not line.startswith((" ", "#")) and "==" in line:
                name = line.split("==")[0].lower()
                out[name] = []
            elif "--hash=" in line and name:
                out[name].append(line.strip())
        return out

    everything, kept = pins(lock), pins(shipped)
    assert set(everything) - set(kept) == set(build.LEFT_OUT)
    assert all(kept[name] == everything[name] and kept[name] for name in kept)


# Registers a check, run at exit, of where every imported module came from: the archive (`pyz`) or the standard
# library, never site-packages or dist-packages (-S makes those unreachable; this proves it for every path).
_ORIGIN_GUARD = """
import atexit, os, sys, sysconfig
stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
def inside(path):
    if path.startswith(pyz + os.sep):
        return True
    return path.startswith(stdlib) and os.sep + "site-packages" not in path and "dist-packages" not in path
def check():
    outside = sorted(
        f"{name}: {mod.__file__}" for name, mod in list(sys.modules.items())
        if getattr(mod, "__file__", None) and not inside(mod.__file__)
    )
    if outside:
        sys.stderr.write("imported from outside the archive: " + ", ".join(outside) + "\\n")
        os._exit(99)
atexit.register(check)
"""
# Runs the archive's __main__ the way the shebang does, under the guard: argv is PYZ ARGS...
_RUN_GUARDED = (
    "import runpy, sys\npyz, args = sys.argv[1], sys.argv[2:]\n"
    + _ORIGIN_GUARD
    + "sys.argv = [pyz, *args]\nsys.path.insert(0, pyz)\nrunpy.run_path(pyz, run_name='__main__')\n"
)


def test_every_cli_path_runs_from_the_archive_alone(pyz: Path, python310: str, tmp_path: Path) -> None:
    """Each command runs with `python3.10 -I -S` and imports nothing but the archive and the standard library."""
    image = tmp_path / "image.tar.gz"
    image.write_bytes(b"image")
    user_data = tmp_path / "user-data"
    paths = {
        "help": (["--help"], 0),
        "version": (["--version"], 0),
        "settings": (["settings"], 0),
        "plan": (["-p", "--disk", "/dev/nonexistent-harmonic"], 0),
        "dry-run": (["-p", "-i", "--dry-run", "--disk", "/dev/nonexistent-harmonic"], 0),
        "not-a-target install": (["-i", "--no-reboot", "--disk", "/dev/nonexistent-harmonic"], 0),
        "bad setting": (["--download-attempts", "zero"], 2),
        "import": (["maas-import-command", str(image)], 0),
        "user-data": (["user-data", "--server-url", "http://127.0.0.1:9", "--pyz", str(pyz)], 0),
        "deploy": (["deploy-command", "--user-data", str(user_data), "abc123"], 0),
    }
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HARMONIC_CMDLINE_FILE": "/dev/null",
        "HARMONIC_SERVER_URL": "http://127.0.0.1:9",
        "HARMONIC_PATHS_STATE_DIR": str(tmp_path / "state"),
        "HARMONIC_MAAS_ENABLED": "false",
    }
    for name, (args, want) in paths.items():  # in order: "user-data" writes the file "deploy" reads
        result = subprocess.run(
            [python310, "-I", "-S", "-c", _RUN_GUARDED, str(pyz), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == want, f"{name}: rc {result.returncode}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, f"{name}: {result.stderr[-2000:]}"
        if name == "user-data":
            user_data.write_text(result.stdout)


def test_verified_download_runs_from_the_archive_alone(pyz: Path, python310: str, tmp_path: Path) -> None:
    """httpx, httpcore, h11, idna, certifi and tenacity from the archive fetch and verify a file from nginx."""
    root = tmp_path / "www"
    root.mkdir()
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (root / "blob.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    script = f"""
import sys
pyz = {str(pyz)!r}
sys.path.insert(0, pyz)
from pathlib import Path
from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy
from harmonic_installer.proxy import ProxyConfig
policy = DownloadPolicy(attempts=2, max_time_s=60.0, connect_timeout_s=5.0, read_timeout_s=30.0, stall_min_rate=0,
    stall_window_s=60.0, backoff_max_s=0.1, free_space_margin_bytes=0, allow_unverified=False, keyring=None,
    ca_file=None, sums_name="SHA256SUMS")
with Downloader(policy, ProxyConfig(enabled=False, url=None, no_proxy=())) as dl:
    art = dl.fetch(ArtifactSpec(url=sys.argv[1] + "/blob.bin", dest_dir=Path(sys.argv[2]), filename="blob.bin",
                                sha256={digest!r}))
print(art.sha256)
{_ORIGIN_GUARD}"""
    with serve(root) as web:
        result = subprocess.run(
            [python310, "-I", "-S", "-c", script, web.url, str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == digest
    assert (tmp_path / "blob.bin").read_bytes() == payload


def test_build_refuses_compiled_extensions(tmp_path: Path) -> None:
    """A .so anywhere in the staging tree stops the build with the file named."""
    build = _load_build_module()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    build.check_pure_python(tmp_path)
    (tmp_path / "pkg" / "_speedups.cpython-310-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    with pytest.raises(build.BuildError, match="_speedups"):
        build.check_pure_python(tmp_path)
