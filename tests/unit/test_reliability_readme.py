"""The README's reliability section is what the last complete failsafe run recorded."""

from __future__ import annotations

from scripts.reliability_report import README, load, render


def test_reliability_section_is_current() -> None:
    """The section between the markers renders from docs/reliability.json (a failsafe run rewrites both)."""
    text = README.read_text()
    assert render(text, load()) == text


def test_every_recorded_case_held() -> None:
    """The published ledger has no failed case, and every case that held recorded its checks."""
    data = load()
    assert data["cases"], "empty ledger"
    failed = [c["name"] for c in data["cases"] if c["outcome"] != "held" and not c["outcome"].startswith("skipped")]
    assert failed == []
    assert all(c["checks"] for c in data["cases"] if c["outcome"] == "held")
