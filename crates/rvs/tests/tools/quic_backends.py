#!/usr/bin/env python3
"""Real HTTP/3 servers (PyPI's aioquic) for the QUIC SNI routing tests.

    quic_backends.py CERT KEY NAME [NAME...]

Each NAME gets a UDP port on 127.0.0.1; one line per name, "NAME PORT",
is printed once all listen. Every request is answered with the body
"NAME sni=SNI alpn=ALPN version=VERSION": the server name its TLS stack
read in the ClientHello that rvs passed on, the protocol agreed and the
QUIC version (1 or 2) of the connection. Runs until its standard input
closes.
"""

import asyncio
import sys

from aioquic import tls
from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

# aioquic's server does not keep the name it read: recorded here.
_pull = tls.pull_client_hello
_handle = tls.Context._server_handle_hello
_last = {}


def _pull_and_keep(buf):
    hello = _pull(buf)
    _last["sni"] = hello.server_name
    return hello


def _handle_and_keep(self, *args, **kwargs):
    _last.pop("sni", None)
    try:
        return _handle(self, *args, **kwargs)
    finally:
        self.sni_seen = _last.get("sni")


tls.pull_client_hello = _pull_and_keep
tls.Context._server_handle_hello = _handle_and_keep


def protocol_for(name):
    class Named(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._h3 = None

        def quic_event_received(self, event):
            if self._h3 is None:
                self._h3 = H3Connection(self._quic)
            for ev in self._h3.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    t = self._quic.tls
                    sni = getattr(t, "sni_seen", None) or "-"
                    version = {1: "1", 0x6B3343CF: "2"}.get(self._quic._version, "?")
                    body = f"{name} sni={sni} alpn={t.alpn_negotiated} version={version}\n"
                    self._h3.send_headers(
                        ev.stream_id,
                        [(b":status", b"200"), (b"content-length", str(len(body)).encode())],
                    )
                    self._h3.send_data(ev.stream_id, body.encode(), end_stream=True)
            self.transmit()

    return Named


async def main():
    cert, key, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    lines = []
    for name in names:
        config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        config.load_cert_chain(cert, key)
        server = await serve("127.0.0.1", 0, configuration=config, create_protocol=protocol_for(name))
        port = server._transport.get_extra_info("sockname")[1]
        lines.append(f"{name} {port}")
    print("\n".join(lines), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
