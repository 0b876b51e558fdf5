"""cloudinit_cfg: MAAS's webhook reporter config is found in the JSON cloud-init writes on Ubuntu 22.04.

The fixtures are shaped as cloud-init writes them on a MAAS ephemeral jammy (cloudinit/atomic_helper.py
`json_dumps`: indent=1, sorted keys): 22.x writes only instance-data-sensitive.json with `merged_cfg`;
23.3 and later also `merged_system_cfg` there, and combined-cloud-config.json.
"""

from __future__ import annotations

import json
from typing import Any

from pyfakefs.fake_filesystem import FakeFilesystem
from structlog.testing import capture_logs

from harmonic_installer import cloudinit_cfg
from harmonic_installer.cloudinit_cfg import find_webhook
from tests.support.maas_server import MaasServer

ENDPOINT = "http://10.20.0.2:5248/MAAS/metadata/status/xk4p7q"
COMBINED = "/run/cloud-init/combined-cloud-config.json"
INSTANCE_DATA = "/run/cloud-init/instance-data-sensitive.json"


def _dump(data: dict[str, Any]) -> str:
    """As cloud-init's atomic_helper.json_dumps writes its /run/cloud-init files."""
    return json.dumps(data, indent=1, sort_keys=True, separators=(",", ": "))


def _maas_cfg(endpoint: str = ENDPOINT) -> dict[str, Any]:
    """What MAAS's cloud-config-url preseed puts into the system config (91_kernel_cmdline_url.cfg)."""
    maas = MaasServer()
    host = endpoint.split("/")[2]
    keys = {"consumer_key": maas.consumer_key, "token_key": maas.token_key, "token_secret": maas.token_secret}
    return {
        "datasource": {"MAAS": {**keys, "metadata_url": f"http://{host}/MAAS/metadata/"}},
        "power_state": {"condition": "test ! -e /tmp/block-reboot", "delay": "now", "mode": "reboot", "timeout": 1800},
        "reporting": {"maas": {**keys, "endpoint": endpoint, "type": "webhook"}},
        "rsyslog": {"remotes": {"maas": f"{host.split(':')[0]}:5247"}},
    }


def _system_cfg(extra: dict[str, Any]) -> dict[str, Any]:
    """Ubuntu's /etc/cloud/cloud.cfg (abridged) merged with cloud.cfg.d and the MAAS file."""
    return {
        "_log": ["[loggers]\nkeys=root,cloudinit\n"],
        "cloud_final_modules": ["package_update_upgrade_install", "scripts_user", "power_state_change"],
        "cloud_init_modules": ["seed_random", "bootcmd", "write_files", "growpart"],
        "datasource_list": ["MAAS"],
        "def_log_file_mode": 384,
        "disable_root": True,
        "output": {"all": "| tee -a /var/log/cloud-init-output.log"},
        "preserve_hostname": False,
        "system_info": {"distro": "ubuntu", "default_user": {"name": "ubuntu", "lock_passwd": True}},
        "users": ["default"],
        **extra,
    }


def instance_data(system_cfg: dict[str, Any], *, version: tuple[int, ...]) -> str:
    """instance-data-sensitive.json: 22.x has `merged_cfg`; 23.3 and later `merged_system_cfg` as well."""
    merged = {
        **system_cfg,
        "_doc": "Merged cloud-init system config from /etc/cloud/cloud.cfg and /etc/cloud/cloud.cfg.d/",
    }
    data: dict[str, Any] = {
        "base64_encoded_keys": [],
        "ds": {"_doc": "EXPERIMENTAL: ...", "meta_data": {"instance-id": "xk4p7q", "local-hostname": "node-1"}},
        "merged_cfg": merged,
        "sensitive_keys": ["merged_cfg", "security-credentials"],
        "sys_info": {"dist": ["ubuntu", "22.04", "jammy"], "python": "3.10.12", "variant": "ubuntu"},
        "v1": {"cloud_name": "maas", "distro_release": "jammy", "instance_id": "xk4p7q", "platform": "maas"},
    }
    if version >= (23, 3):
        data["merged_cfg"] = {**merged, "_doc": "DEPRECATED: Use merged_system_cfg. Will be dropped from 24.1"}
        data["merged_system_cfg"] = merged
        data["sensitive_keys"] = ["combined_cloud_config", "merged_cfg", "merged_system_cfg", "security-credentials"]
    return _dump(data)


def combined(config: dict[str, Any]) -> str:
    """combined-cloud-config.json (cloud-init 23.3 and later): system config, vendor-data and user-data merged."""
    doc = "Aggregated cloud-config created by merging merged_system_cfg (/etc/cloud/cloud.cfg and ...)"
    return _dump({**config, "_doc": doc, "features": {"NOCLOUD_SEED_URL_APPEND_FORWARD_SLASH": True}})


def test_cloud_init_22_instance_data_merged_cfg_is_read(fs: FakeFilesystem) -> None:
    """cloud-init 22.x on jammy (no combined file): the webhook comes from instance-data's merged_cfg."""
    fs.create_file(INSTANCE_DATA, contents=instance_data(_system_cfg(_maas_cfg()), version=(22, 4, 2)))
    found = find_webhook()
    assert found is not None
    assert found.endpoint == ENDPOINT
    assert (found.consumer_key, found.token_key) == ("Dj9fzjKaSV8MyhUvsd", "gsCXJF5Bmq3qpNa3JH")
    assert found.token_secret == "dBTHUxgPZe3gGZ3tfW5z64X5EjZaNRwu"
    assert found.consumer_secret == ""
    assert found.source == f"{INSTANCE_DATA} merged_cfg (reporting.maas)"
    assert "dBTHUx" not in repr(found)


def test_merged_system_cfg_wins_over_the_deprecated_key(fs: FakeFilesystem) -> None:
    """cloud-init 23.3+ instance-data: merged_system_cfg is read (merged_cfg is its deprecated copy)."""
    text = instance_data(_system_cfg(_maas_cfg()), version=(23, 4, 4))
    data = json.loads(text)
    data["merged_cfg"]["reporting"]["maas"]["endpoint"] = "http://stale/x"
    fs.create_file(INSTANCE_DATA, contents=_dump(data))
    found = find_webhook()
    assert found is not None
    assert found.endpoint == ENDPOINT
    assert found.source == f"{INSTANCE_DATA} merged_system_cfg (reporting.maas)"


def test_combined_json_wins_over_instance_data(fs: FakeFilesystem) -> None:
    """cloud-init's combined config (user-data merged over the system config) is used when present."""
    fs.create_file(INSTANCE_DATA, contents=instance_data(_system_cfg(_maas_cfg("http://old/x")), version=(24, 4)))
    config = _system_cfg(_maas_cfg())
    config["reporting"]["maas"].update(token_key="t", token_secret="s")
    config["runcmd"] = [["sh", "/run/harmonic-userdata/install.sh"]]
    fs.create_file(COMBINED, contents=combined(config))
    found = find_webhook()
    assert found is not None
    assert (found.endpoint, found.token_key, found.token_secret) == (ENDPOINT, "t", "s")
    assert found.source == f"{COMBINED} (reporting.maas)"


def test_combined_without_reporting_is_final(fs: FakeFilesystem) -> None:
    """A combined config with no reporting section means none: instance-data (a subset of it) is not consulted."""
    fs.create_file(COMBINED, contents=combined(_system_cfg({})))
    fs.create_file(INSTANCE_DATA, contents=instance_data(_system_cfg(_maas_cfg()), version=(24, 4)))
    assert find_webhook() is None


def test_maas_reporter_is_preferred_and_non_webhooks_ignored(fs: FakeFilesystem) -> None:
    """`reporting.maas` wins over other webhooks; log/print handlers and a non-webhook maas entry are not used."""
    reporting = {
        "aaa": {"type": "webhook", "endpoint": "http://other/x"},
        "logging": {"type": "log"},
        "maas": {"type": "webhook", "endpoint": ENDPOINT},
    }
    fs.create_file(COMBINED, contents=combined(_system_cfg({"reporting": reporting})))
    found = find_webhook()
    assert found is not None
    assert found.endpoint == ENDPOINT
    reporting["maas"] = {"type": "log"}
    fs.remove_object(COMBINED)
    fs.create_file(COMBINED, contents=combined(_system_cfg({"reporting": reporting})))
    found = find_webhook()
    assert found is not None
    assert found.endpoint == "http://other/x"


def test_nothing_configured(fs: FakeFilesystem) -> None:
    """No cloud-init at all, or cloud-init without reporting: None, and no warning."""
    with capture_logs() as logs:
        assert find_webhook() is None
        fs.create_file(INSTANCE_DATA, contents=instance_data(_system_cfg({}), version=(22, 4, 2)))
        assert find_webhook() is None
    assert logs == []


def test_yaml_files_are_not_read(fs: FakeFilesystem) -> None:
    """A cloud.cfg.d file cloud-init has not merged (written after it ran) is not seen: only its JSON counts."""
    fs.create_file("/etc/cloud/cloud.cfg.d/91_kernel_cmdline_url.cfg", contents=MaasServer().cloud_config(ENDPOINT))
    assert find_webhook() is None


def test_unreadable_files_are_skipped_with_a_warning(fs: FakeFilesystem) -> None:
    """A broken combined JSON is named in a warning and instance-data is read instead; a non-object too."""
    fs.create_file(COMBINED, contents="{not json")
    fs.create_file(INSTANCE_DATA, contents=instance_data(_system_cfg(_maas_cfg("http://g/x")), version=(23, 4, 4)))
    with capture_logs() as logs:
        found = find_webhook()
    assert found is not None
    assert found.endpoint == "http://g/x"
    assert [e["path"] for e in logs if e["event"] == "report.config_unreadable"] == [COMBINED]
    fs.remove_object(INSTANCE_DATA)
    fs.create_file(INSTANCE_DATA, contents="[]")
    with capture_logs() as logs:
        assert find_webhook() is None
    assert [e["error"] for e in logs if e["path"] == INSTANCE_DATA] == ["not a JSON object"]


def test_default_paths_are_cloud_inits() -> None:
    """The defaults are where cloud-init writes its JSON on Ubuntu (cloudinit/helpers.py Paths lookups)."""
    assert cloudinit_cfg.COMBINED_JSON == COMBINED
    assert cloudinit_cfg.INSTANCE_DATA_JSON == INSTANCE_DATA
