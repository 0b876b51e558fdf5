"""The nginx fixture itself: it serves files with strong ETags and honours byte ranges."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.support.nginx import serve

pytestmark = pytest.mark.integration


def test_serves_a_file_with_range_and_etag(tmp_path: Path) -> None:
    """nginx returns 206 for a Range request and a strong ETag that If-Range can use."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "blob.bin").write_bytes(bytes(range(256)) * 16)
    with serve(root) as web:
        req = urllib.request.Request(f"{web.url}/blob.bin", headers={"Range": "bytes=4000-"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206
            assert resp.read() == (bytes(range(256)) * 16)[4000:]
            etag = resp.headers["ETag"]
        assert etag
        assert not etag.startswith("W/")
        assert any("GET /blob.bin" in line for line in web.requests())


def test_serves_from_a_directory_whose_path_has_spaces_quotes_and_semicolons(tmp_path: Path) -> None:
    """A document root (and so its pid, logs and temp paths) under a path with spaces, ';', '"' and '{' works."""
    root = tmp_path / 'a checkout; with "odd" {chars}, and spaces' / "www"
    root.mkdir(parents=True)
    (root / "f.txt").write_text("hello\n")
    with serve(root) as web:
        with urllib.request.urlopen(f"{web.url}/f.txt") as resp:
            assert resp.read() == b"hello\n"
        assert any("GET /f.txt" in line for line in web.requests())
