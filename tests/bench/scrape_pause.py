#!/usr/bin/python3
"""How long a /metrics scrape pauses the worker loops ("workers" > 1).

    SIDELB_BUILD=build /usr/bin/python3 tests/bench/scrape_pause.py [--workers N] [--backends B]
        [--scrapes S] [--rate R]

sidelb with N workers (default 2), one cluster of 3 C test backends plus B
more listed addresses where nothing listens (127.1.x.y:1) (default 0; they are listed,
so every scrape adds up their counters too), max_methods 8. Calls at R per
second (default 200, 0: idle) go over 4 app connections (spread over the
workers) while S scrapes (default 200, 20 ms apart) each read
sidelb_scrape_pause_seconds: how long that scrape held the workers (pause
request, the additions, resume). Prints the median, p99 and max of that and
of the whole /metrics request as the client timed it, and the calls' outcome.
Every process is stopped at the end, also on failure.
"""

import argparse
import os
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import peers  # noqa: E402
from sidelb_harness import start_with_admin_listener  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backends", type=int, default=0)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--rate", type=int, default=200)
    a = ap.parse_args()
    try:
        real = [peers.start_c_backend("b%d" % i, stats=False) for i in range(3)]
        listed = [b.addr for b in real] + ["127.1.%d.%d:1" % (i // 250, 1 + i % 250) for i in range(a.backends)]
        cfg = {"workers": a.workers,
               "listeners": [{"name": "l", "address": "127.0.0.1:%d" % peers.free_port(),
                              "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
               "clusters": [{"name": "echo", "discovery": {"static": listed}, "policy": {"round_robin": {}},
                             "wait_for_ready_ms": 0}],
               "metrics": {"max_methods": 8}}
        slb = start_with_admin_listener(cfg)
        addr = cfg["listeners"][0]["address"]
        loads = []
        if a.rate > 0:
            for _ in range(4):
                stub = peers.echo_stub(peers.channel(addr, **{"grpc.use_local_subchannel_pool": 1}))
                loads.append(peers.RateLoad(stub, a.rate / 4.0, 5))
        time.sleep(0.5)
        pauses, requests = [], []
        for _ in range(a.scrapes):
            t0 = time.monotonic()
            text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % slb.admin_port, timeout=5).read().decode()
            requests.append(time.monotonic() - t0)
            line = [x for x in text.splitlines() if x.startswith("sidelb_scrape_pause_seconds ")]
            if not line:
                sys.exit("no sidelb_scrape_pause_seconds: workers must be > 1")
            pauses.append(float(line[0].split()[1]))
            time.sleep(0.02)
        results = [r for load in loads for r in load.stop()]
        ok = sum(1 for r in results if r[2] not in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL"))
        print("workers=%d listed backends=%d calls/s=%d scrapes=%d body=%d bytes" %
              (a.workers, len(listed), a.rate, a.scrapes, len(text)))
        for name, xs in (("pause (sidelb_scrape_pause_seconds)", pauses), ("/metrics request", requests)):
            print("  %-38s median %7.1f us  p99 %7.1f us  max %7.1f us" %
                  (name, statistics.median(xs) * 1e6, pct(xs, 99) * 1e6, max(xs) * 1e6))
        print("  calls during the scrapes: %d, answered by a backend: %d" % (len(results), ok))
    finally:
        peers.stop_all()


if __name__ == "__main__":
    main()
