"""fleet.client and fleet.profile: the API key, its signature, where it comes from, and MAAS's errors."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from harmonic_installer.fleet import profile
from harmonic_installer.fleet.client import ApiKey, MaasClient, api_url, oauth_header
from harmonic_installer.fleet.errors import FleetError, FleetExit, NotFound, Rejected
from harmonic_installer.fleet.transport import UrllibTransport
from tests.support.maas_api import ApiMachine, MaasApi
from tests.support.maas_server import closed_port


@pytest.fixture
def api() -> Iterator[MaasApi]:
    """A stand-in MAAS REST API with one Ready machine."""
    server = MaasApi(
        machines=[ApiMachine("abc123", "node-a", tags=["rack1"])], tags={"rack1": "harmonic.disk.serial=S1"}
    )
    server.start()
    yield server
    server.stop()


def client_for(api: MaasApi, key: str | None = None) -> MaasClient:
    return MaasClient(api.url, ApiKey.parse(key or api.api_key, "test"), transport=UrllibTransport())


def test_oauth_header_is_what_the_maas_cli_sends() -> None:
    """PLAINTEXT with an empty consumer secret: the signature is '&' + token secret, percent-encoded."""
    header = oauth_header(ApiKey("ck", "tk", "s&cret"), timestamp=1700000000, nonce="n1")
    assert header.startswith("OAuth ")
    assert 'oauth_signature="%26s%2526cret"' in header
    for part in ('oauth_signature_method="PLAINTEXT"', 'oauth_consumer_key="ck"', 'oauth_token="tk"'):
        assert part in header
    assert 'oauth_timestamp="1700000000"' in header


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("http://maas:5240/MAAS", "http://maas:5240/MAAS/api/2.0/"),
        ("http://maas:5240/MAAS/", "http://maas:5240/MAAS/api/2.0/"),
        ("https://maas/MAAS/api/2.0", "https://maas/MAAS/api/2.0/"),
    ],
)
def test_api_url_is_normalised_like_maas_login(given: str, stored: str) -> None:
    """A MAAS URL ends in /api/2.0/ as `maas login` stores it (maascli/utils.py api_url)."""
    assert api_url(given) == stored


def test_api_key_must_have_three_parts_and_is_never_shown() -> None:
    """A malformed key is a usage error; repr hides the token and the secret."""
    with pytest.raises(FleetError) as err:
        ApiKey.parse("only:two", "$MAAS_API_KEY")
    assert err.value.exit_code == FleetExit.USAGE
    key = ApiKey.parse("ck:tk:secret\n", "file")
    assert "secret" not in repr(key)
    assert "tk" not in repr(key)


def test_a_good_key_reads_machines(api: MaasApi) -> None:
    """whoami and machines read succeed with the right key, signed fresh for each request."""
    client = client_for(api)
    assert client.whoami()["username"] == "admin"
    assert [m["system_id"] for m in client.machines([("tags", "rack1")])] == ["abc123"]
    assert api.rejections == []


def test_a_wrong_key_is_exit_11_with_maas_words(api: MaasApi) -> None:
    """A 401 becomes one line with MAAS's own reason and the AUTH exit code."""
    with pytest.raises(FleetError) as err:
        client_for(api, "wrong:tk:ts").whoami()
    assert err.value.exit_code == FleetExit.AUTH
    assert "Invalid API key" in err.value.message
    assert "\n" not in err.value.message


def test_an_unreachable_maas_is_one_line() -> None:
    """Connection refused: 'cannot reach MAAS at <url>', exit 10."""
    client = MaasClient(f"http://127.0.0.1:{closed_port()}/MAAS/", ApiKey("a", "b", "c"), transport=UrllibTransport())
    with pytest.raises(FleetError) as err:
        client.whoami()
    assert err.value.exit_code == FleetExit.MAAS
    assert err.value.message.startswith("cannot reach MAAS at http://127.0.0.1:")


def test_clock_skew_is_corrected_once_from_the_date_header(api: MaasApi) -> None:
    """MAAS an hour ahead refuses the timestamp once; the client adopts its clock and the retry passes."""
    api.skew_s = 3600
    assert client_for(api).whoami()["username"] == "admin"
    assert [status for status, _ in api.rejections] == [401]


def test_field_errors_and_missing_objects_keep_maas_text(api: MaasApi) -> None:
    """A 400 of field errors is flattened to one line; a 404 is NotFound."""
    client = client_for(api)
    with pytest.raises(Rejected) as err:
        client.machines([("tags", "nope")])
    assert "tags: No such tag(s): 'nope'." in err.value.message
    with pytest.raises(NotFound):
        client.tag("nope")


# ---- profile --------------------------------------------------------------------------------------------


def make_db(path: Path, profiles: Mapping[str, Mapping[str, object]]) -> Path:
    """A profile database as `maas login` writes it (maascli/config.py ProfileConfig)."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS profiles (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB)")
    for name, data in profiles.items():
        db.execute("INSERT OR REPLACE INTO profiles (name, data) VALUES (?, ?)", (name, json.dumps(data)))
    db.commit()
    db.close()
    return path


def test_the_maas_cli_profile_gives_url_and_key(tmp_path: Path) -> None:
    """The named profile's URL and credentials triple are used; with one profile, no name is needed."""
    data = {"credentials": ["ck", "tk", "ts"], "url": "http://maas:5240/MAAS/api/2.0/", "name": "ops", "cacerts": None}
    make_db(tmp_path / ".maascli.db", {"ops": data})
    for name in ("ops", None):
        connection = profile.from_profile(name, home=tmp_path)
        assert connection.url == "http://maas:5240/MAAS/api/2.0/"
        assert connection.key == ApiKey("ck", "tk", "ts")


def test_the_snap_profile_database_is_found(tmp_path: Path) -> None:
    """The snap's maas keeps its database under ~/snap/maas/current."""
    snap = tmp_path / "snap/maas/current"
    snap.mkdir(parents=True)
    make_db(snap / ".maascli.db", {"a": {"credentials": ["c", "t", "s"], "url": "http://m/MAAS/"}})
    assert profile.from_profile("a", home=tmp_path).key.token_key == "t"


@pytest.mark.parametrize(
    ("profiles", "name", "words"),
    [
        ({}, "ops", "no MAAS CLI profile 'ops'"),
        ({"a": {"credentials": None, "url": "http://m/"}}, "a", "anonymous"),
        (
            {"a": {"credentials": ["c", "t", "s"], "url": "http://m/"}, "b": {"credentials": None, "url": "u"}},
            None,
            "pass --profile",
        ),
    ],
)
def test_profile_problems_are_usage_errors(
    tmp_path: Path, profiles: dict[str, dict[str, object]], name: str | None, words: str
) -> None:
    """A missing, anonymous or ambiguous profile: one line naming the fix, exit 2."""
    make_db(tmp_path / ".maascli.db", profiles)
    with pytest.raises(FleetError) as err:
        profile.from_profile(name, home=tmp_path)
    assert err.value.exit_code == FleetExit.USAGE
    assert words in err.value.message


def test_no_database_says_how_to_log_in(tmp_path: Path) -> None:
    """Without ~/.maascli.db the message says `maas login` or --maas-url with $MAAS_API_KEY."""
    with pytest.raises(FleetError) as err:
        profile.from_profile(None, home=tmp_path)
    assert "maas login" in err.value.message
    assert "MAAS_API_KEY" in err.value.message


def test_maas_url_takes_the_key_from_a_file_or_the_environment(tmp_path: Path) -> None:
    """--api-key-file wins; a file others can read is warned about; $MAAS_API_KEY otherwise; neither is exit 2."""
    key_file = tmp_path / "key"
    key_file.write_text("ck:tk:ts\n")
    key_file.chmod(0o644)
    connection, warnings = profile.from_url("http://m/MAAS", environ={"MAAS_API_KEY": "a:b:c"}, key_file=key_file)
    assert connection.key == ApiKey("ck", "tk", "ts")
    assert warnings
    assert "readable by other users" in warnings[0]
    connection, warnings = profile.from_url("http://m/MAAS", environ={"MAAS_API_KEY": "a:b:c"}, key_file=None)
    assert (connection.key, warnings) == (ApiKey("a", "b", "c"), [])
    with pytest.raises(FleetError) as err:
        profile.from_url("http://m/MAAS", environ={}, key_file=None)
    assert err.value.exit_code == FleetExit.USAGE
