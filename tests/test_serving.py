"""How `onsale serve` holds its connections: idle HTTP connections outlive the
clients' keep-alive, and the seat map's direct frame writes still work on the
installed uvicorn, whose protocol internals api/broadcast.py subclasses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets

from api.broadcast import EXTENSION, DirectWriter, text_frame
from api.settings import Settings
from api.supervisor import uvicorn_options
from tests.api_support import served_in_process
from tests.conftest import LiveApi

HTTPX_KEEPALIVE_S = httpx.Limits().keepalive_expiry or 5.0  # how long httpx reuses an idle one


def test_the_server_keeps_idle_connections_longer_than_clients_and_balancers_do() -> None:
    """A server that closes an idle connection while its client may still
    reuse it races the client's next request, which then fails with a reset
    (httpx.ReadError): the cause of a flaky 200-buyer payment test, when
    uvicorn's 5 s default met httpx's 5 s."""
    keep_alive_s = uvicorn_options(Settings())["timeout_keep_alive"]
    assert keep_alive_s > HTTPX_KEEPALIVE_S
    assert keep_alive_s > 60  # load balancers' usual idle timeout (AWS ALB, nginx)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> str:
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0].decode()


@pytest.mark.slow
async def test_a_connection_idle_as_long_as_httpx_keeps_it_is_still_served(
    live_api: LiveApi,
) -> None:
    """Against `onsale serve` itself, on one socket: a request, an idle spell
    as long as httpx keeps a connection for reuse (and a little more), then
    the next request on the same socket. With uvicorn's default keep-alive the
    server has closed the socket by then and the second request is lost."""
    address = urlsplit(live_api.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        assert await _exchange(reader, writer, address.netloc) == "HTTP/1.1 200 OK"
        await asyncio.sleep(HTTPX_KEEPALIVE_S + 0.5)  # the idle time under test, not a wait
        assert await _exchange(reader, writer, address.netloc) == "HTTP/1.1 200 OK"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _frame_writer_app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """Accepts a WebSocket and writes one frame through the direct path."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})  # lifespan.startup / .shutdown
            if kind == "lifespan.shutdown":
                return
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    direct = scope["extensions"].get(EXTENSION)
    assert isinstance(direct, DirectWriter), scope["extensions"]
    assert direct.write(text_frame('{"type":"ping"}'))
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def test_direct_frame_writes_work_on_the_installed_uvicorn() -> None:
    """api/broadcast.py subclasses uvicorn's WebSocket protocol and reads its
    state (handshake, close, writability, transport): if uvicorn moves any of
    it, this fails here, not silently in a seat-map storm."""
    async with served_in_process(_frame_writer_app) as base_url:  # type: ignore[arg-type]
        url = base_url.replace("http://", "ws://") + "/ws"
        async with websockets.connect(url) as socket:
            assert await asyncio.wait_for(socket.recv(), 10) == '{"type":"ping"}'
