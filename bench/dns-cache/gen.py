#!/usr/bin/env python3
"""Inputs of bench/dns-cache/run.sh: an upstream zone, query files and a synthetic cluster.

gen.py zone N OUT          zone file of example.test with N names h<i> (one A each)
gen.py queries N OUT       dnsperf file: the N names, type A
gen.py cluster S E DIR     S ClusterIP services in 100 namespaces with E endpoints in total
gen.py svcqueries S OUT    dnsperf file: A queries for the S services
gen.py names N ZONE OUT    dnsperf file: N distinct names r<i>.ZONE, type A (floods)
gen.py slowup PORT MS      a UDP upstream on 127.0.0.1:PORT answering A 192.0.2.9 after MS ms
"""
import asyncio
import os
import sys


def zone(n, out):
    with open(out, "w") as f:
        f.write("$TTL 3600\n@ IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 300\n")
        f.write("@ IN NS ns.example.test.\nns IN A 127.0.0.1\n")
        for i in range(n):
            f.write(f"h{i} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")


def queries(n, out):
    with open(out, "w") as f:
        for i in range(n):
            f.write(f"h{i}.example.test A\n")


def cluster(services, endpoints, d):
    os.makedirs(d, exist_ok=True)
    per = max(1, endpoints // services)
    with open(os.path.join(d, "cluster.yaml"), "w") as f:
        for i in range(services):
            ns = f"ns-{i % 100}"
            ip = f"10.96.{(i >> 8) & 255}.{i & 255}" if i < 65536 else None
            f.write(
                f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {ns}}}\n"
                f"spec: {{clusterIP: {ip}, clusterIPs: [{ip}], ports: [{{name: http, port: 80, protocol: TCP}}]}}\n---\n"
            )
            eps = ", ".join(
                f"{{addresses: [10.{100 + (j % 100)}.{(i >> 8) & 255}.{i & 255}], conditions: {{ready: true}}}}"
                for j in range(per)
            )
            f.write(
                f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                f"metadata: {{name: svc-{i}-a, namespace: {ns}, labels: {{kubernetes.io/service-name: svc-{i}}}}}\n"
                f"addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints: [{eps}]\n---\n"
            )


def svcqueries(services, out):
    with open(out, "w") as f:
        for i in range(services):
            f.write(f"svc-{i}.ns-{i % 100}.svc.cluster.local A\n")


def names(n, zone_name, out):
    with open(out, "w") as f:
        for i in range(n):
            f.write(f"r{i}.{zone_name} A\n")


class SlowUpstream(asyncio.DatagramProtocol):
    def __init__(self, delay):
        self.delay = delay
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        i = 12
        while i < len(data) and data[i] != 0:
            i += 1 + data[i]
        end = i + 5
        if end > len(data):
            return
        reply = (data[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + data[12:end]
                 + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x09")
        asyncio.get_running_loop().call_later(self.delay, self.transport.sendto, reply, addr)


async def slowup(port, ms):
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: SlowUpstream(ms / 1000.0), local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "zone":
        zone(int(sys.argv[2]), sys.argv[3])
    elif cmd == "queries":
        queries(int(sys.argv[2]), sys.argv[3])
    elif cmd == "cluster":
        cluster(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif cmd == "svcqueries":
        svcqueries(int(sys.argv[2]), sys.argv[3])
    elif cmd == "names":
        names(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif cmd == "slowup":
        asyncio.run(slowup(int(sys.argv[2]), int(sys.argv[3])))
    else:
        sys.exit(__doc__)
