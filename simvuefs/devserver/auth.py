"""Bearer tokens (HS256 JWT) and signed storage URLs, both keyed by the server's secret.

The secret lives in ``DATA/secret`` (mode 0600) and survives restarts, so tokens and URLs
minted by an earlier run stay valid. Only the standard library is used: a JWT is three
base64url parts, and its signature is HMAC-SHA256 over the first two.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

TOKEN_LIFETIME = 365 * 24 * 3600.0
SECRET_BYTES = 32
_JWT_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenError(Exception):
    """The bearer token is missing, malformed, badly signed or expired."""


def load_or_create_secret(path: Path) -> bytes:
    """Return the secret stored at *path*, creating it (mode 0600) if it does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(secret) < 16:
            raise ValueError(f"{path} holds no usable secret") from None
        return secret
    secret = secrets.token_bytes(SECRET_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secret.hex() + "\n")
    return secret


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hmac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def mint_token(
    secret: bytes, subject: str, lifetime: float = TOKEN_LIFETIME, now: float | None = None
) -> str:
    """Return a JWT for *subject* that expires *lifetime* seconds after *now*.

    ``iat`` has millisecond precision (JWT NumericDates may be fractional), so the token
    faults can tell tokens minted within one second apart.
    """
    issued = round(time.time() if now is None else now, 3)
    # jti makes every token distinct, even two minted in the same millisecond.
    claims = {
        "sub": subject,
        "iat": issued,
        "exp": int(issued + lifetime),
        "jti": secrets.token_hex(8),
    }
    header = _b64encode(json.dumps(_JWT_HEADER, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{_b64encode(_hmac(secret, signing_input))}"


def verify_token(secret: bytes, token: str, now: float | None = None) -> dict[str, Any]:
    """Return the claims of *token*, or raise TokenError if this server did not mint it
    or it has expired."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("invalid token: not a JWT")
    header, payload, signature = parts
    try:
        expected = _hmac(secret, f"{header}.{payload}".encode("ascii"))
        if not hmac.compare_digest(expected, _b64decode(signature)):
            raise TokenError("invalid token: bad signature")
        claims = json.loads(_b64decode(payload))
    except (ValueError, UnicodeError) as exc:
        raise TokenError("invalid token: malformed") from exc
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int | float):
        raise TokenError("invalid token: no expiry")
    if claims["exp"] <= (time.time() if now is None else now):
        raise TokenError("token has expired")
    return claims


def sign(secret: bytes, *parts: str) -> str:
    """Return the hex HMAC of *parts* (joined by newlines): the signature of a storage URL."""
    return _hmac(secret, "\n".join(parts).encode("utf-8")).hex()


def signature_matches(secret: bytes, signature: str, *parts: str) -> bool:
    """True when *signature* is :func:`sign` of *parts*."""
    return hmac.compare_digest(sign(secret, *parts), signature)
