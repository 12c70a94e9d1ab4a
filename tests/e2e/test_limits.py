"""Bounds that hold before anyone is authenticated: the request head is limited on both ports."""

from __future__ import annotations

import asyncio
import json

import httpx

from hawser._http_protocol import MAX_HEAD_BYTES
from tests.e2e.conftest import GatewayFactory


async def _raw_exchange(port: int, head: bytes, chunk: int = 4096) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for start in range(0, len(head), chunk):
            if writer.is_closing():
                break
            writer.write(head[start:start + chunk])
            try:
                await writer.drain()
            except ConnectionResetError:
                break
        return await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()


async def test_an_oversized_request_head_gets_431_and_others_are_still_served(
    gateway_factory: GatewayFactory,
) -> None:
    async with gateway_factory() as gateway:
        assert gateway.http_port
        assert gateway.api_port
        for port in (gateway.http_port, gateway.api_port):
            junk = b"x" * (4 * MAX_HEAD_BYTES)
            # Never ends its header: the server must not wait for (and buffer) the rest.
            head = b"POST /v1/t HTTP/1.1\r\nHost: a\r\nX-Junk: " + junk
            reply = await _raw_exchange(port, head)
            status_line, _, rest = reply.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
            body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
            assert body["status"] == 431

        async with httpx.AsyncClient() as client:
            # A large but legal header (a long bearer token, say) is fine.
            response = await client.get(f"http://127.0.0.1:{gateway.api_port}/health/live",
                                        headers={"X-Big": "y" * (MAX_HEAD_BYTES // 2)})
            assert response.status_code == 200
            response = await client.post(f"http://127.0.0.1:{gateway.http_port}/v1/t", content=b"{}")
            assert response.status_code == 401
