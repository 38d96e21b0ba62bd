""""workers": N (lib/worker.h) end to end: the control loop accepts and hands
each app connection to the worker holding the fewest, N worker threads
forward the calls with replicas of the clusters fed by snapshots. Real C
test backends, grpcio apps (one channel = one app connection: a local
subchannel pool, so two channels never share a TCP connection), real
etcd-server.

Each worker has its own upstream pools, so a backend that got calls from
both workers has seen two connections from sidelb (without health checks,
whose connections are the control loop's): that is how the tests below tell
the workers apart from outside. `make tsan` runs this file against the
ThreadSanitizer build.
"""

import collections
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.request

import grpc
import pytest

import peers
from etcd_harness import EtcdServer
from peers import req, wait_for
from pki import make_ca, make_cert
from sidelb_harness import simple_config, start_sidelb, start_with_admin_listener
from test_admin import http

WORKERS = 2


def workers_config(backends, workers=WORKERS, **kw):
    cfg = simple_config(backends, **kw)
    cfg["workers"] = workers
    return cfg


def app_stubs(target, n, credentials=None):
    """n Echo stubs, each over its own channel and TCP connection (grpcio would otherwise share one
    subchannel between channels to the same target). Connected one after the other, each with a call
    sidelb answers itself (no route: UNIMPLEMENTED, no backend involved), so each connection is held by
    its worker before the next one is handed out: the first goes to worker 0, the second to worker 1,
    and so on round the workers."""
    stubs = []
    for _ in range(n):
        opts = [("grpc.use_local_subchannel_pool", 1)]
        ch = grpc.secure_channel(target, credentials, options=opts) if credentials else peers.channel(
            target, **dict(opts))
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/sidelb.test.Unrouted/Warm")(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, e.value
        stubs.append(peers.echo_stub(ch))
    return stubs


def unary_calls(backend):
    return backend.stats().get("by_method", {}).get("Unary", 0)


def active(backend):
    """The backend's calls in flight: SIGHUP makes it write its stats file now (it writes it after each
    call otherwise), so a poll sees the count at most one poll late."""
    backend.signal(signal.SIGHUP)
    return backend.stats().get("active", 0)


def in_parallel(stubs, calls_each, **fields):
    """calls_each sequential unary calls on every stub, the stubs side by side (one thread each);
    returns one Counter of outcomes (backend id, or the status name) per stub."""
    outcomes = [collections.Counter() for _ in stubs]

    def run(i):
        for _ in range(calls_each):
            try:
                outcomes[i][stubs[i].Unary(req(payload=b"x", **fields), timeout=10).backend_id] += 1
            except grpc.RpcError as e:
                outcomes[i][e.code().name] += 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(stubs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "calls still running after 60 s"
    return outcomes


def every_app_avoids(stubs, backend_id, timeout, calls_each=6):
    """Polls rounds of calls on every stub until none of them reached backend_id (the change was
    applied by every worker); returns the seconds it took."""
    return wait_for(lambda: all(backend_id not in c for c in in_parallel(stubs, calls_each)), timeout,
                    interval=0.1, what="no app connection's calls on %s" % backend_id)


def test_calls_spread_over_both_workers():
    bes = [peers.start_c_backend("s%d" % i) for i in range(3)]
    slb = start_sidelb(workers_config([b.addr for b in bes]))
    assert "%d worker loops started" % WORKERS in slb.log()
    stubs = app_stubs(slb.addr, 4)  # handed out 2 and 2: each worker takes the one with the fewest
    outcomes = in_parallel(stubs, 30)
    total = sum(outcomes, collections.Counter())
    assert total == {"s0": 40, "s1": 40, "s2": 40}, total  # each worker round-robins its own 60 calls
    for b in bes:
        st = b.wait_stats(lambda s: s["ok"] == 40)
        # one upstream connection from each worker's own pool: both workers forwarded calls to it
        assert st["connections"] == WORKERS, (b.id, st)


def test_app_connections_opened_at_once_go_to_different_workers():
    """Two app connections accepted in one turn: the second must not go to the worker that took the
    first and has not adopted it yet (it did: 15 of 20 under TSan, 1 of 20 plain, before the fix)."""
    for trial in range(5):
        be = peers.start_c_backend("p%d" % trial)
        slb = start_sidelb(workers_config([be.addr]))
        chans = [peers.channel(slb.addr, **{"grpc.use_local_subchannel_pool": 1}) for _ in range(2)]
        barrier = threading.Barrier(2)

        def call(ch):
            barrier.wait()
            peers.echo_stub(ch).Unary(req(payload=b"x"), timeout=10)

        threads = [threading.Thread(target=call, args=(c,)) for c in chans]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        st = be.wait_stats(lambda s: s["ok"] == 2)
        assert st["connections"] == 2, (trial, st)  # one per worker: each took one app connection
        for c in chans:
            c.close()
        slb.stop()
        be.stop()


@pytest.mark.timeout(90)
def test_sighup_reload_under_load_fails_no_call():
    a, b, c = (peers.start_c_backend(n) for n in ("a", "b", "c"))
    cfg = workers_config([a.addr, b.addr])
    port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
    slb = start_sidelb(cfg)
    loads = [peers.RateLoad(stub, 40, 10) for stub in app_stubs(slb.addr, 3)]
    try:
        # the last reload also changes the number of workers
        for i, (backends, workers) in enumerate((([b.addr, c.addr], 2), ([a.addr, c.addr], 2), ([c.addr], 3))):
            time.sleep(1.0)  # calls on every connection between two reloads
            with open(slb.config_path, "w") as f:
                json.dump(dict(workers_config(backends, workers, port=port), state_dir=slb.state_dir), f)
            slb.signal(signal.SIGHUP)
            wait_for(lambda: slb.log().count("reloaded") >= i + 1 or "reload:" in slb.log(), 15,
                     what="reload %d" % (i + 1))
            assert "reload:" not in slb.log()
        time.sleep(1.0)
    finally:
        results = [r for load in loads for r in load.stop()]
    outcomes = collections.Counter(what for _, _, what in results)
    assert set(outcomes) <= {"a", "b", "c"}, outcomes  # no status name: every call succeeded
    assert sum(outcomes.values()) > 100 and outcomes["c"] > 0, outcomes
    assert "3 worker loops started" in slb.log()
    # after the last reload every call goes to c, on each worker of the new server
    assert in_parallel(app_stubs(slb.addr, 3), 6) == [{"c": 6}] * 3
    assert slb.alive()


def test_sigterm_lets_calls_in_flight_on_every_worker_finish():
    bes = [peers.start_c_backend("t%d" % i) for i in range(2)]
    slb = start_sidelb(workers_config([b.addr for b in bes]))
    stubs = app_stubs(slb.addr, 4)
    assert all(s.Unary(req(payload=b"warm"), timeout=10).backend_id for s in stubs)  # connected, spread
    futs = [s.Unary.future(req(payload=b"late%d" % i, delay_ms=1500), timeout=20) for i, s in enumerate(stubs)]
    wait_for(lambda: sum(active(b) for b in bes) == 4, 10, what="4 calls in flight")
    t0 = time.monotonic()
    slb.signal(signal.SIGTERM)
    assert [f.result(timeout=20).payload for f in futs] == [b"late%d" % i for i in range(4)]
    assert slb.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5.0 + 3.0, "did not exit within the grace period (5 s) and a margin"
    assert sum(b.stats()["connections"] for b in bes) == 2 * WORKERS  # the calls were on both workers


def test_admin_drain_reaches_every_worker():
    b0, b1 = peers.start_c_backend("d0"), peers.start_c_backend("d1")
    slb = start_with_admin_listener(workers_config([b0.addr, b1.addr]))
    # one app connection on each worker; each worker round-robins its own connection's calls
    stubs = app_stubs(slb.addr, 2)
    assert in_parallel(stubs, 4) == [{"d0": 2, "d1": 2}] * 2
    status, _, body = http(slb.admin_port, "POST", "/clusters/echo/backends/%s/drain" % b0.addr)
    assert status == 200, body
    # the answer comes from the control loop; each worker applies it with the next snapshot
    every_app_avoids(stubs, "d0", 5)
    before = unary_calls(b0)
    assert in_parallel(stubs, 10) == [{"d1": 10}] * 2
    assert unary_calls(b0) == before  # no new call reached it, from either worker
    status, _, body = http(slb.admin_port, "POST", "/clusters/echo/backends/%s/undrain" % b0.addr)
    assert status == 200, body
    wait_for(lambda: all("d0" in c for c in in_parallel(stubs, 4)), 5, interval=0.1,
             what="both workers' calls on d0 again")


def test_health_not_serving_on_the_control_loop_reaches_the_workers():
    bes = [peers.start_c_backend("h%d" % i) for i in range(3)]
    cfg = workers_config([b.addr for b in bes], health_check={"service": "", "interval_ms": 300, "timeout_ms": 500})
    slb = start_sidelb(cfg)
    stubs = app_stubs(slb.addr, 2)  # one app connection on each worker
    wait_for(lambda: all(set(c) == {"h0", "h1", "h2"} for c in in_parallel(stubs, 6)), 10, interval=0.1,
             what="every backend serving on both workers")
    bes[1].set_health(False)  # the control loop's health check sees it; the workers get it by snapshot
    every_app_avoids(stubs, "h1", 5)
    before = unary_calls(bes[1])
    assert in_parallel(stubs, 10) == [{"h0": 5, "h2": 5}] * 2
    assert unary_calls(bes[1]) == before
    bes[1].set_health(True)
    wait_for(lambda: all("h1" in c for c in in_parallel(stubs, 6)), 5, interval=0.1,
             what="h1 serving again on both workers")


def test_outlier_ejection_counts_failures_seen_on_both_workers():
    good = peers.start_c_backend("good")
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "14"])  # every call UNAVAILABLE
    cfg = workers_config([good.addr, bad.addr],
                         outlier_detection={"consecutive_failures": 6, "base_ejection_ms": 30000,
                                            "max_ejection_percent": 50, "interval_ms": 10000})
    slb = start_with_admin_listener(cfg)
    stubs = app_stubs(slb.addr, 2)  # one app connection on each worker
    # each worker round-robins its 6 calls: 3 reach bad, fewer than consecutive_failures on either worker
    # alone; only the two workers' failures together (the backend's shared block) reach 6
    for stub in stubs:
        outcomes = in_parallel([stub], 6)[0]
        assert outcomes == {"good": 3, "UNAVAILABLE": 3}, outcomes
    bad.wait_stats(lambda s: s["calls"] == 6)

    def ejected():
        _, _, body = http(slb.admin_port, "GET", "/clusters")
        return {b["address"]: b for b in json.loads(body)[0]["backends"]}[bad.addr]["ejected"]

    wait_for(ejected, 5, what="bad ejected by the control loop")
    every_app_avoids(stubs, "UNAVAILABLE", 5)  # each worker applies the ejection with the next snapshot
    before = bad.stats()["calls"]
    assert in_parallel(stubs, 10) == [{"good": 10}] * 2
    assert bad.stats()["calls"] == before


LONG_MS = 6000  # the long calls outlast the whole check, even on a loaded machine under TSan


def test_least_request_sees_calls_in_flight_on_the_other_worker():
    bes = [peers.start_c_backend("l%d" % i) for i in range(2)]
    slb = start_sidelb(workers_config([b.addr for b in bes], policy="least_request",
                                      policy_options={"choice_count": 2}))
    first, second = app_stubs(slb.addr, 2)  # one app connection on each worker
    # two long calls on the first worker: the second goes to the backend the first did not take
    t_first = time.monotonic()
    longs = [first.Unary.future(req(payload=b"long", delay_ms=LONG_MS), timeout=30)]
    wait_for(lambda: sum(active(b) for b in bes) == 1, 10, what="the first long call")
    longs.append(first.Unary.future(req(payload=b"long", delay_ms=LONG_MS), timeout=30))
    wait_for(lambda: all(active(b) == 1 for b in bes), 10, what="one long call on each")
    # a third on the first worker, so one backend (busy) has 2 in flight and the other (idle) 1
    longs.append(first.Unary.future(req(payload=b"long", delay_ms=LONG_MS), timeout=30))
    wait_for(lambda: sum(active(b) for b in bes) == 3, 10, what="the third long call")
    idle = min(bes, key=lambda b: b.stats()["active"])  # as of the last poll: 3 in flight
    # the second worker has no call in flight of its own: only the shared counts make it avoid busy
    got = collections.Counter(second.Unary(req(payload=b"x"), timeout=10).backend_id for _ in range(10))
    assert time.monotonic() - t_first < LONG_MS / 1000.0 - 0.5, "the first long call may have ended meanwhile"
    assert got == {idle.id: 10}, got
    assert all(f.result(timeout=30).payload == b"long" for f in longs)


@pytest.mark.timeout(90)
def test_etcd_discovery_feeds_every_worker():
    etcd = EtcdServer()
    try:
        prefix = "/grpclb/sidelb.test.Echo/"
        a, b = peers.start_c_backend("ea"), peers.start_c_backend("eb")
        etcd.put(prefix + a.addr, a.addr)
        port = peers.free_port()
        cfg = {"etcd": {"endpoints": [etcd.url], "dial_timeout_ms": 500, "request_timeout_ms": 1000},
               "workers": WORKERS,
               "listeners": [{"address": "127.0.0.1:%d" % port,
                              "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
               "clusters": [{"name": "echo", "discovery": {"etcd_prefix": prefix}, "policy": {"round_robin": {}}}]}
        slb = start_sidelb(cfg)
        stubs = app_stubs(slb.addr, 4)
        wait_for(lambda: all(c == {"ea": 4} for c in in_parallel(stubs, 4)), 10, interval=0.1,
                 what="ea serving every app connection")
        etcd.put(prefix + b.addr, b.addr)  # added: every worker's replica gets it
        wait_for(lambda: all("eb" in c for c in in_parallel(stubs, 4)), 10, interval=0.1,
                 what="eb taking calls from every app connection")
        assert b.wait_stats(lambda s: s["connections"] >= WORKERS)["connections"] == WORKERS
        etcd.delete(prefix + a.addr)  # removed: no worker sends it calls
        every_app_avoids(stubs, "ea", 10)
        before = unary_calls(a)
        assert all(c == {"eb": 8} for c in in_parallel(stubs, 8))
        assert unary_calls(a) == before
    finally:
        etcd.destroy()


def test_unix_listener_with_workers():
    sockdir = tempfile.mkdtemp(prefix="sidelb-uds-")
    try:
        path = os.path.join(sockdir, "app.sock")
        bes = [peers.start_c_backend("u%d" % i) for i in range(2)]
        cfg = workers_config([b.addr for b in bes])
        cfg["listeners"][0]["address"] = "unix:" + path
        start_sidelb(cfg)
        stubs = app_stubs("unix:" + path, 4)
        outcomes = in_parallel(stubs, 10)
        assert sum(outcomes, collections.Counter()) == {"u0": 20, "u1": 20}, outcomes
        for b in bes:
            assert b.wait_stats(lambda s: s["ok"] == 20)["connections"] == WORKERS
    finally:
        shutil.rmtree(sockdir, True)


def test_workers_auto_is_accepted_and_shown_in_config():
    be = peers.start_c_backend("auto")
    cfg = simple_config([be.addr])
    cfg["workers"] = "auto"
    slb = start_with_admin_listener(cfg)
    cpus = len(os.sched_getaffinity(0))  # what the process may use (its affinity), as sidelb counts
    status, _, body = http(slb.admin_port, "GET", "/config")
    assert status == 200, body
    assert json.loads(body)["workers"] == cpus  # the number "auto" came to
    if cpus > 1:
        assert "%d worker loops started" % cpus in slb.log()
    stubs = app_stubs(slb.addr, 3)
    assert all(c == {"auto": 5} for c in in_parallel(stubs, 5))
    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % slb.admin_port, timeout=5) as r:
        assert r.read() == b"ok\n"


@pytest.mark.timeout(90)
def test_scrapes_drains_log_reopen_and_reload_under_load_on_every_worker():
    """What crosses threads, all at once under calls on four app connections: /metrics and /clusters
    (the control loop reads while workers run), drain/undrain (snapshots), SIGUSR1 (each worker reopens
    its access log), SIGHUP (new workers, old ones drain). No call fails; the workers' access log lines
    (one writer per worker, one file) add up to the calls, each line whole."""
    bes = [peers.start_c_backend("c%d" % i) for i in range(3)]
    logdir = tempfile.mkdtemp(prefix="sidelb-wlog-")
    try:
        log_path = os.path.join(logdir, "access.log")
        cfg = workers_config([b.addr for b in bes])
        cfg["access_log"] = {"path": log_path}
        slb = start_with_admin_listener(cfg)
        loads = [peers.RateLoad(stub, 30, 10) for stub in app_stubs(slb.addr, 4)]
        try:
            end, step = time.monotonic() + 5.0, 0
            while time.monotonic() < end:
                for path in ("/metrics", "/clusters"):
                    assert http(slb.admin_port, "GET", path)[0] == 200
                action = "drain" if step % 2 == 0 else "undrain"
                status, _, body = http(slb.admin_port, "POST",
                                       "/clusters/echo/backends/%s/%s" % (bes[step // 2 % 3].addr, action))
                assert status == 200, body
                if step == 6:
                    os.rename(log_path, log_path + ".1")  # logrotate's way
                    slb.signal(signal.SIGUSR1)
                if step == 12:
                    slb.signal(signal.SIGHUP)  # the same file: new workers, the old ones drain
                    wait_for(lambda: "reloaded" in slb.log() or "reload:" in slb.log(), 15, what="the reload")
                    assert "reload:" not in slb.log()
                step += 1
                time.sleep(0.05)
            assert step > 12, "the reload never came: only %d steps in 5 s" % step
            time.sleep(0.5)  # calls after the last undrain
        finally:
            results = [r for load in loads for r in load.stop()]
        outcomes = collections.Counter(what for _, _, what in results)
        assert set(outcomes) == {"c0", "c1", "c2"}, outcomes  # every call succeeded, on every backend

        def lines():  # the load's calls (app_stubs' warm-up calls are logged too)
            got = []
            for p in (log_path + ".1", log_path):
                if os.path.exists(p):
                    with open(p) as f:
                        text = f.read()
                    # every complete line is one whole JSON object (a write may be under way at the end)
                    got += [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]
            return [e for e in got if e["method"] == "/sidelb.test.Echo/Unary"]

        wait_for(lambda: len(lines()) >= len(results), 10, what="%d access log lines" % len(results))
        assert len(lines()) == len(results)
        assert all(e["grpc_code"] == "OK" for e in lines())
        assert os.path.getsize(log_path + ".1") > 0 and os.path.getsize(log_path) > 0
    finally:
        shutil.rmtree(logdir, True)


@pytest.mark.timeout(90)
def test_tls_on_both_sides_with_workers():
    """One TLS context per listener and per cluster serves every worker's connections: app connections
    over TLS on both workers, and a new TLS connection to a backend for each call on both workers
    (max_requests_per_connection 1), so both workers take and drop references to both contexts."""
    d = tempfile.mkdtemp(prefix="sidelb-wtls-")
    try:
        make_ca(d, "ca")
        make_cert(d, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        pem, key, ca = (os.path.join(d, n) for n in ("server.pem", "server.key", "ca.pem"))
        bes = [peers.start_c_backend("tls%d" % i, extra_args=["--tls-cert", pem, "--tls-key", key]) for i in range(2)]
        cfg = workers_config([b.addr for b in bes], tls={"ca_file": ca}, max_requests_per_connection=1)
        cfg["listeners"][0]["tls"] = {"cert_file": pem, "key_file": key}
        slb = start_sidelb(cfg)
        with open(ca, "rb") as f:
            stubs = app_stubs(slb.addr, 4, grpc.ssl_channel_credentials(root_certificates=f.read()))
        outcomes = in_parallel(stubs, 10)
        assert sum(outcomes, collections.Counter()) == {"tls0": 20, "tls1": 20}, outcomes
        for b in bes:
            assert b.wait_stats(lambda s: s["ok"] == 20)["connections"] >= 20  # one TLS connection per call
    finally:
        shutil.rmtree(d, True)
