"""The last line of a download that ran out of attempts: what was tried, and whose problem it looks like.

A failure that repeats identically on every attempt, over new connections, is the server's (or the
proxy's): the same request gets the same answer. Failures that vary (a timeout, then a reset, then a cut
body) point at the network path. The operator at the console needs to know whom to call.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from harmonic_installer.config import redact_url
from harmonic_installer.download.request import Exchange

_NUMBERS = re.compile(r"\d+")


def failure_kind(reason: str) -> str:
    """A failure reason with its numbers taken out: a cut at byte 10 and one at byte 20 are the same kind."""
    return _NUMBERS.sub("N", reason)


def gave_up(
    url_shown: str,
    reasons: Sequence[str],
    exchange: Exchange,
    *,
    elapsed_s: float,
    proxy: str | None,
    budget: str,
) -> str:
    """The operator's line once the retry budget is spent (reasons: one per attempt, oldest first)."""
    n = len(reasons)
    last = reasons[-1] if reasons else "no attempt could be made"
    route = f" through the proxy {redact_url(proxy)}" if proxy else ""
    status = exchange.last_status
    seen = f"last HTTP status {status}" if status is not None else "no HTTP response was received"
    tried = (
        f"{n} attempt{'s' if n != 1 else ''}{route} on {exchange.new_connections} new "
        f"connection{'s' if exchange.new_connections != 1 else ''} in {elapsed_s:.0f} s"
    )
    if exchange.resent:
        tried += f" ({exchange.resent} stale keep-alive resend{'s' if exchange.resent != 1 else ''})"
    kinds = Counter(failure_kind(r) for r in reasons)
    if n >= 2 and len(kinds) == 1:
        whose = "the proxy or the web server" if proxy else "the web server"
        verdict = (
            f"every attempt failed the same way, so this is not a flaky network: {whose} answers this request "
            "like this every time; ask its owner"
        )
    elif n >= 2:
        mix = ", ".join(f"{count} x {_short(kind)}" for kind, count in kinds.most_common(3))
        verdict = f"the failures varied ({mix}), which points at an unreliable network path; ask the network team"
    else:
        verdict = "one attempt only"
    return f"downloading {url_shown}: {last}; gave up after {tried}, {seen}; {verdict} ({budget})"


def _short(kind: str) -> str:
    return kind.split(":", 1)[0][:60]
