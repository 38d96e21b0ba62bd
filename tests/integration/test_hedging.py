"""gRFC A6 hedging, pushback, grpc-previous-rpc-attempts and perAttemptRecvTimeout, done by sidelb
for every app: real sidelb, C test backends (tests/backend/), a grpcio client."""

import collections
import threading
import time

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb, start_with_admin_listener
from test_admin import metric

pytestmark = pytest.mark.serial  # hedging p99 < 200 ms, outcomes within 0.9 s (conftest.py)


def hedging_config(attempts=3, delay="0.05s", non_fatal=None):
    policy = {"maxAttempts": attempts, "hedgingDelay": delay}
    if non_fatal is not None:
        policy["nonFatalStatusCodes"] = list(non_fatal)
    return {"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}], "hedgingPolicy": policy}]}


def retry_config(attempts=3, codes=("UNAVAILABLE",), initial="0.01s", per_attempt=None):
    policy = {"maxAttempts": attempts, "initialBackoff": initial, "maxBackoff": initial,
              "backoffMultiplier": 1, "retryableStatusCodes": list(codes)}
    if per_attempt is not None:
        policy["perAttemptRecvTimeout"] = per_attempt
    return {"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}], "retryPolicy": policy}]}


def outcome(stub, timeout=5):
    """(code name, backend id or details, seconds) of one Unary call."""
    t0 = time.monotonic()
    try:
        r = stub.Unary(req(payload=b"h"), timeout=timeout)
        return "OK", r.backend_id, time.monotonic() - t0
    except grpc.RpcError as e:
        return e.code().name, e.details(), time.monotonic() - t0


def run_concurrently(stub, n, in_flight, timeout):
    """n Unary calls, at most in_flight at once; returns their latencies (s) and status counts."""
    lock = threading.Lock()
    done = threading.Event()
    sem = threading.Semaphore(in_flight)
    latencies, codes = [], collections.Counter()

    def finished(fut, t0):
        dt = time.monotonic() - t0
        code = fut.code()
        with lock:
            latencies.append(dt)
            codes[code.name] += 1
            if len(latencies) == n:
                done.set()
        sem.release()

    for i in range(n):
        sem.acquire()
        t0 = time.monotonic()
        fut = stub.Unary.future(req(payload=b"%d" % i), timeout=timeout)
        fut.add_done_callback(lambda f, t0=t0: finished(f, t0))
    assert done.wait(120), "calls did not finish: %d of %d" % (len(latencies), n)
    return sorted(latencies), codes


def test_slow_backend_is_hedged_and_its_attempts_cancelled():
    # the scenario: one of three backends answers in 1 s, hedging delay 50 ms
    slow = peers.start_c_backend("slow", extra_args=["--extra-delay-ms", "1000"])
    fast = [peers.start_c_backend("fast%d" % i) for i in range(2)]
    cfg = simple_config([slow.addr] + [f.addr for f in fast],
                        service_config=hedging_config(attempts=3, delay="0.05s"))
    slb = start_with_admin_listener(cfg)
    stub = peers.echo_stub(slb.addr)
    outcome(stub)  # connections up
    t0 = time.monotonic()
    latencies, codes = run_concurrently(stub, 1000, in_flight=10, timeout=10)
    wall = time.monotonic() - t0
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print("hedging: p50 %.3f s, p99 %.3f s, max %.3f s, wall %.1f s" % (latencies[499], p99, latencies[-1], wall))
    assert codes == {"OK": 1000}
    slow_calls = slow.stats()["calls"]
    assert slow_calls >= 150, "round robin sends about a third of the first attempts to the slow backend"
    # none of the slow backend's answers were waited for: p99 is the hedging delay plus a fast answer
    assert p99 < 0.2, "p99 %.3f s (median %.3f s, wall %.1f s)" % (p99, latencies[500], wall)
    # every attempt it got was cancelled when a hedge answered (RST_STREAM CANCEL reached it)
    st = slow.wait_stats(lambda s: s["cancelled"] >= slow_calls - 5 and s["active"] == 0, timeout=10)
    assert st["ok"] <= 5
    # the hedges carried grpc-previous-rpc-attempts
    retried = sum(f.stats()["retried"] for f in fast)
    assert retried >= st["cancelled"] - 5
    assert max(f.stats()["max_previous_attempts"] for f in fast) in (1, 2)
    cancelled = metric(slb, "sidelb_hedges_cancelled_total")
    assert cancelled >= st["cancelled"]
    assert metric(slb, "sidelb_hedged_attempts_total") >= cancelled


def test_non_fatal_status_sends_the_next_hedge_at_once():
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "13"])
    good = peers.start_c_backend("good", extra_args=["--extra-delay-ms", "100"])
    slb = start_sidelb(simple_config([bad.addr, good.addr],
                                     service_config=hedging_config(attempts=2, delay="1s",
                                                                   non_fatal=["INTERNAL"])))
    stub = peers.echo_stub(slb.addr)
    results = [outcome(stub) for _ in range(10)]
    assert all(r[:2] == ("OK", "good") for r in results), results
    # the calls whose first attempt hit the failing backend did not wait for the 1 s hedging delay
    assert bad.stats()["calls"] >= 2
    assert max(r[2] for r in results) < 0.9, results


def test_fatal_status_commits_and_cancels_the_other_attempts():
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "13"])
    good = peers.start_c_backend("good", extra_args=["--extra-delay-ms", "1000"])
    slb = start_sidelb(simple_config([bad.addr, good.addr],
                                     service_config=hedging_config(attempts=2, delay="0.05s",
                                                                   non_fatal=["UNAVAILABLE"])))
    stub = peers.echo_stub(slb.addr)
    results = [outcome(stub) for _ in range(10)]
    # INTERNAL is fatal: whichever attempt went first, the call ends with it, well before the slow answer
    assert all(r[:2] == ("INTERNAL", "backend bad broken") for r in results), results
    assert max(r[2] for r in results) < 0.9, results
    assert good.stats()["calls"] >= 2
    good.wait_stats(lambda s: s["cancelled"] == s["calls"] and s["active"] == 0, timeout=10)


def test_hedging_pushback_dont_retry_stops_the_hedges():
    def failures(pushback):
        bad_args = ["--fail-status", "14"] + (["--pushback-ms", pushback] if pushback else [])
        bad = peers.start_c_backend("bad", extra_args=bad_args)
        good = peers.start_c_backend("good", extra_args=["--extra-delay-ms", "200"])
        slb = start_sidelb(simple_config([bad.addr, good.addr],
                                         service_config=hedging_config(attempts=2, delay="1s",
                                                                       non_fatal=["UNAVAILABLE"])))
        stub = peers.echo_stub(slb.addr)
        results = collections.Counter(outcome(stub)[0] for _ in range(12))
        return results, bad.stats()["calls"]

    results, bad_calls = failures(None)
    assert results == {"OK": 12}
    # "-1": the server asks for no more attempts: a call whose first attempt it answered fails
    results, bad_calls = failures("-1")
    assert results["UNAVAILABLE"] >= 1 and results["UNAVAILABLE"] + results["OK"] == 12, results
    assert results["UNAVAILABLE"] <= bad_calls


def test_retry_pushback_delay_and_dont_retry():
    # a retry after a pushback of 500 ms waits that long, not initialBackoff (10 ms)
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14", "--pushback-ms", "500"])
    good = peers.start_c_backend("good")
    slb = start_sidelb(simple_config([bad.addr, good.addr], service_config=retry_config()))
    stub = peers.echo_stub(slb.addr)
    results = [outcome(stub) for _ in range(10)]
    assert all(r[:2] == ("OK", "good") for r in results), results
    retried = [r for r in results if r[2] >= 0.5]
    assert len(retried) == bad.stats()["calls"] >= 2, results
    # the retries told the backend so: grpc-previous-rpc-attempts: 1
    st = good.stats()
    assert st["retried"] == len(retried) and st["max_previous_attempts"] == 1

    # a negative pushback: "don't retry": the failure reaches the app
    peers.stop_all()
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14", "--pushback-ms", "-1"])
    good = peers.start_c_backend("good")
    slb = start_sidelb(simple_config([bad.addr, good.addr], service_config=retry_config()))
    stub = peers.echo_stub(slb.addr)
    results = collections.Counter(outcome(stub)[0] for _ in range(10))
    assert results["UNAVAILABLE"] == bad.stats()["calls"] >= 2 and results["OK"] >= 2, results
    assert good.stats()["retried"] == 0


def test_per_attempt_recv_timeout():
    slow = peers.start_c_backend("slow", extra_args=["--extra-delay-ms", "2000"])
    good = peers.start_c_backend("good")
    slb = start_sidelb(simple_config([slow.addr, good.addr],
                                     service_config=retry_config(per_attempt="0.2s")))
    stub = peers.echo_stub(slb.addr)
    results = [outcome(stub) for _ in range(8)]
    # an attempt without response headers in 200 ms is cancelled and retried (whatever the status
    # codes say), so no call waits for the slow backend's 2 s
    assert all(r[:2] == ("OK", "good") for r in results), results
    assert max(r[2] for r in results) < 1.5, results
    n = slow.stats()["calls"]
    assert n >= 2
    slow.wait_stats(lambda s: s["cancelled"] == n and s["active"] == 0, timeout=10)

    # with only the slow backend, every attempt times out: DEADLINE_EXCEEDED, well before the 2 s answer
    peers.stop_all()
    slow = peers.start_c_backend("slow", extra_args=["--extra-delay-ms", "2000"])
    slb = start_sidelb(simple_config([slow.addr], service_config=retry_config(per_attempt="0.2s")))
    code, details, took = outcome(peers.echo_stub(slb.addr))
    assert code == "DEADLINE_EXCEEDED" and "perAttemptRecvTimeout" in details, (code, details)
    assert took < 1.8
    slow.wait_stats(lambda s: s["calls"] == 3 and s["cancelled"] == 3, timeout=10)
