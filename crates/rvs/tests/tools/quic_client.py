#!/usr/bin/env python3
"""An HTTP/3 client (PyPI's aioquic) for the QUIC SNI routing tests.

    quic_client.py HOST:PORT [--sni NAME] [--v2] [--large-hello] [--hold]

GETs / and prints the response's body; with --hold, then waits for a line
on its standard input and GETs again on the same connection, printing
that body too; "failed: REASON" and exit 3 when
no answer comes within 10 s (a handshake unanswered for 5 s gives up). --v2 speaks QUIC version 2 from the first
packet; --large-hello pads the ClientHello (aioquic's quantum readiness
test) past one Initial packet, as post-quantum key shares do.
"""

import argparse
import asyncio
import ssl
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.bodies = {}
        self.waiting = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, DataReceived):
                self.bodies[ev.stream_id] = self.bodies.get(ev.stream_id, b"") + ev.data
                done = self.waiting.get(ev.stream_id)
                if ev.stream_ended and done and not done.done():
                    done.set_result(self.bodies[ev.stream_id])

    async def get(self, authority):
        sid = self._quic.get_next_available_stream_id()
        self.waiting[sid] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(
            sid,
            [(b":method", b"GET"), (b":scheme", b"https"),
             (b":authority", authority.encode()), (b":path", b"/")],
            end_stream=True,
        )
        self.transmit()
        return await self.waiting[sid]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--sni")
    ap.add_argument("--v2", action="store_true")
    ap.add_argument("--large-hello", action="store_true")
    ap.add_argument("--hold", action="store_true")
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                               verify_mode=ssl.CERT_NONE, server_name=a.sni,
                               quantum_readiness_test=a.large_hello,
                               idle_timeout=30.0 if a.hold else 5.0)
    if a.v2:
        config.supported_versions = [QuicProtocolVersion.VERSION_2]

    async def exchange():
        async with connect(host, int(port), configuration=config, create_protocol=Client) as c:
            body = await asyncio.wait_for(c.get(a.sni or host), 10)
            sys.stdout.write(body.decode())
            sys.stdout.flush()
            if a.hold:
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                body = await asyncio.wait_for(c.get(a.sni or host), 10)
                sys.stdout.write(body.decode())

    try:
        await asyncio.wait_for(exchange(), None if a.hold else 10)
        return 0
    except (asyncio.TimeoutError, ConnectionError, OSError) as e:
        print(f"failed: {type(e).__name__} {e}")
        return 3


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
