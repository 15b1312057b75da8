"""One frame for every viewer: uvicorn's WebSocket protocol with a way for the
live fan-out to write a frame straight to a socket.

A merged delta goes to thousands of sockets a few times a second. Sent through
ASGI, each copy is framed again and passes four layers of awaits; here it is
framed once (server frames are unmasked, and without per-message compression
every connection's bytes are the same) and written to each socket whose buffer
is not full. A socket whose buffer is full, or any server without this
protocol, gets the ordinary ASGI path through the viewer's own queue.

``onsale serve`` runs uvicorn with ``ws=`` this module's protocol and
compression off; the ASGI scope of each WebSocket then carries the extension
``onsale.direct_write`` (a :class:`DirectWriter`).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode

EXTENSION = "onsale.direct_write"
PROTOCOL = "api.broadcast:BroadcastWebSocketProtocol"


def text_frame(text: str) -> bytes:
    """``text`` as one unmasked, uncompressed WebSocket frame."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])


class DirectWriter:
    """Writes whole frames to one connection, never waiting: a frame is
    refused (False) while the connection's buffer is above its high-water
    mark, before the handshake, or once a close has begun."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: BroadcastWebSocketProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        p = self._protocol
        if (
            not p.handshake_complete
            or p.close_sent
            or p.disconnected
            or not p.writable.is_set()
            or p.transport.is_closing()
        ):
            return False
        p.transport.write(frame)
        return True


class BroadcastWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        # Only where no extension (compression) can make one socket's bytes
        # differ from another's.
        if scope is not None and not self.config.ws_per_message_deflate:
            scope["extensions"][EXTENSION] = DirectWriter(self)
