"""A bounded soak: many concurrent calls of every kind, with cancels,
deadlines, big messages and backends dying and returning. sidelb must stay
up, lose no call silently (every call ends with a status) and hold no call
or memory afterwards."""

import random
import threading
import time
import urllib.request

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import rss_kb, simple_config, start_sidelb

pytestmark = pytest.mark.serial  # a soak with dying backends: loads the machine (conftest.py)


def in_flight(admin_port):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port, timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("sidelb_calls_in_flight "):
            return int(float(line.split()[1]))
    raise AssertionError("no sidelb_calls_in_flight in /metrics")


def one_call(stub, rnd):
    kind = rnd.randrange(7)
    timeout = rnd.choice([0.05, 0.5, 5])
    if kind == 0:
        return stub.Unary(req(payload=b"u" * rnd.randrange(1, 2000), delay_ms=rnd.choice([0, 0, 20, 200])),
                          timeout=timeout)
    if kind == 1:
        return stub.Unary(req(payload=b"B" * (rnd.randrange(1, 4) * 300 * 1024)), timeout=timeout)
    if kind == 2:
        it = stub.ServerStream(req(payload=b"s", response_count=rnd.randrange(1, 200),
                                   response_size=rnd.choice([10, 5000])), timeout=timeout)
        for i, _ in enumerate(it):
            if i == 5 and rnd.random() < 0.3:
                it.cancel()
                break
        return None
    if kind == 3:
        return stub.ClientStream(iter([req(payload=b"c" * 100)] * rnd.randrange(1, 50)), timeout=timeout)
    if kind == 4:
        return list(stub.Bidi(iter([req(payload=b"b")] * rnd.randrange(1, 30)), timeout=timeout))
    if kind == 5:
        fut = stub.Unary.future(req(payload=b"x", delay_ms=300), timeout=timeout)
        time.sleep(rnd.random() * 0.1)
        fut.cancel()
        return None
    return stub.Unary(req(payload=b"e", status_code=rnd.randrange(1, 17), status_message="s"), timeout=timeout)


@pytest.mark.timeout(120)
def test_soak_with_cancels_deadlines_and_dying_backends():
    bes = [peers.start_c_backend("k%d" % i) for i in range(3)]
    admin = peers.free_port()
    cfg = simple_config([b.addr for b in bes], wait_for_ready_ms=500,
                        backoff={"initial_ms": 100, "max_ms": 300},
                        service_config={"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}],
                                                          "retryPolicy": {"maxAttempts": 3,
                                                                          "initialBackoff": "0.01s",
                                                                          "maxBackoff": "0.05s",
                                                                          "backoffMultiplier": 2,
                                                                          "retryableStatusCodes": ["UNAVAILABLE"]}}]})
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin}
    slb = start_sidelb(cfg, log_level="warn")
    chan = peers.channel(slb.addr)
    stub = peers.echo_stub(chan)
    stop = time.monotonic() + 15
    outcomes = {"ok": 0, "status": 0, "other": 0}
    lock = threading.Lock()

    def worker(seed):
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            try:
                one_call(stub, rnd)
                key = "ok"
            except grpc.RpcError as e:
                key = "status" if isinstance(e.code(), grpc.StatusCode) else "other"
            except Exception:
                key = "other"
            with lock:
                outcomes[key] += 1

    def chaos():
        rnd = random.Random(7)
        while time.monotonic() < stop - 3:
            time.sleep(rnd.uniform(1, 2))
            b = rnd.choice(bes)
            b.kill9()
            time.sleep(rnd.uniform(0.2, 0.8))
            b.restart()

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(12)] + [threading.Thread(target=chaos)]
    base = rss_kb(slb.pid)
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in ts), "a call hung"
    assert slb.alive(), slb.log()[-3000:]
    assert outcomes["other"] == 0, outcomes
    assert outcomes["ok"] > 300, outcomes
    # every call is accounted for once everything settled
    chan.close()
    end = time.monotonic() + 10
    while in_flight(admin) != 0:
        assert time.monotonic() < end, "calls still held by sidelb: %d" % in_flight(admin)
        time.sleep(0.1)
    # still serving normally
    stub2 = peers.echo_stub(slb.addr)
    for _ in range(30):
        assert stub2.Unary(req(payload=b"after"), timeout=5).payload == b"after"
    assert rss_kb(slb.pid) - base < 64 * 1024
    # a clean exit: under `make asan` a leak or memory error makes this fail
    assert slb.stop(timeout=10) == 0
    assert "Sanitizer" not in slb.log() and "runtime error" not in slb.log(), slb.log()[-4000:]
