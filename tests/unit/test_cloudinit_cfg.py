"""cloudinit_cfg: MAAS's webhook reporter config is found where cloud-init keeps it, in the forms MAAS writes."""

from __future__ import annotations

import json

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem
from structlog.testing import capture_logs

from harmonic_installer import cloudinit_cfg
from harmonic_installer.cloudinit_cfg import YamlSubsetError, find_webhook, reporting_section
from tests.support.maas_server import MaasServer

ENDPOINT = "http://10.20.0.2:5248/MAAS/metadata/status/xk4p7q"
CFG_D = "/etc/cloud/cloud.cfg.d"

# What Debian/Ubuntu ship in cloud.cfg.d (must be skipped without complaint).
LOGGING_CFG = """\
## This yaml formated config file handles setting
## logger information.
_log:
 - &log_base |
   [loggers]
   keys=root,cloudinit
 - &log_file |
   [handler_cloudLogHandler]
   args=('/var/log/cloud-init.log', 'a', 'UTF-8')
log_cfg: *log_base
output: {all: '| tee -a /var/log/cloud-init-output.log'}
"""


def test_maas_kernel_cmdline_url_file_is_found(fs: FakeFilesystem) -> None:
    """The cloud-config MAAS serves (yaml.safe_dump block style, other sections around) yields the webhook."""
    fs.create_file(f"{CFG_D}/05_logging.cfg", contents=LOGGING_CFG)
    fs.create_file(f"{CFG_D}/91_kernel_cmdline_url.cfg", contents=MaasServer().cloud_config(ENDPOINT))
    found = find_webhook()
    assert found is not None
    assert found.endpoint == ENDPOINT
    assert (found.consumer_key, found.token_key) == ("Dj9fzjKaSV8MyhUvsd", "gsCXJF5Bmq3qpNa3JH")
    assert found.token_secret == "dBTHUxgPZe3gGZ3tfW5z64X5EjZaNRwu"
    assert found.consumer_secret == ""
    assert "91_kernel_cmdline_url.cfg" in found.source
    assert "dBTHUx" not in repr(found)


def test_combined_json_wins_over_cfg_files(fs: FakeFilesystem) -> None:
    """cloud-init's combined config (its own merge of every source) is used when present."""
    fs.create_file(f"{CFG_D}/91_kernel_cmdline_url.cfg", contents=MaasServer().cloud_config("http://old/x"))
    combined = {
        "reporting": {"maas": {"type": "webhook", "endpoint": ENDPOINT, "token_key": "t", "token_secret": "s"}},
        "runcmd": [["harmonic-install", "-p", "-i"]],
    }
    fs.create_file("/run/cloud-init/combined-cloud-config.json", contents=json.dumps(combined))
    found = find_webhook()
    assert found is not None
    assert (found.endpoint, found.token_key, found.consumer_key) == (ENDPOINT, "t", "")


def test_flow_style_and_json_in_yaml(fs: FakeFilesystem) -> None:
    """A one-line flow mapping and a whole-JSON file are read too; quoted values are unquoted."""
    fs.create_file(
        f"{CFG_D}/50-maas.cfg",
        contents=(
            "#cloud-config\n"
            "reporting: {maas: {type: webhook, endpoint: '"
            + ENDPOINT
            + '\', consumer_key: ck, token_key: "tk", token_secret: ts}}  # from MAAS\n'
        ),
    )
    found = find_webhook()
    assert found is not None
    assert (found.endpoint, found.consumer_key, found.token_key, found.token_secret) == (ENDPOINT, "ck", "tk", "ts")
    doc = {"reporting": {"maas": {"type": "webhook", "endpoint": ENDPOINT, "token_secret": "a\u00e9"}}}
    assert reporting_section("#cloud-config\n" + json.dumps(doc, indent=2)) == doc["reporting"]


def test_later_files_override_earlier_per_key(fs: FakeFilesystem) -> None:
    """As in cloud-init, cloud.cfg.d files merge in name order: a later file changes only what it sets."""
    fs.create_file(
        "/etc/cloud/cloud.cfg", contents="reporting:\n  maas:\n    type: webhook\n    endpoint: http://a/x\n"
    )
    fs.create_file(
        f"{CFG_D}/99-override.cfg",
        contents="reporting:\n  maas:\n    endpoint: " + ENDPOINT + "\n    token_key: k2\n",
    )
    found = find_webhook()
    assert found is not None
    assert (found.endpoint, found.token_key) == (ENDPOINT, "k2")


def test_maas_reporter_is_preferred_and_non_webhooks_ignored(fs: FakeFilesystem) -> None:
    """`reporting.maas` wins over other webhooks; log/print handlers and a disabled maas entry are not used."""
    fs.create_file(
        f"{CFG_D}/90.cfg",
        contents=(
            "reporting:\n"
            "  aaa:\n    type: webhook\n    endpoint: http://other/x\n"
            "  logging:\n    type: log\n"
            "  maas:\n    type: webhook\n    endpoint: " + ENDPOINT + "\n"
        ),
    )
    found = find_webhook()
    assert found is not None
    assert found.endpoint == ENDPOINT
    fs.create_file(f"{CFG_D}/99.cfg", contents="reporting:\n  maas:\n    type: log\n")
    found = find_webhook()
    assert found is not None
    assert found.endpoint == "http://other/x"


def test_nothing_configured(fs: FakeFilesystem) -> None:
    """No cloud-init at all, or cloud-init without reporting: None, and no warning."""
    with capture_logs() as logs:
        assert find_webhook() is None
        fs.create_file(f"{CFG_D}/05_logging.cfg", contents=LOGGING_CFG)
        fs.create_file("/etc/cloud/cloud.cfg", contents="users:\n- default\ndisable_root: true\n")
        assert find_webhook() is None
    assert logs == []


def test_unreadable_files_are_skipped_with_a_warning(fs: FakeFilesystem) -> None:
    """A reporting section beyond the subset, or a broken combined JSON, is named in a warning and skipped."""
    fs.create_file("/run/cloud-init/combined-cloud-config.json", contents="{not json")
    fs.create_file(f"{CFG_D}/10-bad.cfg", contents="reporting:\n  maas: &anchor\n    - a\n")
    fs.create_file(
        f"{CFG_D}/20-good.cfg", contents="reporting:\n  maas:\n    type: webhook\n    endpoint: http://g/x\n"
    )
    with capture_logs() as logs:
        found = find_webhook()
    assert found is not None
    assert found.endpoint == "http://g/x"
    paths = sorted(e["path"] for e in logs if e["event"] == "report.config_unreadable")
    assert paths == ["/etc/cloud/cloud.cfg.d/10-bad.cfg", "/run/cloud-init/combined-cloud-config.json"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reporting:\n  maas:\n    type: webhook\n", {"maas": {"type": "webhook"}}),
        (
            "a: 1\nreporting:\n\n  # c\n  m:\n    endpoint: http://h:1/x#y  # c\nb: 2\n",
            {"m": {"endpoint": "http://h:1/x#y"}},
        ),
        ("reporting:\n    m:\n        k: 'it''s'\n        e: \"a\\tb\"\n", {"m": {"k": "it's", "e": "a\tb"}}),
        (
            "reporting: {m: {enabled: true, level: ~, e: http://h/x}}\n",
            {"m": {"enabled": True, "level": None, "e": "http://h/x"}},
        ),
        ("'reporting':\n  m: {a: [1, 2]}\n", {"m": {"a": ["1", "2"]}}),
        ("write_files:\n- content: |\n    reporting:\n      x: y\n  path: /a\n", None),
    ],
)
def test_yaml_subset(text: str, expected: object) -> None:
    """The subset reader handles block and flow mappings, quotes, comments, and ignores the rest of the file."""
    assert reporting_section(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "reporting:\n  maas:\n  - a\n",
        "reporting:\n  maas: |\n    text\n",
        "reporting:\n  maas:\n      a: b\n    c: d\n",
        "reporting: {maas: {a: b}\n",
        "reporting:\n\tmaas: {}\n",
    ],
)
def test_yaml_outside_the_subset_is_refused(text: str) -> None:
    """Sequences, block scalars, bad indentation, unclosed flow and tabs raise YamlSubsetError (file skipped)."""
    with pytest.raises(YamlSubsetError):
        reporting_section(text)


def test_default_paths_are_cloud_inits() -> None:
    """The defaults are where cloud-init keeps its config on Ubuntu."""
    assert cloudinit_cfg.COMBINED_JSON == "/run/cloud-init/combined-cloud-config.json"
    assert cloudinit_cfg.CLOUD_CFG_D == "/etc/cloud/cloud.cfg.d"


@pytest.mark.parametrize("flow", [False, True, None])
def test_subset_reader_agrees_with_pyyaml_on_what_maas_writes(flow: bool | None) -> None:
    """For MAAS-shaped documents dumped by PyYAML (as MAAS does) the reader returns what yaml.safe_load does."""
    yaml = pytest.importorskip("yaml")  # a test-only dependency; the runtime never imports it
    for endpoint in (ENDPOINT, "https://maas.example.com:5443/MAAS/metadata/status/a-b_c", "http://[fd00::2]:5248/x"):
        for secret in ("dBTHUxgPZe3gGZ3tfW5z64X5EjZaNRwu", "12345", "yes", "a: b", "#x", "it's", "tab\there"):
            doc = {
                "datasource": {"MAAS": {"metadata_url": endpoint, "token_secret": secret}},
                "power_state": {"condition": "test ! -e /tmp/block-reboot", "delay": "now", "mode": "reboot"},
                "reporting": {
                    "maas": {
                        "consumer_key": "Dj9fzjKaSV8MyhUvsd",
                        "endpoint": endpoint,
                        "token_key": "gsCXJF5Bmq3qpNa3JH",
                        "token_secret": secret,
                        "type": "webhook",
                    }
                },
                "runcmd": [["harmonic-install", "-p", "-i"], "echo done"],
            }
            text = "#cloud-config\n" + yaml.safe_dump(doc, default_flow_style=flow)
            assert reporting_section(text) == yaml.safe_load(text)["reporting"], text
