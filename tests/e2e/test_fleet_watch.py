"""VM: `harmonic-install fleet watch` follows a real install whose installer reports to the stand-in MAAS.

The ephemeral scenario's guest posts its status messages to the stand-in REST API's metadata status
endpoint (tests/support/maas_api.py, which logs them as MAAS's status worker does); a `fleet watch` process
runs against that API's events for the whole boot and must end with this machine installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import scenarios, vm
from tests.e2e.scenarios import Scenario
from tests.e2e.test_scenarios import _assert_installed
from tests.support.maas_api import ApiMachine, MaasApi

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]
REPO = Path(__file__).resolve().parents[2]


def test_fleet_watch_sees_the_real_installer_install(
    base_image: vm.Image,
    installer_build: scenarios.InstallerBuild,
    e2e_dir: Path,
) -> None:
    """fleet watch, running during the VM's boot, reports the machine installed with the release and disk."""
    web = scenarios.web_tree(e2e_dir / "www", installer_build)
    node = ApiMachine("e2e001", "harmonic-e2e", status_name="Deployed", ephemeral_deploy=True, owner="admin")
    api = MaasApi(machines=[node]).start()
    try:
        api.add_event(node, "Deploying", "INFO", "")
        report = e2e_dir / "fleet-report.json"
        env = {**os.environ, "PYTHONPATH": str(REPO), "MAAS_API_KEY": api.api_key}
        argv = [sys.executable, "-m", "harmonic_installer", "fleet", "watch", "e2e001", "--maas-url", api.url]
        argv += ["--lines", "--interval", "0.5", "--silent-after", "600", "--report", str(report)]
        with (e2e_dir / "fleet-watch.log").open("w") as log:
            watcher = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                r = scenarios.run_scenario(
                    Scenario("ephemeral"),
                    e2e_dir,
                    base=base_image,
                    build=installer_build,
                    web=web,
                    rest_maas=(api, "e2e001"),
                )
                rc = watcher.wait(timeout=120)
            finally:
                if watcher.poll() is None:
                    watcher.kill()
        print(f"\nfleet watch during the ephemeral scenario: {r.vm.duration_s:.0f} s in the VM")
        _assert_installed(r)
        watch_log = (e2e_dir / "fleet-watch.log").read_text()
        assert rc == 0, watch_log
        machine = json.loads(report.read_text())["machines"][0]
        assert (machine["outcome"], machine["release"], machine["disk"]) == ("installed", web.release, "/dev/sda"), (
            watch_log
        )
        results = {line.split("result=")[1].split()[0] for line in watch_log.splitlines() if "result=" in line}
        assert {"booted", "installing", "installed"} <= results, watch_log
        ours = [e for e in api.events if e["description"].startswith("'harmonic-installer' ")]
        assert {e["type"] for e in ours} == {"Node status event"}, ours
    finally:
        api.stop()
