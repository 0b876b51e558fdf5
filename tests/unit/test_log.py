"""log: the text line (read back by parse_line), JSON when asked, colour only for a person at a terminal; no line
carries the secrets a traceback's frames hold (Settings, proxy, OAuth)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import structlog

from harmonic_installer import config, maas_status
from harmonic_installer import log as logsetup

TOKEN_SECRET = "tok3nS3cretXYZ"
CONSUMER_SECRET = "c0nsumerS3cretXYZ"
PROXY_PASSWORD = "pr0xyPassw0rdXYZ"


def _settings() -> config.Settings:
    return config.load(
        environ={
            "HARMONIC_MAAS_ENDPOINT": "http://127.0.0.1:5240/MAAS/metadata/status/abc",
            "HARMONIC_MAAS_CONSUMER_KEY": "ck",
            "HARMONIC_MAAS_CONSUMER_SECRET": CONSUMER_SECRET,
            "HARMONIC_MAAS_TOKEN_KEY": "tk",
            "HARMONIC_MAAS_TOKEN_SECRET": TOKEN_SECRET,
            "HARMONIC_PROXY_URL": f"http://user:{PROXY_PASSWORD}@127.0.0.1:3128",
        },
        cmdline="",
    )


def _fail_holding_secrets(settings: config.Settings) -> None:
    target = maas_status.resolve_target(settings, find=lambda: None)
    assert target is not None
    headers = {"Authorization": maas_status.oauth_header(target, timestamp=1, nonce="n")}
    proxy = settings.proxy.url
    raise RuntimeError(f"boom with {len(headers)} headers via a proxy of {len(proxy)} chars")


@pytest.mark.parametrize("as_json", [True, False])
def test_logged_exception_never_prints_secrets_from_frame_locals(as_json: bool) -> None:
    """log.exception() renders the traceback (file, line, function) but no frame's locals: no secret reaches a line."""
    out = io.StringIO()
    logsetup.configure(stream=out, json=as_json)
    settings = _settings()
    try:
        _fail_holding_secrets(settings)
    except RuntimeError:
        structlog.get_logger().exception("thing.failed")
    text = out.getvalue()
    assert "_fail_holding_secrets" in text  # the traceback is there
    assert "boom with 1 headers" in text
    for secret in (TOKEN_SECRET, CONSUMER_SECRET, PROXY_PASSWORD, "oauth_signature"):
        assert secret not in text
    if as_json:
        record = json.loads(text.splitlines()[-1])
        frames = record["exception"][0]["frames"]
        assert frames
        assert all("locals" not in f for f in frames)


# The text line: one readable line per event, read back by parse_line.

ROUND_TRIP_VALUES: dict[str, object] = {
    "plain": "a.deb",
    "spaced": "1.0 GiB of 3.0 GiB (33%), 110 MiB/s",
    "quoted": 'say "hi"',
    "backslash": "C:\\path",
    "equals": "http://127.0.0.1/x?a=b",
    "empty": "",
    "newlines": 'Traceback (most recent call last):\n  File "x"\nValueError: boom',
    "separator": "a\u2028b\x85c\x1bd",  # characters that str.splitlines() or a terminal would act on
    "numeric_text": "12",
    "literal_text": "null",
    "true_text": "true",
    "version": "3.10.13",
    "integer": 1234,
    "negative": -5,
    "number": 33.3,
    "yes": True,
    "no": False,
    "nothing": None,
    "unicode": "Grüße",
}


def _event(**fields: object) -> dict[str, object]:
    return {"event": "download.progress", "level": "info", "timestamp": "2026-12-07T16:16:01.123456Z", **fields}


@pytest.mark.parametrize("colors", [False, True])
def test_a_text_line_reads_back_with_every_value_and_its_type(colors: bool) -> None:
    """render_line -> parse_line gives back the time, level, step, message and every scalar value, typed."""
    line = logsetup.render_line(_event(step="download", **ROUND_TRIP_VALUES), colors=colors)
    assert len(line.splitlines()) == 1
    parsed = logsetup.parse_line(line)
    assert parsed == logsetup.LogLine(
        "2026-12-07T16:16:01.123Z", "info", "download", "download.progress", dict(ROUND_TRIP_VALUES)
    )
    assert parsed.as_event()["step"] == "download"


def test_a_text_line_reads_like_a_sentence() -> None:
    """Time, level, step, message, then key=value; a value is quoted only when it must be."""
    line = logsetup.render_line(_event(step="download", done_bytes=5, summary="1 GiB of 3 GiB", artifact="a.deb"))
    assert line == (
        '2026-12-07T16:16:01.123Z INFO    download  download.progress done_bytes=5 summary="1 GiB of 3 GiB" '
        "artifact=a.deb"
    )
    assert logsetup.render_line({"event": "run.failed", "level": "error", "timestamp": "2026-12-07T16:16:01Z"}) == (
        "2026-12-07T16:16:01Z ERROR   -         run.failed"
    )


def test_lists_and_dicts_are_compact_json_and_read_back_as_such() -> None:
    """argv and other containers are written as compact JSON, unquoted, and read back as lists and dicts."""
    argv = ["dpkg-query", "--show", "--showformat=${Status}\\t${Version}", "a b.deb", 'say "x"', "l1\nl2", "\u2028"]
    line = logsetup.render_line(_event(argv=argv, d={"k": [1, None, True]}, empty=[], t=("a",), text="[x"))
    assert 'argv=["dpkg-query","--show",' in line
    assert len(line.splitlines()) == 1
    fields = logsetup.parse_line(line).fields
    assert fields == {"argv": argv, "d": {"k": [1, None, True]}, "empty": [], "t": ["a"], "text": "[x"}
    assert logsetup.format_value(Path("/data/a b.iso")) == '"/data/a b.iso"'
    assert logsetup.format_value(Path("/data/a.iso")) == "/data/a.iso"


@pytest.mark.parametrize(
    "line",
    [
        "harmonic-install: FAILED at step download: boom (exit 4)",
        "Harmonic cOS installed",
        "2026-12-07T16:16:01Z INFO -",
        '2026-12-07T16:16:01Z INFO - msg key="unterminated',
        "2026-12-07T16:16:01Z LOUD - msg",
        "2026-12-07T16:16:01Z INFO - msg notapair",
        "2026-12-07T16:16:01Z INFO - msg argv=[1,",
        '2026-12-07T16:16:01Z INFO - msg argv=["a"]x',
    ],
)
def test_other_lines_are_not_log_lines(line: str) -> None:
    """The operator's one-line summary and the report are not log lines: parse_line says so."""
    with pytest.raises(ValueError):
        logsetup.parse_line(line)


def test_a_log_line_is_found_behind_a_console_prefix() -> None:
    """On the serial console a line may follow journald's or cloud-init's prefix; find_line reads past it."""
    line = logsetup.render_line(_event(step="download", percent=50.0))
    for prefix in ("", "cloud-init[812]: ", "[   12.345678] harmonic-install[5]: "):
        found = logsetup.find_line(prefix + line)
        assert found is not None
        assert found.fields == {"percent": 50.0}
    assert logsetup.find_line("[  OK  ] Started harmonic-installer.service") is None


@pytest.mark.parametrize(("fmt", "as_json"), [("text", False), ("json", True)])
def test_the_default_is_text_even_off_a_terminal_and_json_only_when_asked(fmt: str, as_json: bool) -> None:
    """A stream that is not a TTY (the journal, the serial console, a pipe) gets text unless JSON is asked for."""
    out = io.StringIO()
    logsetup.configure(stream=out) if fmt == "text" else logsetup.configure(stream=out, fmt=fmt)
    with structlog.contextvars.bound_contextvars(step="write"):
        structlog.get_logger().info("step.finished", status="ok", duration_s=1.5)
    (line,) = out.getvalue().splitlines()
    assert "\x1b[" not in line
    if as_json:
        assert json.loads(line)["step"] == "write"
    else:
        parsed = logsetup.parse_line(line)
        assert (parsed.step, parsed.message, parsed.fields) == (
            "write",
            "step.finished",
            {"status": "ok", "duration_s": 1.5},
        )


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "interactive"),
    [({"TERM": "xterm"}, True), ({"TERM": "dumb"}, False), ({"TERM": "xterm", "JOURNAL_STREAM": "journal"}, False)],
)
def test_colour_only_for_a_person_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], interactive: bool
) -> None:
    """Colour on a TTY; not with TERM=dumb, NO_COLOR, or when systemd connected stdout/stderr to the journal."""
    for name in ("TERM", "NO_COLOR", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    st = os.fstat(2)
    for name, value in env.items():
        monkeypatch.setenv(name, f"{st.st_dev}:{st.st_ino}" if value == "journal" else value)
    assert logsetup.is_interactive(_Tty()) is interactive
    assert logsetup.is_interactive(io.StringIO()) is False
    out = _Tty()
    logsetup.configure(stream=out)
    structlog.get_logger().warning("install.warning", warning="x")
    assert ("\x1b[" in out.getvalue()) is interactive
    assert logsetup.parse_line(out.getvalue()).fields == {"warning": "x"}
    monkeypatch.setenv("NO_COLOR", "1")
    out = _Tty()
    logsetup.configure(stream=out)
    structlog.get_logger().warning("install.warning", warning="x")
    assert "\x1b[" not in out.getvalue()
