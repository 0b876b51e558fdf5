"""cloud-init's webhook reporter configuration, as MAAS writes it into the ephemeral OS.

MAAS gives the ephemeral Ubuntu a `reporting: {maas: {type: webhook, endpoint, consumer_key, token_key,
token_secret}}` section (fetched by cloud-init through `cloud-config-url=` and kept in
/etc/cloud/cloud.cfg.d/91_kernel_cmdline_url.cfg). We read it from, in order:

1. /run/cloud-init/combined-cloud-config.json: cloud-init's own merge of every source (cloud-init 23.x and
   later, which the jammy MAAS images carry). Plain JSON, read exactly.
2. /etc/cloud/cloud.cfg, then /etc/cloud/cloud.cfg.d/*.cfg in name order (later files win, as in
   cloud-init). These are YAML; the runtime must stay pure Python (no PyYAML C extension in the zipapp),
   so only the top-level `reporting:` section of each file is read, with a small reader for the YAML that
   section uses (block and flow mappings of scalars). The rest of each file is never parsed.

Read-only: no network, and a file we cannot read is skipped with a warning, never an error.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from harmonic_installer.config import redact_url

log = structlog.get_logger()

COMBINED_JSON = "/run/cloud-init/combined-cloud-config.json"
CLOUD_CFG = "/etc/cloud/cloud.cfg"
CLOUD_CFG_D = "/etc/cloud/cloud.cfg.d"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One webhook reporter: where to post and how to sign (any credential may be empty)."""

    endpoint: str
    consumer_key: str = ""
    consumer_secret: str = ""
    token_key: str = ""
    token_secret: str = ""
    source: str = ""

    def __repr__(self) -> str:  # never show the secrets
        return f"WebhookConfig(endpoint={redact_url(self.endpoint)!r}, source={self.source!r}, secrets=***)"

    @property
    def signed(self) -> bool:
        """True when any OAuth credential is set (else events are posted unsigned, as cloud-init does)."""
        return bool(self.consumer_key or self.token_key or self.token_secret or self.consumer_secret)


def find_webhook(
    *, combined: str = COMBINED_JSON, cfg: str = CLOUD_CFG, cfg_d: str = CLOUD_CFG_D
) -> WebhookConfig | None:
    """The MAAS webhook reporter cloud-init is configured with, or None.

    Prefers the reporter named `maas`; otherwise the first webhook (by name) with an endpoint.
    """
    reporting, source = _from_combined(Path(combined))
    if reporting is None:
        reporting, source = _from_cfg_files(Path(cfg), Path(cfg_d))
    if not reporting:
        return None
    names = sorted(reporting, key=lambda n: (n != "maas", n))
    for name in names:
        handler = reporting[name]
        if not isinstance(handler, Mapping) or handler.get("type") != "webhook":
            continue
        endpoint = handler.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            continue
        return WebhookConfig(
            endpoint=endpoint,
            consumer_key=_text(handler.get("consumer_key")),
            consumer_secret=_text(handler.get("consumer_secret")),
            token_key=_text(handler.get("token_key")),
            token_secret=_text(handler.get("token_secret")),
            source=f"{source} (reporting.{name})",
        )
    return None


def _text(value: object) -> str:
    if value is None:
        return ""
    return str(value)


def _from_combined(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The `reporting` section of cloud-init's combined config; None if that file is absent or unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("report.config_unreadable", path=str(path), error=str(exc))
        return None, ""
    if not isinstance(data, dict):
        log.warning("report.config_unreadable", path=str(path), error="not a JSON object")
        return None, ""
    reporting = data.get("reporting")
    return (dict(reporting) if isinstance(reporting, dict) else {}), str(path)


def _from_cfg_files(cfg: Path, cfg_d: Path) -> tuple[dict[str, Any], str]:
    """The `reporting` sections of cloud.cfg and cloud.cfg.d/*.cfg merged per reporter, later files winning."""
    files = [cfg]
    with contextlib.suppress(OSError):
        files += sorted(p for p in cfg_d.iterdir() if p.name.endswith(".cfg"))
    merged: dict[str, Any] = {}
    sources: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("report.config_unreadable", path=str(path), error=str(exc))
            continue
        try:
            section = reporting_section(text)
        except YamlSubsetError as exc:
            log.warning("report.config_unreadable", path=str(path), error=str(exc))
            continue
        if section is None:
            continue
        if not isinstance(section, dict):
            log.warning("report.config_unreadable", path=str(path), error="reporting: is not a mapping")
            continue
        sources.append(str(path))
        for name, handler in section.items():
            if isinstance(handler, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **handler}
            else:
                merged[name] = handler
    return merged, ", ".join(sources[-1:])


# ---------------------------------------------------------------------------------------------------------
# The YAML subset: enough for the `reporting:` section MAAS (yaml.safe_dump) and people write.


class YamlSubsetError(ValueError):
    """The `reporting:` section uses YAML beyond the subset read here."""


_TOP_KEY = re.compile(r"^(?P<key>[A-Za-z_][\w-]*|'[^']*'|\"[^\"]*\")\s*:(?:\s+(?P<rest>.*))?$")


def reporting_section(text: str) -> Any:
    """The value of the top-level `reporting` key of a cloud-config document; None if it has none.

    A document that is JSON (or a flow mapping) as a whole is read as such. Otherwise only the lines of the
    top-level `reporting:` key are read: a flow mapping on the key's line, or the indented block below it.

    Raises:
        YamlSubsetError: the section is not in the supported subset.
    """
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    stripped = body.strip()
    if stripped.startswith("{"):
        document = _Flow(stripped).parse_document()
        if not isinstance(document, dict):
            raise YamlSubsetError("the document is not a mapping")
        return document.get("reporting")
    lines = text.splitlines()
    found: Any = None
    for index, line in enumerate(lines):
        match = _TOP_KEY.match(line.rstrip())
        if not match or _unquote_key(match.group("key")) != "reporting":
            continue
        rest = _strip_comment(match.group("rest") or "").strip()
        if rest:
            found = _scalar_or_flow(rest)
        else:
            block = []
            for following in lines[index + 1 :]:
                if following.strip() and not following[0].isspace() and not following.lstrip().startswith("#"):
                    break
                block.append(following)
            found = _Block(block).parse()
    return found


def _unquote_key(key: str) -> str:
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "'\"":
        return key[1:-1]
    return key


def _strip_comment(text: str) -> str:
    """The text without a trailing ` # comment` (outside quotes)."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


def _scalar_or_flow(text: str) -> Any:
    if text[:1] in "{[":
        return _Flow(text).parse_document()
    if text[:1] in "|>&*!":
        raise YamlSubsetError(f"unsupported YAML construct {text[:1]!r}")
    if text[:1] == '"':
        text = re.sub(r"\\\n[ \t]*", "", text)
    return _scalar(_fold(text))


def _fold(text: str) -> str:
    """YAML line folding of a multi-line scalar: each line break (with its indentation) becomes one space."""
    return re.sub(r"[ \t]*\n[ \t]*", " ", text) if "\n" in text else text


_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE", "yes", "Yes", "on", "On"}
_FALSE = {"false", "False", "FALSE", "no", "No", "off", "Off"}


def _scalar(text: str) -> Any:
    """A plain or quoted scalar (YAML 1.1 booleans and nulls; numbers stay text: we need none)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            raise YamlSubsetError(f"unsupported double-quoted string {text[:40]!r}") from None
    if text[:1] in "'\"":
        raise YamlSubsetError("unterminated quoted string")
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return text


class _Block:
    """Indented block mappings (`key: value`, nested by indentation) of scalars or flow collections."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = [
            (len(line) - len(line.lstrip(" ")), line.strip())
            for line in lines
            if line.strip() and not line.lstrip().startswith("#")
        ]
        for line in lines:
            if line.startswith("\t") or "\t" in line[: len(line) - len(line.lstrip())]:
                raise YamlSubsetError("tabs in indentation")
        self._pos = 0

    def parse(self) -> Any:
        if not self._lines:
            return None
        value = self._mapping(self._lines[0][0])
        if self._pos != len(self._lines):
            raise YamlSubsetError(f"unexpected indentation at {self._lines[self._pos][1][:40]!r}")
        return value

    def _mapping(self, indent: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while self._pos < len(self._lines):
            level, text = self._lines[self._pos]
            if level < indent:
                break
            if level > indent:
                raise YamlSubsetError(f"unexpected indentation at {text[:40]!r}")
            if text.startswith("- ") or text == "-":
                raise YamlSubsetError("block sequences are not supported in reporting:")
            match = _TOP_KEY.match(text)
            if not match:
                raise YamlSubsetError(f"not a 'key: value' line: {text[:40]!r}")
            key = _unquote_key(match.group("key"))
            rest = _strip_comment(match.group("rest") or "").strip()
            self._pos += 1
            if rest:
                # A value may continue on more-indented lines (a wrapped flow collection or scalar).
                continued = [rest]
                while self._pos < len(self._lines) and self._lines[self._pos][0] > indent:
                    continued.append(_strip_comment(self._lines[self._pos][1]))
                    self._pos += 1
                result[key] = _scalar_or_flow("\n".join(continued))
            elif self._pos < len(self._lines) and self._lines[self._pos][0] > indent:
                result[key] = self._mapping(self._lines[self._pos][0])
            else:
                result[key] = None
        return result


class _Flow:
    """Flow collections (`{a: b, c: [d]}`), which include JSON."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def parse_document(self) -> Any:
        value = self._value()
        self._skip()
        if self._pos != len(self._text):
            raise YamlSubsetError(f"unexpected text after a flow collection: {self._text[self._pos :][:40]!r}")
        return value

    def _skip(self) -> None:
        while self._pos < len(self._text) and self._text[self._pos] in " \t\r\n":
            self._pos += 1

    def _value(self) -> Any:
        self._skip()
        ch = self._text[self._pos : self._pos + 1]
        if not ch:
            raise YamlSubsetError("unexpected end of a flow collection")
        if ch == "{":
            return self._mapping()
        if ch == "[":
            return self._sequence()
        if ch in "'\"":
            return self._quoted()
        return self._plain()

    def _mapping(self) -> dict[str, Any]:
        self._pos += 1
        result: dict[str, Any] = {}
        while True:
            self._skip()
            if self._text[self._pos : self._pos + 1] == "}":
                self._pos += 1
                return result
            key = self._value()
            self._skip()
            if self._text[self._pos : self._pos + 1] != ":":
                raise YamlSubsetError("expected ':' in a flow mapping")
            self._pos += 1
            result[str(key)] = self._value()
            self._skip()
            ch = self._text[self._pos : self._pos + 1]
            if ch == ",":
                self._pos += 1
            elif ch != "}":
                raise YamlSubsetError("expected ',' or '}' in a flow mapping")

    def _sequence(self) -> list[Any]:
        self._pos += 1
        result: list[Any] = []
        while True:
            self._skip()
            if self._text[self._pos : self._pos + 1] == "]":
                self._pos += 1
                return result
            result.append(self._value())
            self._skip()
            ch = self._text[self._pos : self._pos + 1]
            if ch == ",":
                self._pos += 1
            elif ch != "]":
                raise YamlSubsetError("expected ',' or ']' in a flow sequence")

    def _quoted(self) -> Any:
        quote = self._text[self._pos]
        end = self._pos + 1
        while end < len(self._text):
            if self._text[end] == "\\" and quote == '"':
                end += 2
                continue
            if self._text[end] == quote:
                if quote == "'" and self._text[end + 1 : end + 2] == "'":
                    end += 2
                    continue
                break
            end += 1
        else:
            raise YamlSubsetError("unterminated quoted string")
        token = self._text[self._pos : end + 1]
        self._pos = end + 1
        if quote == '"':
            token = re.sub(r"\\\n[ \t]*", "", token)  # an escaped line break joins without a space
        return _scalar(_fold(token))

    def _plain(self) -> Any:
        start = self._pos
        while self._pos < len(self._text):
            ch = self._text[self._pos]
            if ch in ",{}[]":
                break
            # ':' ends a plain key only when followed by a space or a flow indicator (URLs keep their ':').
            if ch == ":" and self._text[self._pos + 1 : self._pos + 2] in ("", " ", ",", "}", "]", "\n"):
                break
            self._pos += 1
        token = _fold(self._text[start : self._pos].strip())
        if not token:
            raise YamlSubsetError("empty value in a flow collection")
        return _scalar(token)
