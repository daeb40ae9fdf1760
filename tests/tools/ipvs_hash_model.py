#!/usr/bin/env python3
"""An independent model of IPVS's hashing schedulers (sh, dh, mh), written
from the kernel sources (net/netfilter/ipvs/ip_vs_{sh,dh,mh}.c,
include/linux/hash.h, lib/siphash.c) to compute the expected output of the
hashing fixtures in crates/rvs/tests/traces/ without using rvs's own code.

Usage: ipvs_hash_model.py TRACE.jsonl   (prints one line per conn)
Supports: service (sh, dh, mh; flags), add, edit (weight), del, conn.
No thresholds, no persistence: those fixtures are derived by hand.
"""
import ipaddress
import json
import sys

M64 = (1 << 64) - 1


def rol(x, b):
    return ((x << b) | (x >> (64 - b))) & M64


def sipround(v):
    v0, v1, v2, v3 = v
    v0 = (v0 + v1) & M64; v1 = rol(v1, 13); v1 ^= v0; v0 = rol(v0, 32)
    v2 = (v2 + v3) & M64; v3 = rol(v3, 16); v3 ^= v2
    v0 = (v0 + v3) & M64; v3 = rol(v3, 21); v3 ^= v0
    v2 = (v2 + v1) & M64; v1 = rol(v1, 17); v1 ^= v2; v2 = rol(v2, 32)
    return [v0, v1, v2, v3]


def hsiphash32(value, k0, k1):
    """hsiphash(&u32, 4, key) on a little-endian 64-bit kernel (SipHash-1-3)."""
    v = [0x736f6d6570736575 ^ k0, 0x646f72616e646f6d ^ k1,
         0x6c7967656e657261 ^ k0, 0x7465646279746573 ^ k1]
    b = (4 << 56) | (value & 0xffffffff)
    v[3] ^= b
    v = sipround(v)
    v[0] ^= b
    v[2] ^= 0xff
    for _ in range(3):
        v = sipround(v)
    return (v[0] ^ v[1] ^ v[2] ^ v[3]) & 0xffffffff


def hash_32(val, bits):
    return ((val * 0x61C88647) & 0xffffffff) >> (32 - bits)


def parse(addr):
    host, port = addr.rsplit(":", 1)
    return ipaddress.ip_address(host.strip("[]")), int(port)


def fold(ip):
    n = int(ip)
    if ip.version == 4:
        return n
    return (n >> 96 ^ n >> 64 ^ n >> 32 ^ n) & 0xffffffff


def fmt(ip, port):
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


class Dest:
    def __init__(self, ip, port, weight):
        self.ip, self.port, self.weight, self.last_weight = ip, port, weight, weight


H1 = (2654435761, 2654435761)
H2 = (2654446892, 2654446892)
MH_SIZE = 4093


def mh_key(ip, port, key, offset):
    return hsiphash32((offset + port + fold(ip)) & 0xffffffff, *key)


def mh_build(dests):
    from math import gcd
    lws = [d.last_weight for d in dests if d.last_weight > 0]
    if not lws:
        return [None] * MH_SIZE
    g = 0
    for w in lws:
        g = w if g == 0 else gcd(g, w)
    mw = max(d.last_weight for d in dests) // g
    rshift = max(mw.bit_length() - 6, 0)
    setup = []
    for d in dests:
        off = mh_key(d.ip, d.port, H1, 0) % MH_SIZE
        skip = mh_key(d.ip, d.port, H2, 0) % (MH_SIZE - 1) + 1
        t = (d.last_weight // g) >> rshift
        turns = t if t else (1 if d.last_weight else 0)
        setup.append([off, skip, off, turns])
    table = [None] * MH_SIZE
    taken = [False] * MH_SIZE
    n = 0
    while True:
        i = dt = 0
        while i < len(dests):
            s = setup[i]
            if s[3] < 1:
                i += 1
                continue
            c = s[2]
            while taken[c]:
                s[2] = (s[2] + s[1]) % MH_SIZE
                c = s[2]
            taken[c] = True
            table[c] = dests[i]
            n += 1
            if n == MH_SIZE:
                return table
            dt += 1
            if dt >= s[3]:
                dt = 0
                i += 1


def bucket_build(dests, weighted):
    if not dests:
        return [None] * 256
    table, pos, count = [], 0, 0
    for _ in range(256):
        table.append(dests[pos])
        count += 1
        if not weighted or count >= dests[pos].weight:
            pos = (pos + 1) % len(dests)
            count = 0
    return table


def unavailable(d):
    return d.weight <= 0


def main(path):
    svc = None
    dests = []
    table = None
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op = json.loads(line)
        kind = op["op"]
        if kind == "service":
            svc = op
            flags = set(op.get("flags", []))
        elif kind == "add":
            ip, port = parse(op["rs"])
            dests.insert(0, Dest(ip, port, op.get("weight", 1)))
        elif kind == "edit":
            ip, port = parse(op["rs"])
            d = next(d for d in dests if (d.ip, d.port) == (ip, port))
            if "weight" in op:
                d.weight = op["weight"]
                if d.weight != 0:
                    d.last_weight = d.weight
            if svc["scheduler"] == "dh":
                continue  # no upd_dest hook
        elif kind == "del":
            ip, port = parse(op["rs"])
            dests = [d for d in dests if (d.ip, d.port) != (ip, port)]
        if kind in ("add", "edit", "del"):
            s = svc["scheduler"]
            table = mh_build(dests) if s == "mh" else bucket_build(dests, s == "sh")
            continue
        if kind != "conn":
            continue
        src, sport = parse(op["src"])
        dst, _ = parse(op["dst"])
        s = svc["scheduler"]
        if table is None:
            table = [None] * (MH_SIZE if s == "mh" else 256)
        if s == "dh":
            d = table[hash_32(fold(dst), 8)]
            print("-" if d is None or unavailable(d) else fmt(d.ip, d.port))
            continue
        port = sport if (s + "-port") in flags else 0
        fallback = (s + "-fallback") in flags
        if s == "sh":
            ih = hash_32((port + fold(src)) & 0xffffffff, 8)
            probes = [ih] + [((o + ih) % 256 + ih) & 255 for o in range(256)]
        else:
            ih = mh_key(src, port, H1, 0) % MH_SIZE
            probes = [ih] + [mh_key(src, port, H1, (o + ih) % MH_SIZE) % MH_SIZE
                             for o in range(MH_SIZE)]
        out = "-"
        for k, b in enumerate(probes):
            d = table[b]
            if d is None:
                break
            if not unavailable(d):
                out = fmt(d.ip, d.port)
                break
            if not fallback:
                break
        print(out)


if __name__ == "__main__":
    main(sys.argv[1])
