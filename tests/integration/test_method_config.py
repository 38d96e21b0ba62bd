"""methodConfig settings sidelb applies (timeout, waitForReady, message
size limits) and the cluster's call limits."""

import time

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb

pytestmark = pytest.mark.serial  # deadlines and fail-fast bounds of 1-1.5 s, a 0.2 s head start (conftest.py)


def method_config(**fields):
    mc = {"name": [{"service": "sidelb.test.Echo"}]}
    mc.update(fields)
    return {"methodConfig": [mc]}


def test_method_timeout_reaches_the_backend_as_grpc_timeout():
    """The app sets no deadline; the method's timeout goes to the backend
    (grpcio enforces it there) and bounds the call."""
    be = peers.start_py_backend("py")
    slb = start_sidelb(simple_config([be.addr], service_config=method_config(timeout="0.3s")))
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x", delay_ms=3000))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.0
    assert stub.Unary(req(payload=b"fast")).payload == b"fast"


def test_shorter_app_deadline_wins_over_method_timeout():
    be = peers.start_py_backend("py")
    slb = start_sidelb(simple_config([be.addr], service_config=method_config(timeout="10s")))
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x", delay_ms=3000), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.0


def test_wait_for_ready_false_fails_fast():
    dead = "127.0.0.1:%d" % peers.free_port()
    slb = start_sidelb(simple_config([dead], wait_for_ready_ms=10000,
                                     service_config=method_config(waitForReady=False)))
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - t0 < 1.0


def test_wait_for_ready_true_waits_until_the_deadline():
    be = peers.start_c_backend("late")
    port = be.port
    slb = start_sidelb(simple_config([be.addr], wait_for_ready_ms=0, backoff={"initial_ms": 100, "max_ms": 200},
                                     service_config=method_config(waitForReady=True)))
    stub = peers.echo_stub(slb.addr)
    assert stub.Unary(req(payload=b"1"), timeout=5).payload == b"1"
    be.kill9()
    fut = stub.Unary.future(req(payload=b"2"), timeout=5)
    time.sleep(0.8)
    assert not fut.done()  # wait_for_ready_ms is 0, but the method says wait
    be.restart()
    assert be.port == port
    assert fut.result().payload == b"2"


def test_message_size_limits():
    be = peers.start_c_backend("sz")
    slb = start_sidelb(simple_config([be.addr], service_config=method_config(
        maxRequestMessageBytes=1000, maxResponseMessageBytes=2000)))
    stub = peers.echo_stub(slb.addr)
    assert stub.Unary(req(payload=b"a" * 500), timeout=5).payload == b"a" * 500
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"a" * 5000), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maxRequestMessageBytes" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"a", response_size=10000), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "maxResponseMessageBytes" in e.value.details()
    # a stream of small messages passes, one big one in the middle does not
    replies = list(stub.Bidi(iter([req(payload=b"s" * 100)] * 20), timeout=5))
    assert len(replies) == 20
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Bidi(iter([req(payload=b"s")] * 3 + [req(payload=b"B" * 4000)]), timeout=5))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert slb.alive()


def test_max_calls_limits_calls_in_flight():
    be = peers.start_c_backend("busy")
    # max_calls is split per worker loop (1 each with 2) and one app connection is on one loop
    slb = start_sidelb(dict(simple_config([be.addr], max_calls=2), workers=1))
    stub = peers.echo_stub(slb.addr)
    futs = [stub.Unary.future(req(payload=b"x", delay_ms=500), timeout=5) for _ in range(2)]
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x"), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_calls" in e.value.details()
    assert [f.result().payload for f in futs] == [b"x", b"x"]
    assert stub.Unary(req(payload=b"y"), timeout=5).payload == b"y"  # room again


def test_max_waiting_calls_bounds_the_wait_queue():
    dead = "127.0.0.1:%d" % peers.free_port()
    slb = start_sidelb(simple_config([dead], wait_for_ready_ms=2000, max_waiting_calls=1))
    stub = peers.echo_stub(slb.addr)
    first = stub.Unary.future(req(payload=b"x"), timeout=5)
    time.sleep(0.3)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x"), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - t0 < 1.0
    with pytest.raises(grpc.RpcError) as e:
        first.result()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_sidelb_enforces_the_deadline_when_the_backend_ignores_it():
    """Our C backend ignores grpc-timeout: sidelb ends the call itself at the
    method's timeout and cancels the backend's stream."""
    be = peers.start_c_backend("slowpoke")
    slb = start_sidelb(simple_config([be.addr], service_config=method_config(timeout="0.3s")))
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x", delay_ms=3000))
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 < time.monotonic() - t0 < 1.5
    assert be.wait_stats(lambda s: s.get("cancelled", 0) == 1, timeout=3)
    # a stream whose response is under way ends with DEADLINE_EXCEEDED trailers
    def slow_requests():
        for i in range(30):
            yield req(payload=b"%d" % i)
            time.sleep(0.1)

    got = []
    with pytest.raises(grpc.RpcError) as e:
        for r in stub.Bidi(slow_requests()):
            got.append(r.payload)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1 <= len(got) < 10  # replies flowed until the deadline
    assert slb.alive()
