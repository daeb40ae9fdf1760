#!/usr/bin/env python3
"""Real TLS servers for the SNI routing tests, one port per name.

    tls_backends.py CERT KEY NAME [NAME...]

Each NAME gets a listener on 127.0.0.1 (a free port); one line per name,
"NAME PORT", is printed once all listen. A connection whose first byte
is a TLS handshake record (0x16) is served over TLS (Python's ssl, that
is OpenSSL), offering ALPN h2, http/1.1 and acme-tls/1; any other
connection is served in the clear. Either way the server answers:

- an HTTP request (the first bytes are "GET "): one response whose body
  is "NAME sni=SNI alpn=ALPN tls=yes|no", then it closes;
- anything else: that same line for each line received, until the
  client closes (a connection held across a reload).

SNI is the name the server's TLS library saw in the hello that rvs
passed on, ALPN the protocol it agreed: proof that the bytes arrived
unchanged.
"""

import socket
import ssl
import sys
import threading


def serve(name, listener, ctx):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=one, args=(name, conn, ctx), daemon=True).start()


def one(name, conn, ctx):
    seen = {"sni": "-"}
    try:
        conn.settimeout(30)
        first = conn.recv(1, socket.MSG_PEEK)
        tls = first == b"\x16"
        if tls:
            local = ctx_for(ctx, seen)
            conn = local.wrap_socket(conn, server_side=True)
        alpn = (conn.selected_alpn_protocol() if tls else None) or "-"
        line = f"{name} sni={seen['sni']} alpn={alpn} tls={'yes' if tls else 'no'}"
        data = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
            if data.startswith(b"GET "):
                if b"\r\n\r\n" in data:
                    body = (line + "\n").encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                        + body
                    )
                    return
                continue
            while b"\n" in data:
                _, data = data.split(b"\n", 1)
                conn.sendall((line + "\n").encode())
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def ctx_for(base, seen):
    """A context per connection, so that its SNI callback records this
    connection's name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(base["cert"], base["key"])
    ctx.set_alpn_protocols(["h2", "http/1.1", "acme-tls/1"])

    def on_sni(sslobj, server_name, _ctx):
        seen["sni"] = server_name or "-"

    ctx.sni_callback = on_sni
    return ctx


def main():
    cert, key, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    base = {"cert": cert, "key": key}
    lines = []
    for name in names:
        l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("127.0.0.1", 0))
        l.listen(128)
        lines.append(f"{name} {l.getsockname()[1]}")
        threading.Thread(target=serve, args=(name, l, base), daemon=True).start()
    print("\n".join(lines), flush=True)
    # Until the test closes our standard input (or dies).
    sys.stdin.read()


if __name__ == "__main__":
    main()
