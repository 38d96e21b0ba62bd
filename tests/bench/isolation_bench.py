#!/usr/bin/python3
"""Isolation benchmark: issue 9's table, sidelb and HAProxy side by side.

For each misbehaviour (tests/integration/misbehaviour.py) and each proxy, a
fresh proxy in front of one C test backend; a well-behaved grpcio app makes
100 unary calls/s (deadline 1 s) on its own connection while the
misbehaviour runs; then a new connection makes one call. Printed per row:
the good app's OK calls and p99, the proxy's RSS growth, whether a new
connection was served afterwards.

    SIDELB_BUILD=build /usr/bin/python3 tests/bench/isolation_bench.py \
        [--seconds 15] [--targets sidelb,haproxy] [--rows window,socket,rr1,rr20,idle,excess]

A benchmark, not a test: tests/integration/test_misbehaviour.py asserts the
bounds on shorter runs.
"""

import argparse
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (haproxy_config)
import peers  # noqa: E402
import sidelb_harness  # noqa: E402
from misbehaviour import (ExcessStreams, GoodApp, IdleFlood, RapidReset, SocketStaller,  # noqa: E402
                          WindowStaller)
from peers import req  # noqa: E402

ROWS = {
    "window": ("slow reader: 200 server-streaming calls, windows never reopened",
               lambda port: WindowStaller(port, n=200)),
    "socket": ("slow reader: 200 x 1 MiB responses, socket never read",
               lambda port: SocketStaller(port, n=200, size=1 << 20)),
    "rr1": ("rapid reset, 1 connection", lambda port: RapidReset(port, conns=1)),
    "rr20": ("rapid reset, 20 connections", lambda port: RapidReset(port, conns=20)),
    "idle": ("5,000 idle connections (half no preface, half preface then silence)",
             lambda port: IdleFlood(port, n=5000)),
    "excess": ("100 streams past the advertised MAX_CONCURRENT_STREAMS",
               lambda port: ExcessStreams(port, extra=100)),
}


def start_proxy(name, backend, tmp):
    if name == "sidelb":
        cfg = sidelb_harness.simple_config([backend.addr])
        return sidelb_harness.start_sidelb(cfg, log_level="warn")
    port = peers.free_port()
    path = bench.haproxy_config(tmp, port, [backend], 100)
    p = peers.Proc(["haproxy", "-f", path, "-db"], name="haproxy", ready=None, port=port)
    p.port = port
    return p


def run_row(row, target, seconds, tmp):
    backend = peers.start_c_backend("iso", extra_args=["--max-concurrent-streams", "1000"], stats=False)
    proxy = start_proxy(target, backend, tmp)
    addr = "127.0.0.1:%d" % proxy.port
    good = GoodApp(addr, rate=100, timeout=1.0)
    rss0 = sidelb_harness.rss_kb(proxy.pid)
    bad = ROWS[row][1](proxy.port).start()
    good.start()
    time.sleep(seconds)
    result = good.stop()
    grown = sidelb_harness.rss_kb(proxy.pid) - rss0
    extra = bad.summary() if hasattr(bad, "summary") else ""
    bad.stop()
    try:
        stub = peers.echo_stub(peers.channel(addr, **{"grpc.use_local_subchannel_pool": 1}))
        served = stub.Unary(req(payload=b"new"), timeout=5).payload == b"new"
    except Exception:
        served = False
    alive = proxy.alive()
    peers.stop_all()
    return result, grown, served and alive, extra


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--targets", default="sidelb,haproxy")
    ap.add_argument("--rows", default=",".join(ROWS))
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the idle flood and the proxies need fds
    print("| misbehaviour | %s |" % " | ".join(args.targets.split(",")))
    print("|---|" + "---|" * len(args.targets.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        for row in args.rows.split(","):
            cells = []
            for target in args.targets.split(","):
                result, grown, served, extra = run_row(row, target, args.seconds, tmp)
                cells.append("%d of %d OK, p99 %.0f ms; RSS %+.1f MiB; new conn %s%s" % (
                    len(result.latencies), result.total, result.p99() * 1000, grown / 1024.0,
                    "served" if served else "NOT served", "; " + extra if extra else ""))
                sys.stdout.flush()
            print("| %s | %s |" % (ROWS[row][0], " | ".join(cells)))
            sys.stdout.flush()


if __name__ == "__main__":
    try:
        main()
    finally:
        peers.stop_all()
