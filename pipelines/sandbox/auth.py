"""Sandbox credentials and the parsing of ``Authorization`` headers.

The defaults are fixed strings (DHIS2's demo ``admin`` / ``district`` and tokens in each
system's own format) so tests and connector configs can name them; none of them protects
anything real, the sandbox listens on loopback only by default.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from dataclasses import dataclass


def _dhis2_token(secret: str) -> str:
    """A personal access token in DHIS2's v1 format: ``d2pat_``, 32 characters, and the
    CRC32 of those characters as 10 digits (what DHIS2 checks before a database look-up)."""
    body = (secret * 4)[:32]
    return f"d2pat_{body}{zlib.crc32(body.encode('ascii')):010d}"


@dataclass(frozen=True)
class Credentials:
    """Who may call each API. ``fhir_token`` ``None`` leaves the FHIR servers open (as many
    EMRs are inside a hospital network); set it to require ``Authorization: Bearer``."""

    dhis2_username: str = "admin"
    dhis2_password: str = "district"
    dhis2_api_token: str = _dhis2_token("healthpipeSandbox")
    fhir_token: str | None = None
    odk_email: str = "sandbox@healthpipe.example"
    odk_password: str = "sandbox-password"
    kobo_username: str = "sandbox"
    kobo_password: str = "sandbox-password"
    # Kobo API tokens are 40 hexadecimal characters.
    kobo_token: str = hashlib.sha1(b"healthpipe-sandbox-kobo", usedforsecurity=False).hexdigest()


def scheme_and_value(header: str | None) -> tuple[str, str] | None:
    """``("basic", "dXNlcjpwYXNz")`` from ``Basic dXNlcjpwYXNz``; schemes are
    case-insensitive (RFC 9110)."""
    if not header or " " not in header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    return scheme.lower(), value.strip()


def basic_pair(value: str) -> tuple[str, str] | None:
    """The user and password of a Basic credential, or ``None`` if it does not decode."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def same(given: str, expected: str) -> bool:
    """Constant-time comparison, as a real server would do it."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def basic_matches(header: str | None, user: str, password: str) -> bool:
    parsed = scheme_and_value(header)
    if not parsed or parsed[0] != "basic":
        return False
    pair = basic_pair(parsed[1])
    return pair is not None and same(pair[0], user) and same(pair[1], password)


def token_matches(header: str | None, scheme: str, token: str) -> bool:
    parsed = scheme_and_value(header)
    return parsed is not None and parsed[0] == scheme.lower() and same(parsed[1], token)
