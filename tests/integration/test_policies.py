"""Policies, active health and outlier ejection through sidelb, with real backends."""

import collections
import threading
import time

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb


def spread(stub, n, **kw):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5, **kw).backend_id for _ in range(n))


@pytest.mark.serial  # health changes seen within fixed 1 s sleeps
def test_not_serving_backend_gets_no_calls_within_1s_and_returns():
    bes = [peers.start_c_backend("h%d" % i) for i in range(3)]
    cfg = simple_config([b.addr for b in bes], health_check={"service": "", "interval_ms": 500, "timeout_ms": 500})
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    time.sleep(0.3)
    assert set(spread(stub, 30)) == {"h0", "h1", "h2"}
    bes[1].set_health(False)
    time.sleep(1.0)
    c = spread(stub, 60)
    assert "h1" not in c and sum(c.values()) == 60
    bes[1].set_health(True)
    time.sleep(1.0)
    assert spread(stub, 30)["h1"] == 10


@pytest.mark.serial  # the first health answer within a fixed 0.5 s sleep
def test_backend_not_serving_at_start_is_skipped():
    good = peers.start_c_backend("good")
    bad = peers.start_c_backend("bad", extra_args=["--health", "NOT_SERVING"])
    cfg = simple_config([good.addr, bad.addr], health_check={"service": "", "interval_ms": 500})
    slb = start_sidelb(cfg)
    time.sleep(0.5)
    assert spread(peers.echo_stub(slb.addr), 20) == {"good": 20}


@pytest.mark.serial  # a health Check round within a fixed 1.3 s sleep
def test_check_fallback_when_watch_unimplemented():
    a = peers.start_c_backend("a", extra_args=["--health-unimplemented-watch"])
    b = peers.start_c_backend("b", extra_args=["--health-unimplemented-watch"])
    cfg = simple_config([a.addr, b.addr], health_check={"service": "", "interval_ms": 300, "timeout_ms": 300})
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    time.sleep(0.5)
    a.set_health(False)
    time.sleep(1.3)
    assert spread(stub, 20) == {"b": 20}


def _concurrent_spread(stub, n, parallel):
    counts = collections.Counter()
    lock = threading.Lock()
    todo = list(range(n))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            r = stub.Unary(req(payload=b"x"), timeout=20)
            with lock:
                counts[r.backend_id] += 1

    ts = [threading.Thread(target=worker) for _ in range(parallel)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return counts


@pytest.mark.serial  # shares that follow latencies
@pytest.mark.timeout(90)
def test_least_request_sends_far_fewer_calls_to_a_slow_backend():
    fast = [peers.start_c_backend("fast%d" % i) for i in range(2)]
    slow = peers.start_c_backend("slow", extra_args=["--extra-delay-ms", "200"])
    addrs = [fast[0].addr, slow.addr, fast[1].addr]
    rr = start_sidelb(simple_config(addrs))
    lr = start_sidelb(simple_config(addrs, policy="least_request", policy_options={"choice_count": 2}))
    rr_counts = _concurrent_spread(peers.echo_stub(rr.addr), 150, 6)
    lr_counts = _concurrent_spread(peers.echo_stub(lr.addr), 150, 6)
    assert rr_counts["slow"] == 50  # round robin ignores load
    assert lr_counts["slow"] < rr_counts["slow"] / 2, (rr_counts, lr_counts)


def test_ring_hash_sticks_by_header():
    bes = [peers.start_c_backend("r%d" % i) for i in range(4)]
    slb = start_sidelb(simple_config([b.addr for b in bes], policy="ring_hash",
                                     policy_options={"hash_header": "x-user-id"}))
    stub = peers.echo_stub(slb.addr)
    seen = {}
    for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]:
        got = {stub.Unary(req(payload=b"x"), metadata=(("x-user-id", user),), timeout=5).backend_id
               for _ in range(10)}
        assert len(got) == 1, (user, got)
        seen[user] = got.pop()
    assert len(set(seen.values())) >= 2  # users spread over backends
    # no header: falls back to a random pick, and still works
    assert spread(stub, 20).total() == 20


def test_maglev_sticks_by_header():
    bes = [peers.start_c_backend("m%d" % i) for i in range(3)]
    slb = start_sidelb(simple_config([b.addr for b in bes], policy="maglev",
                                     policy_options={"hash_header": "x-user-id"}))
    stub = peers.echo_stub(slb.addr)
    for user in ["u1", "u2", "u3", "u4"]:
        got = {stub.Unary(req(payload=b"x"), metadata=(("x-user-id", user),), timeout=5).backend_id
               for _ in range(8)}
        assert len(got) == 1


def test_weighted_round_robin_honours_weights():
    a = peers.start_c_backend("w3")
    b = peers.start_c_backend("w1")
    cfg = simple_config([{"address": a.addr, "weight": 3}, {"address": b.addr, "weight": 1}],
                        policy="weighted_round_robin")
    slb = start_sidelb(cfg)
    assert spread(peers.echo_stub(slb.addr), 80) == {"w3": 60, "w1": 20}


@pytest.mark.serial  # a 1.5 s ejection over within a fixed 2 s sleep
def test_ejected_backend_comes_back_after_its_ejection_time():
    """A backend that answers UNAVAILABLE is ejected after consecutive failures, then returns."""
    good = peers.start_c_backend("good")
    flaky = peers.start_c_backend("flaky")
    cfg = simple_config([good.addr, flaky.addr],
                        outlier_detection={"consecutive_failures": 3, "base_ejection_ms": 1500,
                                           "max_ejection_percent": 50, "interval_ms": 1000})
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    # calls whose backend reply is UNAVAILABLE count as failures for that backend
    fails = collections.Counter()
    for _ in range(12):
        try:
            r = stub.Unary(req(payload=b"x", status_code=14, status_message="down"), timeout=5)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
    # both got 3+ failures but at most 50 % (one) may be ejected at once: exactly one is out now
    c = spread(stub, 10)
    assert len(c) == 1, c
    ejected = ({"good", "flaky"} - set(c)).pop()
    time.sleep(2.0)
    c = spread(stub, 10)
    assert c[ejected] == 5, (ejected, c)


def test_pick_first_uses_one_backend_until_it_fails():
    a = peers.start_c_backend("pf-a")
    b = peers.start_c_backend("pf-b")
    slb = start_sidelb(simple_config([a.addr, b.addr], policy="pick_first"))
    stub = peers.echo_stub(slb.addr)
    c = spread(stub, 20)
    assert len(c) == 1
    first = list(c)[0]
    (a if first == "pf-a" else b).kill9()
    time.sleep(0.2)
    c2 = spread(stub, 10)
    assert set(c2) == ({"pf-a", "pf-b"} - {first})


@pytest.mark.parametrize("policy", ["random", "weighted_random", "source_ip_hash", "least_request"])
def test_other_policies_serve_calls(policy):
    bes = [peers.start_c_backend("p%d" % i) for i in range(3)]
    slb = start_sidelb(simple_config([b.addr for b in bes], policy=policy))
    c = spread(peers.echo_stub(slb.addr), 60)
    assert sum(c.values()) == 60
    if policy == "source_ip_hash":
        assert len(c) == 1  # one client address
