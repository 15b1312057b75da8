"""Passwords, access tokens and refresh tokens.

Access tokens are HS256 JWTs (PyJWT) carrying the user id, role and token
version, checked without a database round trip: the version against the
user's in Redis (:class:`TokenVersions`), so a role change or a logout
revokes older tokens at once. Refresh tokens are random strings; only their
SHA-256 is stored, so a database leak does not leak sessions.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

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


def issue_access_token(
    secret: str, user_id: uuid.UUID, role: Role, ttl_s: int, version: int = 0
) -> str:
    """``version``: the user's token version when the token is issued
    (:class:`TokenVersions`); a token without one (minted by tests and
    benchmarks) counts as version 0, valid until the user's first role
    change or logout."""
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": str(role),
        "iat": now,
        "exp": now + ttl_s,
        "iss": ISSUER,
        "jti": secrets.token_hex(8),
    }
    if version:
        claims["ver"] = version
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@dataclass(frozen=True)
class Verified:
    principal: Principal
    expires_at: float
    version: int


# Verified tokens, until they expire: a buyer's client sends the same token
# with every request, and PyJWT's checks cost tens of microseconds per decode.
# A token is revoked by its user's version (TokenVersions), checked on every
# request after this; a revoked token's entry is dropped (forget_token).
_verified: dict[tuple[str, str], Verified] = {}
_VERIFIED_MAX = 100_000


def read_access_token(secret: str, token: str) -> Verified:
    """The token's claims, signature and expiry checked (not its version)."""
    hit = _verified.get((secret, token))
    if hit is not None and hit.expires_at > time.time():
        return hit
    verified = _decode_access_token(secret, token)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[(secret, token)] = verified
    return verified


def forget_token(secret: str, token: str) -> None:
    _verified.pop((secret, token), None)


class TokenVersions:
    """Each user's token version, in Redis: role changes and logout take
    effect on the next request.

    Bumping sets the version to the time in ms (and past the last one); a
    token carries the version it was issued under and is refused once it is
    below the user's. The key lives as long as an access token, after which
    every token issued before the bump has expired anyway: so only users who
    changed role or logged out in the last ``access_token_ttl_s`` have one,
    and an absent key is version 0.

    Every authenticated request reads the version from Redis (never Postgres),
    after the request arrived; the reads of requests that arrive together are
    one MGET, sent on the event loop's next turn, so the check costs the hold
    path a future rather than a round trip of its own (one GET per hold took
    the hold route from 0.71 to 0.52 of /healthz). The keys share a hash tag,
    so the MGET works on a Redis Cluster too."""

    PREFIX = "onsale:{token-version}:"
    _BUMP = """
local v = math.max(tonumber(ARGV[1]), (tonumber(redis.call('GET', KEYS[1])) or 0) + 1)
redis.call('SET', KEYS[1], v, 'EX', ARGV[2])
return v
"""

    def __init__(self, redis: Any, token_ttl_s: int) -> None:
        self.redis = redis
        self.keep_s = token_ttl_s + 60  # a little past the last token's expiry
        self._bump = redis.register_script(self._BUMP)
        self._waiting: dict[str, list[asyncio.Future[int]]] = {}

    async def current(self, user_id: uuid.UUID) -> int:
        key = self.PREFIX + user_id.hex
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._send)
        self._waiting.setdefault(key, []).append(future)
        return await future

    def _send(self) -> None:
        waiting, self._waiting = self._waiting, {}
        task = asyncio.get_running_loop().create_task(self._read(waiting))
        _reads.add(task)
        task.add_done_callback(_reads.discard)

    async def _read(self, waiting: dict[str, list[asyncio.Future[int]]]) -> None:
        keys = list(waiting)
        try:
            values = await self.redis.mget(keys)
        except Exception as exc:  # every waiting request gets the error (503)
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, value in zip(keys, values, strict=True):
            version = int(value) if value is not None else 0
            for future in waiting[key]:
                if not future.done():
                    future.set_result(version)

    async def bump(self, user_id: uuid.UUID) -> int:
        """Every access token issued to the user before now stops working."""
        now_ms = int(time.time() * 1000)
        return int(await self._bump(keys=[self.PREFIX + user_id.hex], args=[now_ms, self.keep_s]))


_reads: set[asyncio.Task[None]] = set()  # reads in flight, kept from the collector


def _decode_access_token(secret: str, token: str) -> Verified:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
        principal = Principal(uuid.UUID(claims["sub"]), Role(claims["role"]))
        return Verified(principal, float(claims["exp"]), int(claims.get("ver", 0)))
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


# ------------------------------------------------------------- queue passes
#
# A waiting-room admission (lua/queue.lua) travels as a JWT signed with a key
# derived from the JWT secret for this purpose alone, so that a pass can
# never pass for an access token nor an access token for a pass. It names its
# account, its event and its admission (nonce, issued, expires: the engine
# checks the admission on record in the same script call as the hold).

PASS_ISSUER = "onsale-queue"


def _pass_key(secret: str) -> str:
    return hmac.new(secret.encode(), b"onsale queue pass", hashlib.sha256).hexdigest()


def issue_queue_pass(
    secret: str, user_id: uuid.UUID, event_id: str, nonce: str, issued_ms: int, expires_ms: int
) -> str:
    """The same claims give the same token: asking again returns the same pass."""
    claims = {
        "sub": str(user_id),
        "ev": event_id,
        "n": nonce,
        "qi": issued_ms,
        "iat": issued_ms // 1000,
        "exp": expires_ms // 1000,
        "qe": expires_ms,
        "iss": PASS_ISSUER,
    }
    return jwt.encode(claims, _pass_key(secret), algorithm=ALGORITHM)


@dataclass(frozen=True)
class QueuePassClaims:
    user_id: uuid.UUID
    event_id: str
    nonce: str
    issued_ms: int
    expires_ms: int


def read_queue_pass(secret: str, token: str) -> QueuePassClaims:
    """The pass's claims, its signature and expiry checked; InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token,
            _pass_key(secret),
            algorithms=[ALGORITHM],
            issuer=PASS_ISSUER,
            options={"require": ["exp", "sub", "iss", "ev", "n", "qi", "qe"]},
        )
        expires_ms = int(claims["qe"])
        if expires_ms <= time.time() * 1000:
            raise InvalidToken("the queue pass has expired")
        return QueuePassClaims(
            uuid.UUID(claims["sub"]),
            str(claims["ev"]),
            str(claims["n"]),
            int(claims["qi"]),
            expires_ms,
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("the queue pass has expired") from exc
    except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("the queue pass is not valid") from exc
