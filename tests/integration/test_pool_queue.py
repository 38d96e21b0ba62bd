"""The pool wait queue (calls waiting for a stream slot on a backend's
connections) is bounded and timed; a backend that allows 0 concurrent
streams holds no call; backend connections are recycled after
max_requests_per_connection calls or max_connection_age_ms."""

import time

import grpc
import pytest

import peers
from peers import req, wait_for
from sidelb_harness import simple_config, start_sidelb, start_with_admin_listener
from test_admin import metric, metrics


@pytest.mark.timeout(40)
def test_backend_allowing_no_streams_holds_no_call():
    """MAX_CONCURRENT_STREAMS 0 beside a healthy backend: every call, none
    with a deadline, is served by the healthy one; on main half of them
    parked in the first backend's pool queue forever."""
    zero = peers.start_c_backend("zero", extra_args=["--max-concurrent-streams", "0"])
    ok = peers.start_c_backend("ok")
    slb = start_sidelb(simple_config([zero.addr, ok.addr]))
    stub = peers.echo_stub(slb.addr)
    futs = [stub.Unary.future(req(payload=b"x")) for _ in range(20)]
    end = time.monotonic() + 10
    for f in futs:
        # no deadline on the call: this wait only bounds the test
        assert f.result(timeout=max(0.1, end - time.monotonic())).backend_id == "ok"
    assert zero.stats()["calls"] == 0
    assert "SETTINGS_MAX_CONCURRENT_STREAMS 0" in slb.log()
    assert slb.alive()


@pytest.mark.timeout(40)
def test_only_a_backend_allowing_no_streams_fails_calls_fast():
    zero = peers.start_c_backend("zero", extra_args=["--max-concurrent-streams", "0"])
    slb = start_with_admin_listener(simple_config([zero.addr], wait_for_ready_ms=500))
    stub = peers.echo_stub(slb.addr)
    for _ in range(3):
        t0 = time.monotonic()
        fut = stub.Unary.future(req(payload=b"x"))  # no deadline
        try:
            fut.result(timeout=10)
        except grpc.FutureTimeoutError:
            fut.cancel()
            pytest.fail("the call hung on a backend that allows no streams")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        else:
            pytest.fail("a backend that allows no streams served a call")
        assert time.monotonic() - t0 < 3, "wait_for_ready_ms is 500"
    assert zero.stats()["calls"] == 0
    assert metric(slb, "sidelb_upstream_no_streams_total") >= 1
    assert slb.alive()


def slot_taken(slb, be):
    """One call on the backend, sent (not waiting in the pool)."""
    m = metrics(slb)
    lab = frozenset({("cluster", "echo"), ("backend", be.addr)})
    return m.get(("sidelb_backend_outstanding_calls", lab)) == 1 and m.get(("sidelb_backend_queued_calls", lab)) == 0


def saturated_backend():
    """One stream slot (MAX_CONCURRENT_STREAMS 1) and one connection."""
    return peers.start_c_backend("sat", extra_args=["--max-concurrent-streams", "1"])


@pytest.mark.serial  # refusal within 0.5 s, queue timeout 0.5-2.5 s
@pytest.mark.timeout(40)
def test_pool_queue_bound_and_timeout():
    sat = saturated_backend()
    # workers 1: max_pending_per_backend is split per worker loop (1 each with 2), the app's calls are on one loop
    slb = start_with_admin_listener(dict(simple_config([sat.addr], max_connections_per_backend=1,
                                                       max_pending_per_backend=2, queue_timeout_ms=600), workers=1))
    stub = peers.echo_stub(slb.addr)
    busy = stub.Unary.future(req(payload=b"x", delay_ms=4000), timeout=20)  # holds the only slot
    wait_for(lambda: slot_taken(slb, sat), what="the slow call to take the slot")
    t0 = time.monotonic()
    queued = [stub.Unary.future(req(payload=b"x"), timeout=20) for _ in range(2)]
    wait_for(lambda: metric(slb, "sidelb_backend_queued_calls", cluster="echo", backend=sat.addr) == 2,
             what="2 queued calls")
    # the queue is full: the next call fails at once
    t1 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x"), timeout=20)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert "max_pending_per_backend (2)" in e.value.details()
    assert time.monotonic() - t1 < 0.5
    # the queued ones fail after queue_timeout_ms, long before their deadline or the slot frees
    for f in queued:
        with pytest.raises(grpc.RpcError) as e:
            f.result()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert "queue_timeout_ms (600)" in e.value.details()
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 2.5, "queue_timeout_ms is 600, the calls waited %.2f s" % waited
    assert busy.result().payload == b"x"
    m = metrics(slb)
    assert m[("sidelb_upstream_queue_overflows_total", frozenset())] == 1
    assert m[("sidelb_upstream_queue_timeouts_total", frozenset())] == 2
    assert m[("sidelb_backend_queued_calls", frozenset({("cluster", "echo"), ("backend", sat.addr)}))] == 0
    assert sat.stats()["calls"] == 1
    log = slb.log()
    assert log.count("max_pending_per_backend (2) calls waiting") == 1
    assert log.count("within queue_timeout_ms (600)") == 1, "one line per kind, rate-limited"


@pytest.mark.serial  # calls moved within 2.5 s
@pytest.mark.timeout(40)
def test_pool_turns_calls_away_to_another_backend():
    """Overflow and queue timeout are transparent retries: the call never
    reached the saturated backend, so it goes to one it has not tried."""
    sat = saturated_backend()
    ok = peers.start_c_backend("ok")
    # workers 1: max_pending_per_backend is split per worker loop (1 each with 2), the app's calls are on one loop
    slb = start_with_admin_listener(dict(simple_config([sat.addr, ok.addr], policy="pick_first",
                                                       max_connections_per_backend=1, max_pending_per_backend=2,
                                                       queue_timeout_ms=600), workers=1))
    stub = peers.echo_stub(slb.addr)
    busy = stub.Unary.future(req(payload=b"x", delay_ms=4000), timeout=20)
    wait_for(lambda: slot_taken(slb, sat), what="the slow call to take the slot")
    t0 = time.monotonic()
    queued = [stub.Unary.future(req(payload=b"x"), timeout=20) for _ in range(2)]
    wait_for(lambda: metric(slb, "sidelb_backend_queued_calls", cluster="echo", backend=sat.addr) == 2,
             what="2 queued calls")
    assert stub.Unary(req(payload=b"x"), timeout=20).backend_id == "ok"  # overflow: elsewhere
    for f in queued:
        assert f.result().backend_id == "ok"  # after the queue timeout: elsewhere
    assert time.monotonic() - t0 < 2.5
    assert busy.result().backend_id == "sat"
    m = metrics(slb)
    assert m[("sidelb_upstream_queue_overflows_total", frozenset())] == 1
    assert m[("sidelb_upstream_queue_timeouts_total", frozenset())] == 2
    assert m[("sidelb_calls_failed_local_total", frozenset())] == 0


@pytest.mark.timeout(40)
def test_max_requests_per_connection_recycles_connections():
    be = peers.start_c_backend("b")
    slb = start_with_admin_listener(simple_config([be.addr], max_requests_per_connection=10))
    stub = peers.echo_stub(slb.addr)
    for i in range(35):
        assert stub.Unary(req(payload=b"%d" % i), timeout=5).payload == b"%d" % i
    st = be.wait_stats(lambda s: s["calls"] == 35)
    assert st["ok"] == 35 and st["failed"] == 0 and st["cancelled"] == 0
    assert st["connections"] >= 4, st
    assert metric(slb, "sidelb_upstream_connections_recycled_total") >= 3
    # the drained connections closed once their calls were done
    wait_for(lambda: metric(slb, "sidelb_backend_connections", cluster="echo", backend=be.addr) == 1,
             what="one connection left")


@pytest.mark.timeout(40)
def test_max_connection_age_recycles_connections_even_idle_ones():
    be = peers.start_c_backend("b")
    slb = start_with_admin_listener(simple_config([be.addr], max_connection_age_ms=300))
    stub = peers.echo_stub(slb.addr)
    futs = []
    end = time.monotonic() + 1.5
    while time.monotonic() < end:  # calls in flight across the recycling
        futs.append(stub.Unary.future(req(payload=b"x", delay_ms=50), timeout=5))
        time.sleep(0.02)
    for f in futs:
        assert f.result().payload == b"x"
    assert be.stats()["connections"] >= 3
    assert metric(slb, "sidelb_upstream_connections_recycled_total") >= 2
    # an idle connection past its age closes too (no call needs a replacement)
    wait_for(lambda: metric(slb, "sidelb_backend_connections", cluster="echo", backend=be.addr) == 0,
             what="the idle connection to close at its age")
