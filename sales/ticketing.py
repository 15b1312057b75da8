"""Tickets a door scanner can trust offline: each is a compact JWS signed with
Ed25519 (PyJWT's EdDSA on `cryptography`), verifiable with the public key
published at ``GET /events/{id}/ticket-key`` and by nothing less.

Claims: ``tid`` the ticket id, ``eid`` the event, ``sec`` the section and
``seat`` (absent for general admission), ``sn`` the ticket's serial, ``oid``
its order (which lets the door admit a ticket the writer has not recorded
yet). The serial is unique per ticket (derived from its order), so a token
names one issue of a ticket: a seat that is refunded and sold again gets a new
ticket with a new serial, and the old token stays refused however valid its
signature. Signatures are deterministic,
so a ticket's token is the same every time it is shown.

The private key comes from ``ONSALE_TICKET_SIGNING_KEY`` (PEM, PKCS#8) or is
generated into the data directory (``ticket-signing-key.pem``, mode 0600).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from persistence.secrets import load_or_create_secret

ALGORITHM = "EdDSA"
KEY_FILE = "ticket-signing-key.pem"


class InvalidTicket(Exception):
    """Not a ticket this deployment signed (or not for this event)."""


@dataclass(frozen=True)
class TicketClaims:
    ticket_id: str
    event_id: str
    section: str
    seat: str | None
    serial: str
    order_id: str | None = None  # tickets issued since orders live in the engine


def _new_private_pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class TicketSigner:
    def __init__(self, private_pem: str) -> None:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the ticket signing key must be an Ed25519 private key")
        self._private = key
        self.public: Ed25519PublicKey = key.public_key()
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = _b64url(hashlib.sha256(raw).digest()[:9])
        self._raw_public = raw

    @classmethod
    def from_settings(cls, private_pem: str | None, data_dir: Path) -> TicketSigner:
        return cls(private_pem or load_or_create_secret(data_dir, KEY_FILE, _new_private_pem))

    def sign(self, claims: TicketClaims) -> str:
        body: dict[str, Any] = {
            "tid": claims.ticket_id,
            "eid": claims.event_id,
            "sec": claims.section,
            "sn": claims.serial,
        }
        if claims.seat is not None:
            body["seat"] = claims.seat
        if claims.order_id is not None:
            body["oid"] = claims.order_id
        return jwt.encode(body, self._private, algorithm=ALGORITHM, headers={"kid": self.key_id})

    def verify(self, token: str, event_id: str) -> TicketClaims:
        """The claims of a token this key signed for ``event_id``; InvalidTicket
        for anything else (a changed byte, another key, another event)."""
        try:
            body = jwt.decode(token, self.public, algorithms=[ALGORITHM])
            claims = TicketClaims(
                str(body["tid"]), str(body["eid"]), str(body["sec"]), body.get("seat"),
                str(body["sn"]), body.get("oid"),
            )  # fmt: skip
        except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
            raise InvalidTicket("the ticket's signature does not verify") from exc
        if claims.event_id != event_id:
            raise InvalidTicket("the ticket is for another event")
        return claims

    def public_jwk(self) -> dict[str, str]:
        """The verification key as a JWK (RFC 8037), for scanners."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(self._raw_public),
            "kid": self.key_id,
            "alg": ALGORITHM,
            "use": "sig",
        }

    def public_pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
