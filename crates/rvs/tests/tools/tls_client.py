#!/usr/bin/env python3
"""A TLS client (Python's ssl) whose ClientHello the test shapes.

    tls_client.py HOST:PORT [--sni NAME] [--alpn P,Q] [--pieces N]
                  [--pause SECONDS] [--lines N]

The hello is produced through a memory BIO and written in N pieces with
a pause after each but the last, then the handshake goes on as usual.
Without --sni the hello has no server_name extension. Once connected it
sends "GET / HTTP/1.0" and prints the body of the answer; with --lines N,
N lines instead, printing each answer line. A connection closed or reset
before an answer prints "closed: REASON" and exits 3.
"""

import argparse
import socket
import ssl
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--sni")
    ap.add_argument("--alpn")
    ap.add_argument("--pieces", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0.0)
    ap.add_argument("--lines", type=int, default=0)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if a.alpn:
        ctx.set_alpn_protocols(a.alpn.split(","))
    sock = socket.create_connection((host, int(port)), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=a.sni)
    try:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        size = max(1, -(-len(hello) // a.pieces))
        parts = [hello[i : i + size] for i in range(0, len(hello), size)]
        for i, part in enumerate(parts):
            sock.sendall(part)
            if i + 1 < len(parts):
                time.sleep(a.pause)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake")
                incoming.write(data)
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)

        def send(b):
            tls.write(b)
            sock.sendall(outgoing.read())

        def recv():
            while True:
                try:
                    return tls.read(65536)
                except ssl.SSLWantReadError:
                    data = sock.recv(65536)
                    if not data:
                        return b""
                    incoming.write(data)
                except ssl.SSLZeroReturnError:
                    return b""

        if a.lines:
            for _ in range(a.lines):
                send(b"ping\n")
                got = b""
                while not got.endswith(b"\n"):
                    chunk = recv()
                    if not chunk:
                        raise ConnectionError("closed before an answer line")
                    got += chunk
                sys.stdout.write(got.decode())
                sys.stdout.flush()
                line = sys.stdin.readline() if a.lines > 1 else ""
            return 0
        send(b"GET / HTTP/1.0\r\n\r\n")
        reply = b""
        while True:
            chunk = recv()
            if not chunk:
                break
            reply += chunk
        sys.stdout.write(reply.split(b"\r\n\r\n", 1)[-1].decode())
        return 0
    except (OSError, ssl.SSLError, ConnectionError) as e:
        print(f"closed: {e}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
