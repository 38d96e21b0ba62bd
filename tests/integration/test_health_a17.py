"""gRFC A17 health semantics with real processes (python3-grpcio backends).

- A backend without grpc.health.v1 (like the grpc-go interop server): Check
  answers UNIMPLEMENTED -> health checking is off for it and it takes calls;
  one error line names it and the service; a counter and a per-backend gauge
  say so.
- A backend whose health is not known yet (its check has not answered) gets
  no call while another backend is known SERVING.
- A cluster whose only backend's health is not known yet: the call waits for
  the first answer (woken by it), then succeeds.
- A reload (SIGHUP) starts the new server's checks at once: calls go on.
"""

import json
import re
import signal
import threading
import time
import urllib.request

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb

pytestmark = pytest.mark.serial  # waits bounded to fractions of a second (0.6-2.0 s, < 0.5 s) (conftest.py)

UNIMPL_LINE = re.compile(r"error: cluster echo: backend (\S+) does not implement grpc\.health\.v1 "
                         r"\(health check of service \"([^\"]*)\" answered UNIMPLEMENTED\)")


def with_admin(cfg):
    port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % port}
    return cfg, port


def get(port, path):
    return urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5).read().decode()


def metric(port, name, backend=None):
    text = get(port, "/metrics")
    label = r'\{[^}]*backend="%s"[^}]*\}' % re.escape(backend) if backend else ""
    m = re.search(r"^%s%s ([0-9.e+]+)$" % (re.escape(name), label), text, re.M)
    return float(m.group(1)) if m else None


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


@pytest.mark.timeout(60)
def test_backend_without_health_service_takes_calls():
    bes = [peers.start_py_backend("n%d" % i, extra_args=["--no-health"]) for i in range(2)]
    cfg, admin = with_admin(simple_config([b.addr for b in bes], health_check={"interval_ms": 100}))
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    got = {stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(20)}
    assert got == {"n0", "n1"}
    time.sleep(1.0)  # ten check intervals: still one error line per backend, no flapping
    for _ in range(20):
        stub.Unary(req(payload=b"y"), timeout=5)
    lines = UNIMPL_LINE.findall(slb.log())
    assert sorted(lines) == sorted((b.addr, "") for b in bes), lines
    assert metric(admin, "sidelb_health_check_unimplemented_total") == 2
    for b in bes:
        assert metric(admin, "sidelb_backend_health_check_off", b.addr) == 1
        assert metric(admin, "sidelb_backend_healthy", b.addr) == 1
    health = {x["address"]: x["health"] for x in json.loads(get(admin, "/clusters"))[0]["backends"]}
    assert health == {b.addr: "UNIMPLEMENTED" for b in bes}


@pytest.mark.timeout(60)
def test_backend_without_health_service_named_service():
    """A named service: the error line names it too."""
    b = peers.start_py_backend("n", extra_args=["--no-health"])
    cfg = simple_config([b.addr], health_check={"service": "sidelb.test.Echo", "interval_ms": 100})
    slb = start_sidelb(cfg)
    assert peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=5).backend_id == "n"
    assert UNIMPL_LINE.findall(slb.log()) == [(b.addr, "sidelb.test.Echo")]


@pytest.mark.timeout(60)
def test_backend_with_unknown_health_gets_no_calls_before_serving():
    good = peers.start_py_backend("good")
    late = peers.start_py_backend("late", extra_args=["--health-delay-ms", "1500"])
    cfg, admin = with_admin(simple_config([good.addr, late.addr],
                                          health_check={"interval_ms": 500, "timeout_ms": 3000}))
    slb = start_sidelb(cfg)
    t0 = time.monotonic()
    stub = peers.echo_stub(slb.addr)
    seen = set()
    while time.monotonic() - t0 < 1.0:  # well before late's first answer (1.5 s)
        seen.add(stub.Unary(req(payload=b"x"), timeout=5).backend_id)
    assert seen == {"good"}
    assert metric(admin, "sidelb_backend_health_pending", late.addr) == 1
    assert late.stats()["by_method"]["Unary"] == 0
    # once it answers SERVING it takes its share
    wait_for(lambda: stub.Unary(req(payload=b"y"), timeout=5).backend_id == "late", 5, "late to take calls")
    assert time.monotonic() - t0 >= 1.3
    assert metric(admin, "sidelb_backend_health_pending", late.addr) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wait_for_ready", [None, False])
def test_call_waits_for_first_health_answer(wait_for_ready):
    """The only backend's health is not known yet: the call waits (woken by
    the first answer) instead of going to it unchecked, also without
    wait-for-ready (gRPC queues calls while a subchannel is CONNECTING)."""
    late = peers.start_py_backend("late", extra_args=["--health-delay-ms", "1000"])
    extra = {}
    if wait_for_ready is not None:
        extra["service_config"] = {"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}],
                                                     "waitForReady": wait_for_ready}]}
    cfg = simple_config([late.addr], health_check={"interval_ms": 500, "timeout_ms": 3000}, **extra)
    slb = start_sidelb(cfg)
    t0 = time.monotonic()
    r = peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=5)
    elapsed = time.monotonic() - t0
    assert r.backend_id == "late"
    # the check started before "ready"; its answer comes 1 s after it asked
    assert 0.6 <= elapsed < 2.0, elapsed


@pytest.mark.timeout(60)
def test_reload_keeps_calls_flowing():
    """After SIGHUP the new server's backends start PENDING; their checks
    start at once, so calls wait only for the first answers (milliseconds)."""
    bes = [peers.start_py_backend("r%d" % i) for i in range(2)]
    cfg = simple_config([b.addr for b in bes], health_check={"interval_ms": 500, "timeout_ms": 1000})
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    lat, errors = [], []
    stop = threading.Event()

    def app():
        while not stop.is_set():
            t = time.monotonic()
            try:
                stub.Unary(req(payload=b"x"), timeout=2)
                lat.append((t, time.monotonic() - t))
            except grpc.RpcError as e:
                errors.append(e.code())
            time.sleep(0.005)

    th = threading.Thread(target=app)
    th.start()
    time.sleep(0.5)
    t_reload = time.monotonic()
    slb.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in slb.log(), 5, "the reload")
    time.sleep(1.0)
    stop.set()
    th.join(10)
    assert errors == []
    after = [d for t, d in lat if t >= t_reload]
    assert len(after) > 20
    print("reload: %d calls after SIGHUP, max latency %.1f ms" % (len(after), 1000 * max(after)))
    assert max(after) < 0.5


@pytest.mark.timeout(60)
def test_no_wait_for_ready_fails_once_first_answer_is_not_serving():
    """waitForReady false: the call waits only for the first answer; when that
    is NOT_SERVING it fails at once (not after the check's timeout_ms)."""
    bad = peers.start_py_backend("bad", extra_args=["--health", "NOT_SERVING", "--health-delay-ms", "800"])
    sc = {"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}], "waitForReady": False}]}
    cfg = simple_config([bad.addr], health_check={"interval_ms": 500, "timeout_ms": 3000}, service_config=sc)
    slb = start_sidelb(cfg)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=10)
    elapsed = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert 0.4 <= elapsed < 1.8, elapsed
    assert bad.stats()["by_method"]["Unary"] == 0
