"""Retries from gRPC's service config (gRFC A6), done by sidelb for every app."""

import collections
import time

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb


def service_config(codes=("UNAVAILABLE",), attempts=3, initial="0.01s", maximum="0.05s"):
    return {"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}],
                              "retryPolicy": {"maxAttempts": attempts, "initialBackoff": initial,
                                              "maxBackoff": maximum, "backoffMultiplier": 2,
                                              "retryableStatusCodes": list(codes)}}]}


def test_unavailable_backend_is_retried_elsewhere():
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14"])
    good = [peers.start_c_backend("good%d" % i) for i in range(2)]
    slb = start_sidelb(simple_config([bad.addr] + [g.addr for g in good], service_config=service_config()))
    stub = peers.echo_stub(slb.addr)
    c = collections.Counter(stub.Unary(req(payload=b"r"), timeout=5).backend_id for _ in range(30))
    assert sum(c.values()) == 30 and "bad" not in c
    assert bad.stats()["calls"] >= 5  # it was tried, and its failures were hidden by retries


def test_without_retry_policy_the_failure_reaches_the_app():
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14"])
    good = peers.start_c_backend("good")
    slb = start_sidelb(simple_config([bad.addr, good.addr]))
    stub = peers.echo_stub(slb.addr)
    codes = collections.Counter()
    for _ in range(10):
        try:
            stub.Unary(req(payload=b"r"), timeout=5)
            codes["OK"] += 1
        except grpc.RpcError as e:
            codes[e.code()] += 1
            assert e.details() == "backend bad broken"
    assert codes == {"OK": 5, grpc.StatusCode.UNAVAILABLE: 5}


def test_non_retryable_status_is_not_retried():
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "13"])
    slb = start_sidelb(simple_config([bad.addr, peers.start_c_backend("good").addr],
                                     service_config=service_config()))
    stub = peers.echo_stub(slb.addr)
    seen = collections.Counter()
    for _ in range(10):
        try:
            seen[stub.Unary(req(payload=b"r"), timeout=5).backend_id] += 1
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INTERNAL
            seen["INTERNAL"] += 1
    assert seen == {"good": 5, "INTERNAL": 5}
    assert bad.stats()["calls"] == 5


def test_max_attempts_is_honoured():
    bads = [peers.start_c_backend("bad%d" % i, extra_args=["--fail-status", "14"]) for i in range(4)]
    slb = start_sidelb(simple_config([b.addr for b in bads], service_config=service_config(attempts=3)))
    stub = peers.echo_stub(slb.addr)
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"r"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sum(b.stats()["calls"] for b in bads) == 3  # one call, three attempts, three different backends
    assert sorted(b.stats()["calls"] for b in bads) == [0, 1, 1, 1]


def test_backend_dying_before_it_answers_is_retried():
    slow = peers.start_c_backend("dies", extra_args=["--extra-delay-ms", "1000"])
    good = peers.start_c_backend("good")
    slb = start_sidelb(simple_config([slow.addr, good.addr], service_config=service_config()))
    stub = peers.echo_stub(slb.addr)
    futs = [stub.Unary.future(req(payload=b"%d" % i), timeout=10) for i in range(6)]
    time.sleep(0.3)
    slow.kill9()
    results = [f.result() for f in futs]
    assert [r.payload for r in results] == [b"%d" % i for i in range(6)]
    assert {r.backend_id for r in results} == {"good"}


@pytest.mark.serial  # a 300 ms deadline held within 1 s
def test_retry_respects_the_deadline():
    bads = [peers.start_c_backend("bad%d" % i, extra_args=["--fail-status", "14"]) for i in range(3)]
    slb = start_sidelb(simple_config([b.addr for b in bads],
                                     service_config=service_config(attempts=5, initial="1s", maximum="1s")))
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"r"), timeout=0.3)
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert time.monotonic() - t0 < 1.0


def test_streaming_response_started_is_not_retried():
    """Once response headers reached the app, a failure is final (A6 commit)."""
    be = peers.start_c_backend("stream")
    slb = start_sidelb(simple_config([be.addr], service_config=service_config()))
    stub = peers.echo_stub(slb.addr)
    # ~100 MB: flow control holds the backend back, so it is still sending when killed (10 ms apart,
    # tiny messages were all sent before the kill on a loaded machine: the stream then ended OK)
    it = stub.ServerStream(req(payload=b"z", response_count=100000, response_size=1024, delay_ms=10), timeout=10)
    next(it)
    be.kill9()
    with pytest.raises(grpc.RpcError) as e:
        for _ in it:
            pass
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_large_request_beyond_the_retry_buffer_is_not_retried():
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14"])
    good = peers.start_c_backend("good")
    slb = start_sidelb(simple_config([bad.addr, good.addr], service_config=service_config()))
    stub = peers.echo_stub(slb.addr)
    big = b"B" * (1024 * 1024)
    outcomes = collections.Counter()
    for _ in range(4):
        try:
            stub.Unary(req(payload=big), timeout=10)
            outcomes["ok"] += 1
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            outcomes["failed"] += 1
    assert outcomes == {"ok": 2, "failed": 2}


def test_retry_throttling_stops_retries_when_most_attempts_fail():
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14"])
    good = peers.start_c_backend("good")
    sc = service_config()
    sc["retryThrottling"] = {"maxTokens": 4, "tokenRatio": 0.1}
    slb = start_sidelb(simple_config([bad.addr, good.addr], service_config=sc))
    stub = peers.echo_stub(slb.addr)
    outcomes = collections.Counter()
    for _ in range(20):
        try:
            stub.Unary(req(payload=b"r"), timeout=5)
            outcomes["ok"] += 1
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            outcomes["failed"] += 1
    # the first two failures are retried (tokens 4 -> 3 -> 2); then tokens stay at or below half,
    # so the failing half of the calls reaches the app
    assert outcomes["failed"] >= 5, outcomes
    assert outcomes["ok"] >= 10, outcomes
