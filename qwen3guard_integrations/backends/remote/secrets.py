"""Keeping secrets where they belong: URLs shown without credentials, headers checked without
echoing them, and the stored Hugging Face token sent only to Hugging Face.

* `redact_url` is the only form in which a serving URL is shown (``Verdict.endpoint``,
  ``Verdict.model``, ``repr``, error messages, health): userinfo (``user:pass@``) becomes
  ``***@`` and every query value ``***`` (tokens travel in queries: ``?api_key=...``,
  ``?sig=...``); the fragment is dropped. `scrub` takes the same secrets out of any message text
  (an HTTP client's exception may quote the URL).
* `check_headers` and `check_secret` strip surrounding whitespace (a token read from a file
  keeps its trailing newline) and refuse names that are not HTTP tokens and values with control
  characters, with an error that names the header but never shows the value.
* `is_hugging_face_host` tells whether a URL is one of Hugging Face's own endpoints, the only
  place the token stored by ``huggingface-cli login`` may go when no token is passed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from ...core.errors import ConfigurationError

__all__ = [
    "check_headers",
    "check_secret",
    "is_hugging_face_host",
    "redact_url",
    "route",
    "scrub",
    "url_secrets",
]

_MASK = "***"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed inside a value
#: Hugging Face's own hosts (the Hub, Inference Endpoints, the inference router, Spaces)
_HF_SUFFIXES = ("huggingface.co", "hf.co", "huggingface.cloud", "hf.space")


def redact_url(url: str) -> str:
    """``url`` with its userinfo and query values replaced by ``***`` (fragment dropped)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = _MASK + "@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{quote(k, safe='')}={_MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True)
    )
    if parts.query and not query:
        query = _MASK
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def route(base: str, path: str) -> str:
    """``base`` with ``path`` appended to its path, its query kept (``http://h/v1?key=k`` +
    ``/completions`` is ``http://h/v1/completions?key=k``)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, parts.query, ""))


def url_secrets(url: str) -> list[str]:
    """The secret strings inside ``url`` (userinfo parts, query values), raw and decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found += [userinfo, *userinfo.split(":", 1)]
    for piece in parts.query.split("&") if parts.query else []:
        value = piece.split("=", 1)[1] if "=" in piece else piece
        found += [value, unquote(value)]
    if parts.fragment:
        found.append(parts.fragment)
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every occurrence of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _MASK)
    return text


def check_secret(value: str | None, *, what: str) -> str | None:
    """A token or API key, stripped; `ConfigurationError` (value not shown) when unusable."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, not {type(value).__name__}")
    value = value.strip()
    if _CONTROL.search(value) or not value.isascii():
        raise ConfigurationError(
            f"{what} holds a line break, a control or a non-ASCII character (value not shown)"
        )
    return value or None


def check_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """HTTP headers with names checked and values stripped; `ConfigurationError` names the
    offending header and never shows its value."""
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"headers must be a dict, not {type(headers).__name__}")
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name.strip()):
            shown = name.strip() if isinstance(name, str) and name.isprintable() else "?"
            raise ConfigurationError(f"header name {shown[:40]!r} is not a valid HTTP header name")
        name = name.strip()
        if not isinstance(value, str):
            raise ConfigurationError(
                f"header {name!r} must have a string value, not {type(value).__name__}"
            )
        value = value.strip()
        if _CONTROL.search(value):
            raise ConfigurationError(
                f"header {name!r} has a line break or a control character in its value "
                "(value not shown)"
            )
        if not value.isascii():
            raise ConfigurationError(
                f"header {name!r} has a non-ASCII character in its value (value not shown)"
            )
        out[name] = value
    return out


def is_hugging_face_host(url: str) -> bool:
    """True for ``https`` URLs on Hugging Face's own hosts."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme != "https" or not host:
        return False
    return any(host == s or host.endswith("." + s) for s in _HF_SUFFIXES)
