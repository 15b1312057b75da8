"""Passwords, access tokens and refresh tokens.

Access tokens are HS256 JWTs (PyJWT) carrying the user id and role, checked
without a database round trip. Refresh tokens are random strings; only their
SHA-256 is stored, so a database leak does not leak sessions.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sales.access import Principal
from sales.vocabulary import Role

ALGORITHM = "HS256"
ISSUER = "onsale"

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not a real password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


class InvalidToken(Exception):
    pass


def issue_access_token(secret: str, user_id: uuid.UUID, role: Role, ttl_s: int) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": str(role),
        "iat": now,
        "exp": now + ttl_s,
        "iss": ISSUER,
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# Verified tokens, until they expire: a buyer's client sends the same token
# with every request, and PyJWT's checks cost tens of microseconds per decode.
# Safe because an access token is never revoked before it expires.
_verified: dict[tuple[str, str], tuple[Principal, float]] = {}
_VERIFIED_MAX = 100_000


def read_access_token(secret: str, token: str) -> Principal:
    hit = _verified.get((secret, token))
    if hit is not None and hit[1] > time.time():
        return hit[0]
    principal, expires_at = _decode_access_token(secret, token)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[(secret, token)] = (principal, expires_at)
    return principal


def _decode_access_token(secret: str, token: str) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        return Principal(uuid.UUID(claims["sub"]), Role(claims["role"])), float(claims["exp"])
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("the access token has expired") from exc
    except (jwt.PyJWTError, ValueError, KeyError) as exc:
        raise InvalidToken("the access token is not valid") from exc


def new_refresh_token() -> tuple[str, str]:
    """A refresh token for the client and the hash to store."""
    token = secrets.token_urlsafe(32)
    return token, refresh_token_hash(token)


def refresh_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
