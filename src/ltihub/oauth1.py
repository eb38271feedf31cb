"""OAuth 1.0a HMAC-SHA1 signing of a form POST (RFC 5849), stdlib only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit


def percent_encode(value: str) -> str:
    """RFC 5849 section 3.6: UTF-8, then escape everything but ALPHA DIGIT - . _ ~."""
    return quote(value.encode("utf-8"), safe="~")


def base_string_uri(url: str) -> str:
    """RFC 5849 section 3.4.1.2: lower-case scheme and host, no default port, no query."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and not (
        (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    ):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


def normalize_parameters(params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 section 3.4.1.3.2: encode, sort by name then value, join."""
    encoded = sorted((percent_encode(k), percent_encode(v)) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in encoded)


def signature_base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 section 3.4.1; query parameters of ``url`` are included."""
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    all_params = [*query, *params]
    return "&".join(
        (
            percent_encode(method.upper()),
            percent_encode(base_string_uri(url)),
            percent_encode(normalize_parameters(all_params)),
        )
    )


def hmac_sha1(base_string: str, consumer_secret: str, token_secret: str = "") -> str:
    key = f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}"
    digest = hmac.new(key.encode("utf-8"), base_string.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_launch(
    url: str,
    key: str,
    secret: str,
    params: Mapping[str, str],
    nonce: str | None = None,
    timestamp: int | str | None = None,
) -> dict[str, str]:
    """Return ``params`` plus the oauth_* fields, signed for a POST to ``url``.

    ``nonce`` and ``timestamp`` may be forced (replay and clock-skew tests).
    Any oauth_* keys already in ``params`` are replaced.
    """
    fields = {k: v for k, v in params.items() if not k.startswith("oauth_")}
    fields.update(
        {
            "oauth_version": "1.0",
            "oauth_nonce": nonce if nonce is not None else secrets.token_hex(16),
            "oauth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
            "oauth_consumer_key": key,
            "oauth_signature_method": "HMAC-SHA1",
            "oauth_callback": "about:blank",
        }
    )
    base = signature_base_string("POST", url, fields.items())
    fields["oauth_signature"] = hmac_sha1(base, secret)
    return fields
