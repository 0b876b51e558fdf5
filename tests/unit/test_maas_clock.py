"""Clock skew against MAAS: the server's Date header, and cloud-init's shared skew file."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from harmonic_installer import formats, maas_clock


def test_http_date_reads_the_three_forms_and_refuses_garbage() -> None:
    """IMF-fixdate, and a zone-less date taken as UTC; junk is None, not an exception."""
    expected = datetime(2026, 12, 7, 16, 0, 0, tzinfo=timezone.utc)
    assert formats.http_date("Mon, 07 Dec 2026 16:00:00 GMT") == expected
    assert formats.http_date(" Mon, 07 Dec 2026 16:00:00 -0000 ") == expected
    assert formats.http_date("yesterday") is None
    assert formats.http_date("") is None


def test_server_skew_is_the_date_header_minus_our_clock() -> None:
    """A server an hour ahead gives +3600 (header name in any case); no Date gives None."""
    now = datetime(2026, 12, 7, 16, 0, 0, tzinfo=timezone.utc).timestamp()
    assert maas_clock.server_skew({"date": "Mon, 07 Dec 2026 17:00:00 GMT"}, now) == 3600
    assert maas_clock.server_skew({"Date": "Mon, 07 Dec 2026 15:59:00 GMT"}, now) == -60
    assert maas_clock.server_skew({}, now) is None
    assert maas_clock.server_skew({"Date": "soon"}, now) is None


def test_skew_file_round_trip_keeps_other_hosts(tmp_path: Path) -> None:
    """Writing one host's skew keeps the others cloud-init wrote; unreadable or odd values read as 0."""
    path = tmp_path / "oauth_skew.json"
    assert maas_clock.read_skew(path, "maas:5240") == 0
    path.write_text(json.dumps({"other:80": 12}), encoding="utf-8")
    maas_clock.write_skew(path, "maas:5240", -300)
    assert json.loads(path.read_text(encoding="utf-8")) == {"other:80": 12, "maas:5240": -300}
    assert maas_clock.read_skew(path, "maas:5240") == -300
    path.write_text('{"maas:5240": true}', encoding="utf-8")
    assert maas_clock.read_skew(path, "maas:5240") == 0
    path.write_text("not json", encoding="utf-8")
    assert maas_clock.read_skew(path, "maas:5240") == 0
