"""A minimal keep-alive HTTP/1.1 client on asyncio streams (little client-side CPU, so a load
generator on the same 2 cores measures the server, not itself). Shared by bench_serving.py and
tests/e2e/test_load_rollout.py."""
from __future__ import annotations


async def http_request(reader, writer, raw: bytes) -> tuple[int, bytes]:
    """Send one raw HTTP/1.1 request on an open connection; return (status, body)."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body
