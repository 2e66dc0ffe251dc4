#!/usr/bin/env python3
"""RSS of a running svcnet-dns over bursts of TCP connections (issue 19 item 4).

Usage: bench/memory/tcp-bursts.py PORT PID [BURSTS [CONNECTIONS]]
Each burst opens CONNECTIONS (default 1024) connections to 127.0.0.1:PORT, sends one query on
each, reads the 2-byte length of each answer, closes them all and waits 1.5 s; the RSS of PID is
printed during and after every burst, and 5 s after the last. Figures: BENCHMARKS.md.
"""
import socket, struct, sys, time, os, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
port = int(sys.argv[1]); pid = int(sys.argv[2]); cycles = int(sys.argv[3]); conns = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) / 1024
def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for lab in name.split("."):
        q += bytes([len(lab)]) + lab.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(q)) + q
print(f"start rss {rss(pid):.1f} MB", flush=True)
for c in range(cycles):
    socks = []
    for i in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    for i, s in enumerate(socks):
        s.sendall(query(i, "kubernetes.default.svc.cluster.local"))
    ok = 0
    for s in socks:
        s.settimeout(10)
        try:
            h = s.recv(2)
            if len(h) == 2: ok += 1
        except Exception: pass
    peak = rss(pid)
    for s in socks: s.close()
    time.sleep(1.5)
    print(f"cycle {c+1}: answered {ok}/{conns} rss during {peak:.1f} MB, after close {rss(pid):.1f} MB", flush=True)
time.sleep(5)
print(f"end rss {rss(pid):.1f} MB", flush=True)
