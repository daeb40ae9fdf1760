#!/usr/bin/env python3
"""rvs against HAProxy, nginx stream and a direct connection, side by side.

    python3 benches/load/bench.py            # the full run (about 15 minutes)
    python3 benches/load/bench.py --quick    # one short repetition, no criterion

Everything runs on loopback (127.0.0.0/8), bounded in time. The script
installs what it needs from Debian's packages (haproxy, nginx with its stream
module, iperf3, wrk, dnsperf, dnsmasq), builds rvs in release, starts the
backends (nginx for HTTP, iperf3, two dnsmasq, a holder of idle connections)
and the peers, and measures each row for every peer in interleaved order
(A B C D E, B C D E A, ...), at least three repetitions. It reports medians
with their spread (min-max) and ratios to the best HAProxy variant, to nginx
(UDP) and to the direct connection. It never asserts a target: it measures.

With --write, it replaces the load-benchmark section of docs/benchmarks.md
and writes docs/benchmarks-load.svg (ratios to the best peer) and
docs/benchmarks-sched.svg (the scheduler benches).
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEERS = ["rvs", "haproxy", "haproxy-splice", "nginx", "direct"]
LO = "127.0.0.1"

# Ports below the ephemeral range (32768-60999 by default), so that no
# outgoing connection holds one when a peer starts.
# Backends.
HTTP_B, IPERF_B, DNS_B1, DNS_B2, HOLD_B = 21080, 21201, 21053, 21054, 21090
# nginx over TLS (its own certificate): the real server of the SNI rows.
TLS_B = 21443
# Each peer's ports: base + 80 (http), + 201 (iperf), + 53 (dns), + 90
# (hold), + 443 (TLS routed by SNI).
BASE = {"rvs": 22000, "haproxy": 23000, "haproxy-splice": 24000, "nginx": 25000}
# The earlier rvs of `--before` (its ports; a peer only when asked for).
BEFORE_BASE = 26000
# rvs with a master sync daemon (`--sync`: its ports; a peer only then).
SYNC_BASE = 27000
# rvs services for the scaling row: 1 and 1000 real servers.
SCALE = {"1 server, wlc": 22100, "1000 servers, wlc": 22101, "1000 servers, mh": 22102}
N_IDLE = 10_000
# The SNI rows: the client asks for "localhost" (wrk and curl send the
# URL's host as SNI, and it resolves without touching /etc/hosts); each
# peer routes it by name among these others, and has a default.
SNI_OTHERS = [f"s{i}.bench.test" for i in range(1, 9)] + ["*.wild.bench.test"]
# The long TLS stream: a file of zeros nginx serves over TLS.
BIG_BYTES = 2 << 30


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def need_tools():
    tools = {"haproxy": "haproxy", "nginx": "nginx-light", "iperf3": "iperf3",
             "wrk": "wrk", "dnsperf": "dnsperf", "dnsmasq": "dnsmasq"}
    missing = [pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None]
    if not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        missing.append("libnginx-mod-stream")
    if missing:
        log("installing", " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


CONNTRACK = "/proc/sys/net/netfilter/"


def conntrack_for_bench():
    """Where netfilter tracks loopback (podman's or any NAT rule loads it),
    each proxied connection leaves two entries for
    nf_conntrack_tcp_timeout_time_wait (120 s): at 20k new connections a
    second the default table (262144) fills in seconds, and every peer's
    rate collapses as SYNs are dropped. As root, the run keeps entries 5 s
    and allows a million, and puts the settings back at the end; returns
    what to put back."""
    saved = {}
    for key, want in (("nf_conntrack_tcp_timeout_time_wait", 5), ("nf_conntrack_max", 1 << 20)):
        path = CONNTRACK + key
        try:
            with open(path) as f:
                now = int(f.read())
            if (key.endswith("_max") and now < want) or (not key.endswith("_max") and now > want):
                with open(path, "w") as f:
                    f.write(str(want))
                saved[path] = now
        except (OSError, ValueError):
            pass
    if saved:
        log("conntrack for the run:", ", ".join(f"{os.path.basename(k)} {v} -> "
                                               f"{open(k).read().strip()}" for k, v in saved.items()))
    return saved


def conntrack_restore(saved):
    for path, value in saved.items():
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError:
            pass


def conntrack_drain(limit=130):
    """Waits (up to `limit` s) until the tracking table is below half full:
    a measure never starts on a table that will drop its SYNs."""
    try:
        start = time.time()
        while time.time() - start < limit:
            with open(CONNTRACK + "nf_conntrack_count") as f:
                count = int(f.read())
            with open(CONNTRACK + "nf_conntrack_max") as f:
                cap = int(f.read())
            if count < cap // 2:
                return
            time.sleep(1)
    except (OSError, ValueError):
        return


def max_conns():
    """The peers' connection limit under the descriptor limit: HAProxy
    reserves about 2.5 descriptors per connection (two sockets, a share of
    splice pipes)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (hard - 2000) * 2 // 5


def idle_count():
    """~10,000 idle connections, or as many as the limits allow."""
    return max(1000, min(N_IDLE, max_conns() - 200))


class Procs:
    """Background processes, stopped at the end."""

    def __init__(self):
        self.procs = []
        self.cmds = {}

    def start(self, name, cmd, wd, **kw):
        out = open(os.path.join(wd, name + ".log"), "a")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=raise_nofile, **kw)
        self.procs.append((name, p))
        self.cmds[name] = (cmd, wd, kw)
        return p

    def restart(self, name, port):
        """Stops `name` and starts it again, once `port` answers: a fresh
        process, for a measure that earlier rows would skew (memory a
        process has grown to and kept)."""
        for n, p in self.procs:
            if n == name and p.poll() is None:
                p.terminate()
                p.wait(timeout=10)
        cmd, wd, kw = self.cmds[name]
        p = self.start(name, cmd, wd, **kw)
        wait_port(port)
        time.sleep(0.5)
        return p

    def stop(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for _, p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_port(port, host=LO, limit=15):
    start = time.time()
    while time.time() - start < limit:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {host}:{port}")


def scale_addrs():
    return [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(1000)]


def rvs_yaml(b, scale):
    """rvs's configuration, its ports from `b`; with `scale`, the scaling
    row's services."""
    rs1000 = "\n".join(f"      - address: \"{a}:{HTTP_B}\"" for a in scale_addrs())
    tls_b = b + 443
    tls_services = "\n".join(
        f"""  - name: tls-{i}
    listen: {LO}:{tls_b}
    match: {{sni: ["{name}"]}}
    scheduler: rr
    real_servers:
      - address: {LO}:{TLS_B}""" for i, name in enumerate(["localhost"] + SNI_OTHERS)
    ) + f"""
  - name: tls-default
    listen: {LO}:{tls_b}
    scheduler: rr
    real_servers:
      - address: {LO}:{TLS_B}"""
    out = f"""admin:
  listen: {LO}:{b + 999}
services:
  - name: http
    listen: {LO}:{b + 80}
    scheduler: rr
    real_servers:
      - address: {LO}:{HTTP_B}
  - name: iperf
    listen: {LO}:{b + 201}
    real_servers:
      - address: {LO}:{IPERF_B}
  - name: dns
    listen: {LO}:{b + 53}
    proto: udp
    scheduler: rr
    real_servers:
      - address: {LO}:{DNS_B1}
      - address: {LO}:{DNS_B2}
  - name: hold
    listen: {LO}:{b + 90}
    max_connections: 100000
    real_servers:
      - address: {LO}:{HOLD_B}
{tls_services}
"""
    if scale:
        out += f"""  - name: scale-1
    listen: {LO}:{SCALE["1 server, wlc"]}
    scheduler: wlc
    real_servers:
      - address: {LO}:{HTTP_B}
  - name: scale-1000-wlc
    listen: {LO}:{SCALE["1000 servers, wlc"]}
    scheduler: wlc
    real_servers:
{rs1000}
  - name: scale-1000-mh
    listen: {LO}:{SCALE["1000 servers, mh"]}
    scheduler: mh
    real_servers:
{rs1000}
"""
    return out


def write_configs(wd):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    maxconn = max_conns()
    # nginx as the HTTP backend (also on 1000 loopback addresses, for the
    # scaling row).
    listens = "\n".join(f"        listen {a}:{HTTP_B};" for a in scale_addrs())
    with open(os.path.join(wd, "backend-nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1;
worker_rlimit_nofile {hard};
pid {wd}/backend-nginx.pid;
error_log {wd}/backend-nginx.err;
events {{ worker_connections {hard - 100}; }}
http {{
    access_log off;
    server {{
        listen {LO}:{HTTP_B} backlog=4096;
{listens}
        keepalive_requests 1000000;
        location / {{ return 200 "hello\\n"; }}
    }}
    server {{
        listen {LO}:{TLS_B} ssl backlog=4096;
        ssl_certificate {wd}/tls.crt;
        ssl_certificate_key {wd}/tls.key;
        keepalive_requests 1000000;
        location = /big {{ alias {wd}/big; }}
        location / {{ return 200 "hello\\n"; }}
    }}
}}
""")
    # rvs (and, with --before, the earlier rvs beside it, without the
    # scaling services: their ports are fixed).
    with open(os.path.join(wd, "rvs.yaml"), "w") as f:
        f.write(rvs_yaml(BASE["rvs"], scale=True))
    with open(os.path.join(wd, "rvs-before.yaml"), "w") as f:
        f.write(rvs_yaml(BEFORE_BASE, scale=False))
    # The same rvs with a master sync daemon multicasting out of lo: what
    # the data plane pays to tell it every connection.
    with open(os.path.join(wd, "rvs-sync.yaml"), "w") as f:
        f.write("global:\n  sync_daemon:\n    - {state: master, mcast_interface: lo, syncid: 1}\n"
                + rvs_yaml(SYNC_BASE, scale=False))
    # HAProxy, plain and with forced splice.
    haproxy_others = "".join(
        f"    use_backend tls_other if {{ req.ssl_sni -m end {n[1:]} }}\n" if n.startswith("*")
        else f"    use_backend tls_other if {{ req.ssl_sni -i {n} }}\n" for n in SNI_OTHERS)
    for peer in ("haproxy", "haproxy-splice"):
        b = BASE[peer]
        splice = ("    option splice-request\n    option splice-response\n"
                  if peer == "haproxy-splice" else "")
        with open(os.path.join(wd, peer + ".cfg"), "w") as f:
            f.write(f"""global
    nbthread 2
    maxconn {maxconn}
    tune.pipesize 1048576
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
{splice}listen http
    bind {LO}:{b + 80}
    server s1 {LO}:{HTTP_B}
listen iperf
    bind {LO}:{b + 201}
    server s1 {LO}:{IPERF_B}
listen hold
    bind {LO}:{b + 90}
    maxconn {maxconn}
    server s1 {LO}:{HOLD_B}
frontend tls
    bind {LO}:{b + 443}
    tcp-request inspect-delay 5s
    tcp-request content accept if {{ req_ssl_hello_type 1 }}
    use_backend tls_named if {{ req.ssl_sni -i localhost }}
{haproxy_others}    default_backend tls_default
backend tls_named
    server s1 {LO}:{TLS_B}
backend tls_other
    server s1 {LO}:{TLS_B}
backend tls_default
    server s1 {LO}:{TLS_B}
""")
    # nginx stream.
    nginx_others = "".join(f"        {n} tls_other;\n" for n in SNI_OTHERS)
    b = BASE["nginx"]
    with open(os.path.join(wd, "nginx-stream.conf"), "w") as f:
        f.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 2;
worker_rlimit_nofile {hard};
pid {wd}/nginx-stream.pid;
error_log {wd}/nginx-stream.err;
events {{ worker_connections {hard - 100}; }}
stream {{
    upstream dns {{ server {LO}:{DNS_B1}; server {LO}:{DNS_B2}; }}
    server {{ listen {LO}:{b + 80} reuseport; proxy_pass {LO}:{HTTP_B}; }}
    server {{ listen {LO}:{b + 201} reuseport; proxy_pass {LO}:{IPERF_B}; }}
    server {{ listen {LO}:{b + 90} reuseport; proxy_pass {LO}:{HOLD_B}; proxy_timeout 10m; }}
    server {{ listen {LO}:{b + 53} udp reuseport; proxy_pass dns; proxy_responses 1; proxy_timeout 5s; }}
    upstream tls_named {{ server {LO}:{TLS_B}; }}
    upstream tls_other {{ server {LO}:{TLS_B}; }}
    upstream tls_default {{ server {LO}:{TLS_B}; }}
    map $ssl_preread_server_name $tls_upstream {{
        hostnames;
        localhost tls_named;
{nginx_others}        default tls_default;
    }}
    server {{ listen {LO}:{b + 443} reuseport; ssl_preread on; proxy_pass $tls_upstream; }}
}}
""")
    with open(os.path.join(wd, "queries.txt"), "w") as f:
        f.write("bench.test A\n" * 1000)
    # The TLS server's certificate, and the long stream's file (sparse).
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", os.path.join(wd, "tls.key"),
         "-out", os.path.join(wd, "tls.crt")])
    with open(os.path.join(wd, "big"), "wb") as f:
        f.truncate(BIG_BYTES)
    # nginx's workers run as another user when started as root.
    os.chmod(wd, 0o755)
    os.chmod(os.path.join(wd, "big"), 0o644)


HOLDER = r"""
import asyncio, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def hold(r, w):
    try:
        while await r.read(65536):
            pass
    finally:
        w.close()
async def main():
    s = await asyncio.start_server(hold, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with s:
        await s.serve_forever()
asyncio.run(main())
"""

CLIENT = r"""
import resource, socket, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.append(s)
print("held", flush=True)
sys.stdin.readline()
"""


def pids_of(peer, procs):
    """The processes that do the peer's work (nginx: its workers)."""
    p = procs[peer]
    if peer != "nginx":
        return [p.pid]
    out = run(["pgrep", "-P", str(p.pid)]).stdout.split()
    return [int(x) for x in out] or [p.pid]


def rss(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_split(pids):
    """The processes' user and system (kernel) CPU seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    user = kernel = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11]) / tick
        kernel += int(fields[12]) / tick
    return user, kernel


def cpu_seconds(pids):
    return sum(cpu_split(pids))


def machine_idle():
    """The machine's idle and total CPU time so far, in ticks."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return ticks[3] + ticks[4], sum(ticks[:8])


def target(peer, row):
    off = {"http": 80, "iperf": 201, "dns": 53, "hold": 90, "tls": 443}[row]
    if peer == "direct":
        return {"http": HTTP_B, "iperf": IPERF_B, "dns": DNS_B1, "hold": HOLD_B,
                "tls": TLS_B}[row]
    if peer == "rvs-before":
        return BEFORE_BASE + off
    if peer == "rvs-sync":
        return SYNC_BASE + off
    return BASE[peer] + off


def tls_stream(peer):
    """One TLS download of BIG_BYTES through the peer (routed by SNI),
    by curl: Gbit/s."""
    r = run(["curl", "-sk", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
             f"https://localhost:{target(peer, 'tls')}/big"])
    speed, size = (float(x) for x in r.stdout.split())
    if size < BIG_BYTES:
        return None
    return {"gbps": speed * 8 / 1e9}


def stream(peer, procs, secs):
    pids = pids_of(peer, procs) if peer != "direct" else []
    cpu0 = cpu_seconds(pids) if pids else 0
    r = run(["iperf3", "-c", LO, "-p", str(target(peer, "iperf")), "-t", str(secs), "-J"])
    cpu1 = cpu_seconds(pids) if pids else 0
    j = json.loads(r.stdout)
    end = j["end"]["sum_received"]
    gbps = end["bits_per_second"] / 1e9
    gb = end["bytes"] / 1e9
    return {"gbps": gbps, "cpu_per_gb": (cpu1 - cpu0) / gb if pids else None}


def wrk(port, secs, close, pids=(), tls=False):
    """wrk's rate and latency; with the proxy's `pids`, its CPU time per
    request (per connection with `close`), in microseconds. With `tls`,
    over https to "localhost" (its SNI)."""
    cmd = ["wrk", "-t2", "-c50", f"-d{secs}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    cpu0, idle0 = cpu_split(pids), machine_idle()
    url = f"https://localhost:{port}/" if tls else f"http://{LO}:{port}/"
    out = run(cmd + [url]).stdout
    cpu1, idle1 = cpu_split(pids), machine_idle()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = re.search(r"(\d+) requests in", out)
    n = int(total.group(1)) if total else 0
    cpu_us = (sum(cpu1) - sum(cpu0)) / n * 1e6 if pids and n else None
    sys_us = (cpu1[1] - cpu0[1]) / n * 1e6 if pids and n else None
    # How much of the machine stayed idle: a rate limited by CPU leaves
    # none, one limited by waiting leaves some.
    idle_pct = 100 * (idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1])
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {}
    for q in ("50", "99"):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out)
        if m:
            v = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            lat[q] = v
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"), "cpu_us": cpu_us,
            "sys_us": sys_us, "idle_pct": idle_pct,
            "errors": errors.group(1) if errors else None,
            "bad": int(non2xx.group(1)) if non2xx else 0}


def dns(peer, wd, secs):
    out = run(["dnsperf", "-s", LO, "-p", str(target(peer, "dns")), "-d",
               os.path.join(wd, "queries.txt"), "-l", str(secs), "-c", "8", "-T", "2",
               "-q", "200", "-t", "1"]).stdout
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    lost = re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out)
    return {"qps": qps, "lost_pct": float(lost.group(1)) if lost else 0.0}


def idle_memory(peer, procs):
    pids = pids_of(peer, procs)
    before = rss(pids)
    n = idle_count()
    c = subprocess.Popen([sys.executable, "-c", CLIENT, str(target(peer, "hold")), str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=raise_nofile)
    line = c.stdout.readline()
    if "held" not in line:
        c.kill()
        return None
    time.sleep(2)
    after = rss(pids)
    c.stdin.write("\n")
    c.stdin.flush()
    c.wait(timeout=30)
    time.sleep(2)
    return {"bytes_per_conn": (after - before) / n}


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def versions():
    def first(cmd):
        try:
            r = run(cmd)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "machine": f"{os.cpu_count()} vCPU ({cpu}), Linux {platform.release()}",
        "haproxy": first(["haproxy", "-v"]),
        "nginx": first(["nginx", "-v"]),
        "iperf3": first(["iperf3", "--version"]),
        "wrk": first(["wrk", "-v"]),
        "dnsperf": first(["dnsperf", "-h"]).strip() and run(["dpkg-query", "-W", "dnsperf"]).stdout.strip(),
        "rustc": first(["rustc", "--version"]),
    }


def criterion(quick):
    if quick:
        return []
    log("criterion: cargo bench -p rvs-sched --bench sched_pick")
    r = run(["cargo", "bench", "-p", "rvs-sched", "--bench", "sched_pick", "--",
             "--warm-up-time", "0.3", "--measurement-time", "1", "--noplot"], cwd=ROOT)
    rows = []
    name = None
    for line in (r.stdout + r.stderr).splitlines():
        m = re.match(r"^(schedule\+close/\S+)", line)
        if m:
            name = m.group(1)
        m = re.search(r"time:\s+\[([\d.]+) (\w+) ([\d.]+) (\w+) ([\d.]+) (\w+)\]", line)
        if m and name:
            unit = {"ns": 1, "µs": 1000, "us": 1000, "ms": 1e6}
            lo, mid, hi = (float(m.group(i)) * unit.get(m.group(i + 1), 1) for i in (1, 3, 5))
            _, sched, n = name.split("/")
            rows.append({"scheduler": sched, "servers": int(n), "ns": mid, "lo": lo, "hi": hi})
            name = None
    return rows


def fmt(v, digits=1):
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v / 1000:.{digits}f}k"
    return f"{v:.{digits}f}"


def svg_bars(path, title, groups, xlabel, scale="shared"):
    """A bar chart: groups of (label, [(series, value)]). `scale`: one
    linear axis for all ("shared"), each group against its own largest
    value ("group", for groups in different units), or logarithmic
    ("log", for values over several orders of magnitude)."""
    import math
    series = []
    for _, bars in groups:
        for s, _ in bars:
            if s not in series:
                series.append(s)
    colours = ["#2b6cb0", "#dd6b20", "#9b2c2c", "#2f855a", "#718096", "#6b46c1"]
    vmax = max((v for _, bars in groups for _, v in bars if v), default=1) * 1.1
    w, row_h, left = 760, 22 * len(series) + 14, 220
    h = 60 + row_h * len(groups) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    y = 44
    for label, bars in groups:
        out.append(f'<text x="8" y="{y + 14}" font-weight="bold">{label}</text>')
        for i, (s, v) in enumerate(bars):
            c = colours[series.index(s) % len(colours)]
            if scale == "group":
                top = max((x for _, x in bars if x), default=1) * 1.1
                frac = (v or 0) / top
            elif scale == "log":
                frac = math.log10(1 + (v or 0)) / math.log10(1 + vmax)
            else:
                frac = (v or 0) / vmax
            bw = (w - left - 70) * frac
            out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{s}</text>')
            out.append(f'<rect x="{left}" y="{y + 3}" width="{bw:.1f}" height="15" fill="{c}"/>')
            out.append(f'<text x="{left + bw + 4:.1f}" y="{y + 14}">{fmt(v, 2) if v else "–"}</text>')
            y += 22
        y += 14
    out.append(f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle" fill="#555">{xlabel}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def measure(args, only, reps, secs):
    """Runs the rows; returns the samples by (row, peer) and the criterion table."""
    need_tools()
    raise_nofile()
    if not args.no_build:
        log("building rvs (release)")
        subprocess.run(["cargo", "build", "--release", "-p", "rvs"], cwd=ROOT, check=True)
    wd = tempfile.mkdtemp(prefix="rvs-bench-")
    write_configs(wd)
    ps = Procs()
    procs = {}
    saved = conntrack_for_bench()
    try:
        ps.start("backend-nginx", ["nginx", "-g", "daemon off;", "-p", wd, "-c",
                                   os.path.join(wd, "backend-nginx.conf")], wd)
        ps.start("iperf3", ["iperf3", "-s", "-p", str(IPERF_B)], wd)
        for port in (DNS_B1, DNS_B2):
            ps.start(f"dnsmasq-{port}", ["dnsmasq", "-k", "--no-resolv", "--no-hosts",
                                         "-C", "/dev/null", f"--port={port}",
                                         f"--listen-address={LO}", "--bind-interfaces",
                                         "--address=/bench.test/127.0.0.1",
                                         "--cache-size=0", "--pid-file=",
                                         "--user=root"], wd)
        ps.start("holder", [sys.executable, "-c", HOLDER, str(HOLD_B)], wd)
        procs["rvs"] = ps.start("rvs", [os.path.join(ROOT, "target/release/rvs"), "run", "-c",
                                        os.path.join(wd, "rvs.yaml"), "--log-level", "warn"]
                              + args.rvs_args.split(), wd)
        if args.before:
            procs["rvs-before"] = ps.start("rvs-before", [os.path.abspath(args.before), "run", "-c",
                                                          os.path.join(wd, "rvs-before.yaml"),
                                                          "--log-level", "warn"]
                                           + args.rvs_args.split(), wd)
        if args.sync:
            procs["rvs-sync"] = ps.start("rvs-sync", [os.path.join(ROOT, "target/release/rvs"), "run", "-c",
                                                      os.path.join(wd, "rvs-sync.yaml"),
                                                      "--log-level", "warn"]
                                         + args.rvs_args.split(), wd)
        for peer in ("haproxy", "haproxy-splice"):
            procs[peer] = ps.start(peer, ["haproxy", "-db", "-f", os.path.join(wd, peer + ".cfg")], wd)
        procs["nginx"] = ps.start(NAMES["nginx"], ["nginx", "-g", "daemon off;", "-p", wd, "-c",
                                                    os.path.join(wd, "nginx-stream.conf")], wd)
        for port in (HTTP_B, IPERF_B, HOLD_B, TLS_B, BASE["rvs"] + 80, BASE["haproxy"] + 80,
                     BASE["haproxy-splice"] + 80, BASE["nginx"] + 80, SCALE["1000 servers, mh"],
                     *(BASE[p] + 443 for p in BASE),
                     *((BEFORE_BASE + 80, BEFORE_BASE + 443) if args.before else ()),
                     *((SYNC_BASE + 80, SYNC_BASE + 443) if args.sync else ())):
            wait_port(port)
        time.sleep(1)

        res = {}  # (row, peer) -> [samples]
        def add(row, peer, v):
            res.setdefault((row, peer), []).append(v)
        for rep in range(reps):
            order = PEERS[rep % len(PEERS):] + PEERS[:rep % len(PEERS)]
            log(f"repetition {rep + 1}/{reps}: {' '.join(order)}")
            for peer in order if "stream" in only else ():
                add("stream", peer, stream(peer, procs, secs))
            for peer in order if "newconn" in only else ():
                conntrack_drain()
                add("newconn", peer, wrk(target(peer, "http"), secs, close=True,
                                         pids=pids_of(peer, procs) if peer != "direct" else ()))
            for peer in order if "keepalive" in only else ():
                add("keepalive", peer, wrk(target(peer, "http"), secs, close=False,
                                           pids=pids_of(peer, procs) if peer != "direct" else ()))
            for peer in order if "tls" in only else ():
                conntrack_drain()
                add("tlsnew", peer, wrk(target(peer, "tls"), secs, close=True, tls=True,
                                        pids=pids_of(peer, procs) if peer != "direct" else ()))
            for peer in order if "tls" in only else ():
                add("tlsstream", peer, tls_stream(peer))
            for peer in order if "udp" in only else ():
                if not peer.startswith("haproxy"):
                    add("udp", peer, dns(peer, wd, secs))
            if "memory" in only and (rep == 0 or not args.quick):
                for peer in order:
                    if peer != "direct":
                        # A fresh process each time: an allocator keeps
                        # what the earlier rows made it grow to.
                        procs[peer] = ps.restart(NAMES.get(peer, peer), target(peer, "hold"))
                        add("memory", peer, idle_memory(peer, procs))
            if "scale" in only:
                for label in list(SCALE)[rep % 3:] + list(SCALE)[:rep % 3]:
                    conntrack_drain()
                    add("scale", label, wrk(SCALE[label], secs, close=True))
        crit = criterion(args.quick) if "sched" in only else []
    finally:
        ps.stop()
        conntrack_restore(saved)
    return res, crit


ROWS = ("stream", "newconn", "keepalive", "tls", "udp", "memory", "scale", "sched")
# Process names of the peers, where they differ.
NAMES = {"nginx": "nginx-stream"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short repetition, no criterion")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md and the plots")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help="comma-separated rows to run (default: all): " + ",".join(ROWS))
    ap.add_argument("--replot", metavar="JSON",
                    help="no measuring: the report (and with --write, the section and plots) "
                         "from a run's saved samples, docs/benchmarks-load.json")
    ap.add_argument("--before", metavar="RVS",
                    help="an earlier rvs binary, measured beside this one as the peer rvs-before "
                         "(a before/after comparison of every row in one run)")
    ap.add_argument("--sync", action="store_true",
                    help="also measure this rvs with a master sync daemon (multicast out of lo) "
                         "as the peer rvs-sync: the sync sender's cost, same run")
    ap.add_argument("--rvs-args", default="",
                    help="extra arguments for `rvs run`, to compare settings (e.g. '--workers 0')")
    args = ap.parse_args()
    only = set(args.rows.split(","))
    if only - set(ROWS):
        ap.error(f"unknown rows: {', '.join(sorted(only - set(ROWS)))}")
    if args.write and only != set(ROWS) and not args.replot:
        ap.error("--write needs every row")
    reps, secs = (1, 2) if args.quick else (max(3, args.reps), args.secs)
    if args.before and not (os.path.isfile(args.before) and os.access(args.before, os.X_OK)):
        ap.error(f"--before {args.before}: not an executable file")
    if args.before:
        PEERS.insert(1, "rvs-before")
    if args.sync:
        PEERS.insert(1, "rvs-sync")

    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        res = {tuple(k.split("|")): v for k, v in saved["samples"].items()}
        if any(k[1] == "rvs-before" for k in res) and "rvs-before" not in PEERS:
            PEERS.insert(1, "rvs-before")
        if any(k[1] == "rvs-sync" for k in res) and "rvs-sync" not in PEERS:
            PEERS.insert(1, "rvs-sync")
        crit, reps, secs, v, day = (saved["criterion"], saved["reps"], saved["secs"],
                                    saved["versions"], saved["date"])
    else:
        res, crit = measure(args, only, reps, secs)
        v, day = versions(), time.strftime("%Y-%m-%d")

    def col(row, peer, key):
        xs = [s[key] for s in res.get((row, peer), []) if s and s.get(key) is not None]
        return median(xs), spread(xs)

    rows = [
        ("TCP stream, Gbit/s (iperf3)", "stream", "gbps", "max"),
        ("new connections/s (wrk, Connection: close)", "newconn", "rps", "max"),
        ("proxy CPU µs per new connection", "newconn", "cpu_us", "min"),
        ("of which in the kernel", "newconn", "sys_us", "min"),
        ("machine idle during new connections, %", "newconn", "idle_pct", "min"),
        ("keep-alive requests/s (wrk)", "keepalive", "rps", "max"),
        ("keep-alive p50 latency, ms", "keepalive", "p50_ms", "min"),
        ("keep-alive p99 latency, ms", "keepalive", "p99_ms", "min"),
        ("proxy CPU µs per keep-alive request", "keepalive", "cpu_us", "min"),
        ("of which in the kernel", "keepalive", "sys_us", "min"),
        ("machine idle during keep-alive, %", "keepalive", "idle_pct", "min"),
        ("new TLS connections/s routed by SNI (wrk, https, Connection: close)", "tlsnew", "rps", "max"),
        ("proxy CPU µs per new TLS connection", "tlsnew", "cpu_us", "min"),
        ("one TLS stream routed by SNI, Gbit/s (curl)", "tlsstream", "gbps", "max"),
        ("UDP DNS queries/s (dnsperf)", "udp", "qps", "max"),
        ("UDP queries lost, %", "udp", "lost_pct", "min"),
        ("memory per idle connection, KiB", "memory", "bytes_per_conn", "min"),
        ("CPU seconds per GB forwarded", "stream", "cpu_per_gb", "min"),
    ]
    table = []
    for title, row, key, better in rows:
        vals = {p: col(row, p, key) for p in PEERS}
        scale = 1 / 1024 if key == "bytes_per_conn" else 1
        h = [vals[p][0] for p in ("haproxy", "haproxy-splice") if vals[p][0] is not None]
        best_h = (max(h) if better == "max" else min(h)) if h else None
        ref = vals["nginx"][0] if row == "udp" else best_h
        rvs = vals["rvs"][0]
        ratio = rvs / ref if rvs and ref else None
        direct = vals["direct"][0]
        rdirect = rvs / direct if rvs and direct and row not in ("memory",) else None
        earlier = vals["rvs-before"][0] if "rvs-before" in vals else None
        rbefore = rvs / earlier if rvs and earlier else None
        table.append({"title": title, "row": row, "key": key, "better": better,
                      "vals": {p: (None if v[0] is None else v[0] * scale,
                                   tuple(None if x is None else x * scale for x in v[1]))
                               for p, v in vals.items()},
                      "ratio": ratio, "ratio_to": "nginx" if row == "udp" else "best HAProxy",
                      "direct": rdirect, "before": rbefore})
    scale_rows = []
    for label in SCALE:
        m, sp = col("scale", label, "rps")
        scale_rows.append((label, m, sp))

    with_before = "rvs-before" in PEERS
    lines = ["| | " + " | ".join(PEERS) + " | rvs / peer | rvs / direct |"
             + (" rvs / before |" if with_before else ""),
             "|---|" + "---:|" * len(PEERS) + "---:|---:|" + ("---:|" if with_before else "")]
    for t in table:
        cells = []
        for p in PEERS:
            m, (lo, hi) = t["vals"][p]
            cells.append("–" if m is None else f"{fmt(m)} ({fmt(lo)}–{fmt(hi)})")
        r = "–" if t["ratio"] is None else f"{t['ratio']:.2f} ({t['ratio_to']})"
        d = "–" if t["direct"] is None else f"{t['direct']:.2f}"
        b = ("–" if t["before"] is None else f"{t['before']:.2f}") + " |" if with_before else ""
        lines.append(f"| {t['title']} | " + " | ".join(cells) + f" | {r} | {d} |"
                     + (f" {b}" if with_before else ""))
    lines.append("")
    lines.append("| rvs, new connections/s | median | spread |")
    lines.append("|---|---:|---:|")
    for label, m, (lo, hi) in scale_rows:
        lines.append(f"| {label} | {fmt(m)} | {fmt(lo)}–{fmt(hi)} |")
    if crit:
        lines.append("")
        sizes = sorted({c["servers"] for c in crit})
        lines.append("| scheduler (ns per schedule + close) | " + " | ".join(str(s) for s in sizes) + " |")
        lines.append("|---|" + "---:|" * len(sizes))
        for sched in dict.fromkeys(c["scheduler"] for c in crit):
            cells = []
            for s in sizes:
                c = next((c for c in crit if c["scheduler"] == sched and c["servers"] == s), None)
                cells.append("–" if c is None else f"{c['ns']:.0f}")
            lines.append(f"| {sched} | " + " | ".join(cells) + " |")
    report = "\n".join(lines)
    print(report)

    if args.write:
        if not args.replot:
            with open(os.path.join(ROOT, "docs", "benchmarks-load.json"), "w") as f:
                json.dump({"date": day, "reps": reps, "secs": secs, "versions": v,
                           "samples": {"|".join(k): x for k, x in res.items()},
                           "criterion": crit}, f, indent=1)
                f.write("\n")
        head = (f"Run {day} by `python3 benches/load/bench.py --write`: "
                f"{reps} repetitions of {secs} s per peer and row, interleaved; medians, "
                f"(min–max) across repetitions.\n\n"
                f"Machine: {v['machine']}. {v['haproxy']}; {v['nginx']}; {v['iperf3']}; "
                f"{v['wrk']}; dnsperf {v['dnsperf']}; {v['rustc']}.\n\n")
        section = ("<!-- load-benchmark:start -->\n" + head + report +
                   "\n\n![rvs against its peers](benchmarks-load.svg)\n" +
                   ("\n![scheduler cost](benchmarks-sched.svg)\n" if crit else "") +
                   "<!-- load-benchmark:end -->")
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        with open(path) as f:
            doc = f.read()
        if "<!-- load-benchmark:start -->" in doc:
            doc = re.sub(r"<!-- load-benchmark:start -->.*<!-- load-benchmark:end -->",
                         lambda _: section, doc, flags=re.S)
        else:
            doc += "\n## Against peer proxies\n\n" + section + "\n"
        with open(path, "w") as f:
            f.write(doc)
        groups = []
        for t in table:
            if t["row"] in ("stream", "newconn", "keepalive", "tlsnew", "tlsstream", "udp") and t["key"] in ("gbps", "rps", "qps"):
                bars = [(p, t["vals"][p][0]) for p in PEERS]
                groups.append((t["title"].split(",")[0].split(" (")[0], bars))
        svg_bars(os.path.join(ROOT, "docs", "benchmarks-load.svg"),
                 "rvs, HAProxy, nginx stream and direct (medians)",
                 [(g, [(p, v) for p, v in bars]) for g, bars in groups],
                 "higher is better; each group in its own unit (Gbit/s, requests/s, queries/s), "
                 "bars against the group's best", scale="group")
        if crit:
            sizes = sorted({c["servers"] for c in crit})
            cg = []
            for sched in dict.fromkeys(c["scheduler"] for c in crit):
                bars = [(f"{s} servers", next((c["ns"] for c in crit if c["scheduler"] == sched and c["servers"] == s), None)) for s in sizes]
                cg.append((sched, bars))
            svg_bars(os.path.join(ROOT, "docs", "benchmarks-sched.svg"),
                     "rvs-sched: nanoseconds per schedule + close", cg,
                     "lower is better; logarithmic bars", scale="log")
        log("wrote docs/benchmarks.md, docs/benchmarks-load.svg")


if __name__ == "__main__":
    main()
