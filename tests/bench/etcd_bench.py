#!/usr/bin/python3
"""etcd discovery figures (a benchmark, not a test):

1. propagation: time from an etcd change (a backend's key put or deleted) to
   the first call routed accordingly through sidelb, over N changes (default
   100); prints median and max.
2. apply cost: sidelb CPU time to apply 10,000 watch events (10,000 keys put
   under its prefix in transactions of 100), from /proc/PID/stat.

    SIDELB_BUILD=build /usr/bin/python3 tests/bench/etcd_bench.py [--changes N] [--events N]
"""

import argparse
import base64
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import peers  # noqa: E402
from etcd_harness import EtcdServer  # noqa: E402
from peers import req  # noqa: E402
from sidelb_harness import start_sidelb  # noqa: E402

PREFIX = "/grpclb/sidelb.test.Echo/"


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config(etcd, port, prefix):
    return {"log_level": "warn",
            "etcd": {"endpoints": [etcd.url]},
            "listeners": [{"address": "127.0.0.1:%d" % port,
                           "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
            "clusters": [{"name": "echo", "discovery": {"etcd_prefix": prefix},
                          "policy": {"round_robin": {}}}]}


def propagation(etcd, changes):
    a = peers.start_c_backend("A", stats=False)
    b = peers.start_c_backend("B", stats=False)
    etcd.put(PREFIX + a.addr, a.addr)
    slb = start_sidelb(config(etcd, peers.free_port(), PREFIX), log_level="warn")
    stub = peers.echo_stub(slb.addr)
    stub.Unary(req(payload=b"warm"), timeout=5)
    lat = []
    for i in range(changes):
        adding = i % 2 == 0
        t0 = time.monotonic()
        if adding:
            etcd.put(PREFIX + b.addr, b.addr)
        else:
            etcd.delete(PREFIX + b.addr)
        # round robin over {A, B}: two consecutive calls cover both when B is in
        while True:
            ids = {stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(2)}
            if ("B" in ids) == adding:
                if not adding:
                    # B gone: confirm with a few more calls that none reach it
                    if any(stub.Unary(req(payload=b"x"), timeout=5).backend_id == "B" for _ in range(3)):
                        continue
                break
            if time.monotonic() - t0 > 5:
                raise SystemExit("change %d not applied within 5 s" % i)
        lat.append((time.monotonic() - t0) * 1000)
    slb.stop()
    a.stop()
    b.stop()
    return lat


def apply_cost(etcd, events):
    prefix = "/grpclb/bench.Apply/"
    slb = start_sidelb(config(etcd, peers.free_port(), prefix), log_level="warn")
    time.sleep(0.5)
    c0 = cpu_seconds(slb.pid)
    batch = 100
    for start in range(0, events, batch):
        ops = []
        for i in range(start, min(events, start + batch)):
            addr = "10.%d.%d.%d:8000" % (i >> 16 & 255, i >> 8 & 255, i & 255)
            ops.append({"request_put": {"key": base64.b64encode((prefix + addr).encode()).decode(),
                                        "value": base64.b64encode(addr.encode()).decode()}})
        etcd._post("/v3/kv/txn", {"success": ops})
    # wait until sidelb is idle again
    last, stable = cpu_seconds(slb.pid), 0
    while stable < 5:
        time.sleep(0.2)
        now = cpu_seconds(slb.pid)
        stable = stable + 1 if now == last else 0
        last = now
    used = last - c0
    slb.stop()
    return used


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--events", type=int, default=10000)
    args = ap.parse_args()
    etcd = EtcdServer()
    try:
        lat = propagation(etcd, args.changes)
        print("etcd change -> first call routed accordingly, %d changes: median %.2f ms, p90 %.2f ms, max %.2f ms"
              % (len(lat), statistics.median(lat), sorted(lat)[int(len(lat) * 0.9) - 1], max(lat)))
        used = apply_cost(etcd, args.events)
        print("sidelb CPU to apply %d watch events (puts in txns of 100): %.1f ms (%.2f us/event; "
              "includes HTTP/JSON parsing, table and policy updates; CPU clock tick resolution 10 ms)"
              % (args.events, used * 1000, used * 1e6 / args.events))
    finally:
        peers.stop_all()
        etcd.destroy()


if __name__ == "__main__":
    main()
