"""Outlier detection (gRFC A50 success rate) end to end: sidelb, three C test
backends, one of which fails every other call, and a grpcio client at a
steady ~200 calls/s."""

import json
import threading
import time
import urllib.request

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb

pytestmark = pytest.mark.serial  # an ejection measured to last 2.5-4.0 s (conftest.py)


def clusters(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/clusters" % port, timeout=5) as r:
        return {b["address"]: b for b in json.loads(r.read())[0]["backends"]}


def metric(port, name, backend):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + "{") and 'backend="%s"' % backend in line:
                return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Load(threading.Thread):
    """Unary calls at ~200/s; records (start time, backend id) of each call,
    failed ones included (the failing backend names itself in the message)."""

    def __init__(self, stub):
        super().__init__(daemon=True)
        self.stub, self.calls, self.stop, self.errors = stub, [], threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                who = self.stub.Unary(req(payload=b"x"), timeout=5).backend_id
            except grpc.RpcError as e:
                who = "bad" if "backend bad broken" in (e.details() or "") else "error:%s" % e.code()
                if who != "bad":
                    self.errors.append(who)
            self.calls.append((t, who))
            time.sleep(0.005)

    def landed(self, who, since, until=None):
        return sum(1 for t, w in list(self.calls) if w == who and t >= since and (until is None or t < until))


@pytest.mark.timeout(60)
def test_success_rate_ejects_a_backend_failing_half_its_calls_and_it_returns():
    good = [peers.start_c_backend("good%d" % i) for i in range(2)]
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14", "--fail-every", "2"])
    cfg = simple_config([good[0].addr, good[1].addr, bad.addr],
                        outlier_detection={
                            # only success rate: a backend failing every other call never fails 2 in a row
                            "consecutive_failures": 1000,
                            "interval_ms": 1000,
                            # ~65 calls per backend per interval at 200 calls/s: judged on whole intervals
                            # (a 100 ms window would hold ~7, never the volume)
                            "success_rate_request_volume": 40,
                            "success_rate_minimum_hosts": 3,
                            # with 3 hosts one outlier is at most sqrt(2) stdevs below the mean: A50's
                            # default 1.9 could never eject it (rates 1, 1, 0.5: threshold 0.6 at 1.0)
                            "success_rate_stdev_factor": 1.0,
                            "base_ejection_ms": 3000})
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg)
    assert peers.wait_port(admin_port, 5)
    load = Load(peers.echo_stub(slb.addr))
    load.start()
    try:
        t0 = time.monotonic()
        assert wait_for(lambda: clusters(admin_port)[bad.addr]["ejected"], 8), "never ejected"
        t_out = time.monotonic()
        assert t_out - t0 >= 0.8, "ejected before one interval_ms of calls was judged"
        assert all(not b["ejected"] for a, b in clusters(admin_port).items() if a != bad.addr)
        assert metric(admin_port, "sidelb_backend_ejections_total", bad.addr) == 1
        assert metric(admin_port, "sidelb_backend_ejection_multiplier", bad.addr) == 1
        # out for base_ejection_ms x 1 = 3 s: no calls land there meanwhile
        assert wait_for(lambda: not clusters(admin_port)[bad.addr]["ejected"], 6), "never returned"
        t_back = time.monotonic()
        assert 2.5 <= t_back - t_out <= 4.0, t_back - t_out
        assert load.landed("bad", t_out + 0.1, t_back - 0.1) == 0
        assert load.landed("good0", t_out + 0.1, t_back - 0.1) > 100
        assert load.landed("good1", t_out + 0.1, t_back - 0.1) > 100
        # back in: it takes calls again (and, still failing half, goes out again, for longer)
        assert wait_for(lambda: load.landed("bad", t_back) >= 10, 3)
        # (a loaded machine slows the load, and each interval needs its request volume)
        assert wait_for(lambda: metric(admin_port, "sidelb_backend_ejections_total", bad.addr) == 2, 15)
        assert metric(admin_port, "sidelb_backend_ejection_multiplier", bad.addr) == 2
    finally:
        load.stop.set()
        load.join(10)
    assert load.errors == [], load.errors[:5]
