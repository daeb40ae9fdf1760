#!/usr/bin/env python3
"""How long a one-line change of a large file takes to be in force, end to end.

    python3 benches/reload.py [--services 1000] [--servers 20] [--reps 20]
                              [--binary target/release/rvs] [--older PATH]

Starts the rvs binary (its own process) with SERVICES TCP services of SERVERS
real servers each, then changes one real server's weight REPS times, in three
ways: rewriting the file in place (an editor, `cat > file`), renaming a new
file over it (`mv`, a ConfigMap), and renaming it then sending SIGHUP. Each
time is from the write (or the signal) to the moment `GET /api/v1/reload`
answers with the next generation: the watcher's wait, the read, the parse,
the check, the apply and the configuration's hash. Prints the median, p90 and
range of each way, and the resident set (VmRSS) at start and after the last
reload. With --older, the same for another binary, interleaved by way.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request


def config(services, servers, port, weight):
    out = [f"admin:\n  listen: 127.0.0.1:{port}\nservices:\n"]
    for s in range(services):
        out.append(
            f"  - name: s{s}\n    listen: 127.3.{s >> 8}.{s & 255}:18080\n"
            "    scheduler: wlc\n    real_servers:\n"
        )
        for r in range(servers):
            w = weight if (s == services - 1 and r == 0) else 1
            out.append(f"      - address: 10.{s >> 8}.{s & 255}.{r + 1}:80\n        weight: {w}\n")
    return "".join(out)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def generation(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/reload", timeout=10) as r:
        return json.load(r)["generation"]


def run(binary, way, args):
    d = tempfile.mkdtemp(prefix="rvs-bench-reload-")
    path = os.path.join(d, "rvs.yaml")
    port = free_port()
    with open(path, "w") as f:
        f.write(config(args.services, args.servers, port, 1))
    p = subprocess.Popen(
        [binary, "run", "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                gen = generation(port)
                break
            except OSError:
                if time.time() > deadline or p.poll() is not None:
                    raise SystemExit(f"{binary} did not start")
                time.sleep(0.1)
        start_rss = rss_mb(p.pid)
        times = []
        for i in range(args.reps):
            text = config(args.services, args.servers, port, i + 2)
            staged = os.path.join(d, "staged.yaml")
            if way != "in place":
                with open(staged, "w") as f:
                    f.write(text)
            t = time.monotonic()
            if way == "in place":
                with open(path, "w") as f:
                    f.write(text)
            else:
                os.replace(staged, path)
                if way == "SIGHUP":
                    p.send_signal(signal.SIGHUP)
            while True:
                g = generation(port)
                if g != gen:
                    break
                if time.monotonic() - t > 30:
                    raise SystemExit(f"{way}: no reload within 30 s")
                time.sleep(0.002)
            times.append((time.monotonic() - t) * 1e3)
            gen = g
            # Let the watcher's periodic check and any late event pass.
            time.sleep(0.3)
        return times, start_rss, rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--binary", default="target/release/rvs")
    ap.add_argument("--older")
    args = ap.parse_args()
    binaries = [("this build", args.binary)]
    if args.older:
        binaries.append(("the binary before", args.older))
    print(f"{args.services} services x {args.servers} real servers, {args.reps} reloads per way")
    print("| rvs | way | median ms | p90 ms | min–max ms | RSS at start → after, MB |")
    print("|---|---|---:|---:|---:|---|")
    for way in ["in place", "rename", "SIGHUP"]:
        for label, binary in binaries:
            times, before, after = run(binary, way, args)
            times.sort()
            med = times[len(times) // 2]
            p90 = times[min(len(times) - 1, round((len(times) - 1) * 0.9))]
            print(
                f"| {label} | {way} | {med:.0f} | {p90:.0f} | {times[0]:.0f}–{times[-1]:.0f} "
                f"| {before:.0f} → {after:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
