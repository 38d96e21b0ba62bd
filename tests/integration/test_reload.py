"""SIGHUP reloads the config file without dropping calls, connections in
the listen backlog or registrations."""

import collections
import json
import signal
import threading
import time
import urllib.request

import pytest

import peers
from etcd_harness import EtcdServer
from peers import req
from sidelb_harness import simple_config, start_sidelb, with_test_workers


def rewrite(slb, cfg):
    with open(slb.config_path, "w") as f:
        json.dump(with_test_workers(cfg), f)


def hup_and_wait(slb, count):
    slb.signal(signal.SIGHUP)
    EtcdServer.wait_for(lambda: slb.log().count("reloaded") >= count or "reload:" in slb.log(), 5,
                        what="the reload")


def spread(stub, n=20):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(n))


def settles_to(stub, expected, timeout=2.0):
    """Calls sent just after SIGHUP may still be taken by the old server
    (graceful: its GOAWAY is on the way); within moments all go the new way."""
    end = time.monotonic() + timeout
    while True:
        got = spread(stub, sum(expected.values()))
        if got == expected:
            return
        assert time.monotonic() < end, "after the reload calls went %r" % got
        time.sleep(0.05)


def test_reload_switches_backends_and_keeps_calls_in_flight():
    a, b, c = (peers.start_c_backend(n) for n in ("a", "b", "c"))
    cfg = simple_config([a.addr, b.addr])
    port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    assert spread(stub) == {"a": 10, "b": 10}
    slow = stub.Unary.future(req(payload=b"slow", delay_ms=800), timeout=10)
    time.sleep(0.2)
    rewrite(slb, simple_config([c.addr], port=port))
    hup_and_wait(slb, 1)
    assert slow.result().payload == b"slow"  # finished on the old server
    settles_to(stub, {"c": 20})  # the same channel, now on the new server
    assert "(kept)" in slb.log()  # the listening socket was taken over, not rebound
    assert slb.alive()


def test_bad_config_on_reload_keeps_the_running_one():
    a = peers.start_c_backend("a")
    cfg = simple_config([a.addr])
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    assert spread(stub, 5) == {"a": 5}
    with open(slb.config_path, "w") as f:
        f.write('{"listeners": [], "clusters": [], "oops": 1}')
    slb.signal(signal.SIGHUP)
    EtcdServer.wait_for(lambda: "reload:" in slb.log(), 5, what="the reload error")
    assert "still running the previous config" in slb.log()
    assert spread(stub, 5) == {"a": 5}
    # a listener that cannot bind fails the reload too, cleanly
    busy = peers.start_c_backend("busy")
    bad = simple_config([a.addr], port=slb.port)
    bad["listeners"].append({"address": busy.addr, "routes": [{"service": "x.Y", "cluster": "echo"}]})
    rewrite(slb, bad)
    slb.signal(signal.SIGHUP)
    EtcdServer.wait_for(lambda: slb.log().count("reload:") >= 2, 5, what="the second reload error")
    assert spread(stub, 5) == {"a": 5}
    # fixed file: the next SIGHUP applies it
    b = peers.start_c_backend("b")
    rewrite(slb, simple_config([b.addr], port=slb.port))
    hup_and_wait(slb, 1)
    settles_to(stub, {"b": 5})


def test_reload_adds_and_removes_listeners_and_keeps_admin():
    a = peers.start_c_backend("a")
    admin = peers.free_port()
    cfg = simple_config([a.addr])
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin}
    slb = start_sidelb(cfg)
    second = peers.free_port()
    new = simple_config([a.addr])
    new["listeners"][0]["address"] = "127.0.0.1:%d" % second
    new["admin"] = cfg["admin"]
    rewrite(slb, new)
    hup_and_wait(slb, 1)
    assert peers.echo_stub("127.0.0.1:%d" % second).Unary(req(payload=b"n"), timeout=5).payload == b"n"
    EtcdServer.wait_for(lambda: not peers.wait_port(slb.port, 0.1), 5, what="the old listener to close")
    body = urllib.request.urlopen("http://127.0.0.1:%d/healthz" % admin, timeout=5).read()
    assert body == b"ok\n"


@pytest.mark.timeout(60)
def test_registrations_survive_a_reload_and_removed_ones_go():
    etcd = EtcdServer()
    try:
        a = peers.start_c_backend("a")
        b = peers.start_c_backend("b")
        cfg = simple_config([a.addr])
        cfg["etcd"] = {"endpoints": [etcd.url]}
        cfg["register"] = [{"prefix": "/svc/", "address": a.addr, "ttl_s": 2},
                           {"prefix": "/svc/", "address": b.addr, "ttl_s": 2}]
        slb = start_sidelb(cfg)
        EtcdServer.wait_for(lambda: len(etcd.range_prefix("/svc/")) == 2, 5, what="registrations")
        missing = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                if etcd.get("/svc/" + a.addr) is None:
                    missing.append(time.monotonic())
                time.sleep(0.005)

        t = threading.Thread(target=watch)
        t.start()
        new = json.loads(json.dumps(cfg))
        new["register"] = new["register"][:1]  # b is no longer registered
        new["listeners"][0]["address"] = "127.0.0.1:%d" % slb.port
        rewrite(slb, new)
        hup_and_wait(slb, 1)
        EtcdServer.wait_for(lambda: etcd.get("/svc/" + b.addr) is None, 3, what="b's key revoked")
        time.sleep(2.5)  # past the old lease's TTL: a's key lives on under the new lease
        stop.set()
        t.join()
        assert missing == [], "a's key was missing %d times during the reload" % len(missing)
        assert etcd.get("/svc/" + a.addr) == a.addr
        assert slb.stop(timeout=10) == 0
        EtcdServer.wait_for(lambda: etcd.range_prefix("/svc/") == {}, 2, what="keys revoked at exit")
    finally:
        etcd.destroy()


@pytest.mark.timeout(60)
def test_reload_changes_the_number_of_workers():
    """docs/config.md: "workers may change on a reload". 1 -> 2 -> 1 worker
    loops, each time with a call in flight that finishes on the old server and
    new calls that settle on the new one; then a clean stop."""
    a, b = peers.start_c_backend("a"), peers.start_c_backend("b")
    cfg = dict(simple_config([a.addr]), workers=1)
    port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    assert spread(stub) == {"a": 20}
    for n, (workers, backend) in enumerate([(2, b), (1, a)], start=1):
        slow = stub.Unary.future(req(payload=b"slow", delay_ms=800), timeout=10)
        time.sleep(0.2)
        rewrite(slb, dict(simple_config([backend.addr], port=port), workers=workers))
        hup_and_wait(slb, n)
        assert "reload:" not in slb.log(), slb.log()
        assert slow.result().payload == b"slow"  # finished on the old server
        settles_to(stub, {backend.id: 20})
        # several app connections at once: with 2 workers each takes some
        stubs = [peers.echo_stub(peers.channel(slb.addr, **{"grpc.use_local_subchannel_pool": 1})) for _ in range(4)]
        assert all(s.Unary(req(payload=b"x"), timeout=5).backend_id == backend.id for s in stubs)
    assert "2 worker loops started" in slb.log()
    assert slb.stop() == 0
