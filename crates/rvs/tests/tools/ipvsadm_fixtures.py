#!/usr/bin/env python3
"""Writes the rvsadm fixtures with ipvsadm 1.31's own printf formats.

The table below is the one crates/rvs/tests/rvsadm.rs builds in a running
rvs. Each fixture is what ipvsadm prints for that table, produced here by
applying ipvsadm's C format strings (print_title, print_service_entry,
print_largenum) with Python's printf-style formatting, which has the same
semantics for %-Ns, %Ns, %Nd and %u. Services and servers are sorted as
libipvs's comparators sort them through glibc's merge sort.

Addresses 127.0.0.1:40001..40004 stand for the ports the test picks; the
test puts its own (also five digits) in their place.

    python3 crates/rvs/tests/tools/ipvsadm_fixtures.py crates/rvs/tests/fixtures/rvsadm
"""

import ipaddress
import os
import sys

TCP, UDP = 6, 17

# Real servers in IPVS list order (each added at the head: the reverse of
# the configuration file's order).
TABLE = [
    dict(proto=TCP, addr="127.0.0.1", port=40001, sched="wlc", flags="",
         persistent=600, mask="255.255.255.0", ops=False,
         stats=(0, 0, 0, 0, 0),
         dests=[("10.0.0.7", 79, 2, 0, 0), ("127.0.0.1", 8080, 1, 0, 0),
                ("10.0.0.7", 80, 0, 0, 0), ("192.168.10.2", 8080, 3, 100, 50)]),
    dict(proto=UDP, addr="127.0.0.1", port=40002, sched="sh", flags="sh-fallback,sh-port",
         persistent=None, mask=None, ops=True,
         stats=(3, 3, 3, 11, 11),
         dests=[("127.0.0.1", 40004, 1, 0, 0)]),
    dict(proto=TCP, addr="::1", port=40003, sched="mh", flags="mh-port",
         persistent=30, mask=64, ops=False,
         stats=(0, 0, 0, 0, 0),
         dests=[("2001:db8::1", 443, 100, 0, 0), ("::1", 8443, 1, 0, 0)]),
]


def af(a):
    return 10 if ":" in a else 2


def words(a):
    packed = ipaddress.ip_address(a).packed
    return [int.from_bytes(packed[i:i + 4], "big") for i in range(0, len(packed), 4)]


def c_int(x):
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >= 1 << 31 else x


def cmp_addr(a, b):
    r = 0
    for x, y in zip(words(a), words(b)):
        r = c_int(x - y)
        if r:
            break
    return r


def cmp_services(s1, s2):
    r = af(s1["addr"]) - af(s2["addr"])
    if r:
        return r
    r = s1["proto"] - s2["proto"]
    if r:
        return r
    r = cmp_addr(s1["addr"], s2["addr"])
    if r:
        return r
    return s1["port"] - s2["port"]


def cmp_dests(d1, d2):
    r = cmp_addr(d1[0], d2[0])
    if r:
        return r
    return d1[1] - d2[1]


def msort(v, cmp):
    """glibc's msort_with_tmp: top-down, n1 = n/2, left wins ties."""
    if len(v) <= 1:
        return list(v)
    n1 = len(v) // 2
    a, b = msort(v[:n1], cmp), msort(v[n1:], cmp)
    out = []
    while a and b:
        out.append(a.pop(0) if cmp(a[0], b[0]) <= 0 else b.pop(0))
    return out + a + b


def addrport(a, port):
    s = ("%s:%u" % (a, port)) if af(a) == 2 else ("[%s]:%u" % (a, port))
    return s[:59]


def largenum(i, exact):
    if exact:
        n = len("%u" % i)
        return "%*u" % (9 if n <= 8 else n + 1, i)
    if i < 100000000:
        return "%9u" % i
    if i < 1000000000:
        return "%8uK" % (i // 1000)
    if i < 100000000000:
        return "%8uM" % (i // 1000000)
    if i < 100000000000000:
        return "%8uG" % (i // 1000000000)
    return "%8uT" % (i // 1000000000000)


def title(fmt):
    if "stats" in fmt:
        return ("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"))
    if "thresholds" in fmt:
        return ("%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"))
    if "persistent-conn" in fmt:
        return ("%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n"
                % ("Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"))
    if "rule" in fmt:
        return ""
    return ("Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def entry(s, fmt):
    out = ""
    v6 = af(s["addr"]) == 10
    vname = addrport(s["addr"], s["port"])
    if "rule" in fmt:
        svc_name = "%s %s" % ("-t" if s["proto"] == TCP else "-u", vname)
    else:
        svc_name = "%-4s %s" % ("TCP" if s["proto"] == TCP else "UDP", vname)
        if not v6:
            svc_name = svc_name[:33]
    if "rule" in fmt:
        out += "-A %s -s %s" % (svc_name, s["sched"])
        if s["persistent"]:
            out += " -p %u" % s["persistent"]
            if not v6 and s["mask"] != "255.255.255.255":
                out += " -M %s" % s["mask"]
            if v6 and s["mask"] != 128:
                out += " -M %i" % s["mask"]
        if s["ops"]:
            out += " -o"
        if s["flags"]:
            out += " -b " + s["flags"]
    elif "stats" in fmt:
        out += "%-33s" % svc_name + "".join(largenum(n, "exact" in fmt) for n in s["stats"])
    else:
        out += "%s %s" % (svc_name, s["sched"])
        if s["flags"]:
            out += " (" + s["flags"] + ")"
        if s["persistent"]:
            out += " persistent %u" % s["persistent"]
            if not v6 and s["mask"] != "255.255.255.255":
                out += " mask %s" % s["mask"]
            if v6 and s["mask"] != 128:
                out += " mask %i" % s["mask"]
        if s["ops"]:
            out += " ops"
    out += "\n"
    for (a, port, w, u, l) in msort(s["dests"], cmp_dests):
        dname = addrport(a, port)
        if "rule" not in fmt and af(a) != 10:
            dname = dname[:28]
        if "rule" in fmt:
            out += "-a %s -r %s %s -w %d\n" % (svc_name, dname, "-m", w)
        elif "stats" in fmt:
            stats = s["stats"] if s["stats"][0] else (0, 0, 0, 0, 0)
            out += "  -> %-28s" % dname + "".join(largenum(n, "exact" in fmt) for n in stats) + "\n"
        elif "thresholds" in fmt:
            out += "  -> %-28s %-10u %-10u %-10u %-10u\n" % (dname, u, l, 0, 0)
        elif "persistent-conn" in fmt:
            out += "  -> %-28s %-9u %-11u %-10u %-10u\n" % (dname, w, 0, 0, 0)
        else:
            out += "  -> %-28s %-7s %-6d %-10u %-10u\n" % (dname, "FullNat", w, 0, 0)
    return out


def list_all(fmt):
    out = "" if "rule" in fmt else "IP Virtual Server version 1.2.1 (size=4096)\n"
    out += title(fmt)
    for s in msort(TABLE, cmp_services):
        out += entry(s, fmt)
    return out


FIXTURES = {
    "list.txt": list_all(set()),
    "stats.txt": list_all({"stats"}),
    "stats-exact.txt": list_all({"stats", "exact"}),
    "thresholds.txt": list_all({"thresholds"}),
    "persistent-conn.txt": list_all({"persistent-conn"}),
    "save.txt": list_all({"rule"}),
    "list-one.txt": title(set()) + entry(TABLE[0], set()),
}

if __name__ == "__main__":
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    for name, text in FIXTURES.items():
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
