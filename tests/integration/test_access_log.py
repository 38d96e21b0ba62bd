"""The access log (lib/access_log.c) against calls whose outcome the test
knows: one JSON line per call with the right fields, JSON-escaped untrusted
strings, SIGUSR1 reopen after a logrotate-style rename, sample_rate 0, and the
lines-per-second cap."""

import json
import os
import re
import signal
import time

import grpc

import peers
from peers import req
from sidelb_harness import start_sidelb, start_with_admin_listener
from test_admin import metric

SERVICE = "sidelb.test.Echo"
METHOD = "/sidelb.test.Echo/Unary"


def config(clusters, access_log):
    listeners, cls = [], []
    for name, backends in clusters:
        listeners.append({"name": "l-" + name, "address": "127.0.0.1:%d" % peers.free_port(),
                          "routes": [{"service": SERVICE, "cluster": name}]})
        cls.append({"name": name, "discovery": {"static": backends}, "policy": {"round_robin": {}}})
    admin = peers.free_port()
    return {"listeners": listeners, "clusters": cls, "admin": {"address": "127.0.0.1:%d" % admin},
            "access_log": access_log}


def wait_lines(path, n, timeout=10.0):
    """The file's lines once it has n of them (the log flushes every 100 ms)."""
    end = time.monotonic() + timeout
    while True:
        lines = open(path).read().splitlines() if os.path.exists(path) else []
        if len(lines) >= n or time.monotonic() > end:
            return lines
        time.sleep(0.05)


def unary(addr, payload=b"abc", method=METHOD):
    ch = peers.channel(addr)
    try:
        call = ch.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=lambda b: b)
        try:
            call(req(payload=payload), timeout=5)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()
    finally:
        ch.close()


def test_one_line_per_call_with_the_right_fields(tmp_path):
    path = str(tmp_path / "access.log")
    ok = peers.start_c_backend("ok")
    denied = peers.start_c_backend("denied", extra_args=["--fail-status", "7"])
    cfg = config([("ok", [ok.addr]), ("denied", [denied.addr])], {"path": path})
    # workers 1: the lines are read in call order; with 2 workers each writes its own batches (every 100 ms) to the
    # file, so the order across connections is the flushes' (test_workers_metrics counts both workers' lines)
    cfg["workers"] = 1
    slb = start_with_admin_listener(cfg)
    a_ok, a_denied = cfg["listeners"][0]["address"], cfg["listeners"][1]["address"]
    t0 = time.time()
    assert [unary(a_ok, b"x" * 10) for _ in range(3)] == [grpc.StatusCode.OK] * 3
    assert [unary(a_denied) for _ in range(2)] == [grpc.StatusCode.PERMISSION_DENIED] * 2
    # an untrusted method name: quote, backslash and a non-ASCII byte must stay valid JSON
    weird = '/sidelb.test.Echo/Un"a\\ry\u00e9'
    assert unary(a_ok, method=weird) == grpc.StatusCode.UNIMPLEMENTED
    lines = wait_lines(path, 6)
    assert len(lines) == 6, lines
    recs = [json.loads(line) for line in lines]
    req_bytes = 5 + len(req(payload=b"x" * 10).SerializeToString())
    for r in recs[:3]:
        assert r["listener"] == "l-ok" and r["cluster"] == "ok" and r["backend"] == ok.addr
        assert r["method"] == METHOD
        assert (r["grpc_status"], r["grpc_code"], r["attempts"]) == (0, "OK", 1)
        assert r["request_bytes"] == req_bytes and r["response_bytes"] > req_bytes
    for r in recs[3:5]:
        assert (r["listener"], r["cluster"], r["backend"]) == ("l-denied", "denied", denied.addr)
        assert (r["grpc_status"], r["grpc_code"], r["attempts"]) == (7, "PERMISSION_DENIED", 1)
        assert r["response_bytes"] == 0
    assert recs[5]["grpc_code"] == "UNIMPLEMENTED"
    assert recs[5]["method"] == '/sidelb.test.Echo/Un"a\\ry\u00c3\u00a9'  # bytes outside ASCII: one escape each
    for r in recs:
        assert set(r) == {"start_time", "listener", "peer", "method", "cluster", "backend", "attempts", "grpc_status",
                          "grpc_code", "duration_s", "upstream_duration_s", "request_bytes", "response_bytes"}
        assert re.match(r"^127\.0\.0\.1:\d+$", r["peer"]), r["peer"]
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", r["start_time"])
        start = time.mktime(time.strptime(r["start_time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert t0 - 2 <= start <= time.time() + 1
        assert 0 < r["upstream_duration_s"] <= r["duration_s"] < 5
    assert metric(slb, "sidelb_access_log_lines_total") == 6


def test_sigusr1_reopens_after_rename(tmp_path):
    path = str(tmp_path / "access.log")
    ok = peers.start_c_backend("ok")
    cfg = config([("ok", [ok.addr])], {"path": path})
    slb = start_sidelb(cfg)
    addr = cfg["listeners"][0]["address"]
    for _ in range(3):
        assert unary(addr) == grpc.StatusCode.OK
    assert len(wait_lines(path, 3)) == 3
    os.rename(path, path + ".1")  # logrotate: rename, then signal
    assert unary(addr) == grpc.StatusCode.OK  # before the signal: still into the renamed file
    assert len(wait_lines(path + ".1", 4)) == 4
    os.kill(slb.pid, signal.SIGUSR1)
    peers.wait_for(lambda: os.path.exists(path), 10, 0.02, what="SIGUSR1 reopening %s" % path)
    for _ in range(2):
        assert unary(addr) == grpc.StatusCode.OK
    assert len(wait_lines(path, 2)) == 2
    assert len(open(path + ".1").read().splitlines()) == 4
    assert slb.alive()


def test_sample_rate_zero_writes_nothing(tmp_path):
    path = str(tmp_path / "access.log")
    ok = peers.start_c_backend("ok")
    cfg = config([("ok", [ok.addr])], {"path": path, "sample_rate": 0})
    slb = start_with_admin_listener(cfg)
    addr = cfg["listeners"][0]["address"]
    for _ in range(20):
        assert unary(addr) == grpc.StatusCode.OK
    time.sleep(0.5)  # five flush periods: nothing may appear
    assert os.path.getsize(path) == 0
    assert metric(slb, "sidelb_access_log_lines_total") == 0


def test_lines_per_second_cap_holds(tmp_path):
    path = str(tmp_path / "access.log")
    ok = peers.start_c_backend("ok")
    cfg = config([("ok", [ok.addr])], {"path": path, "max_lines_per_second": 5})
    cfg["workers"] = 1  # the cap is split per worker loop (3/s each with 2): this checks the one-loop figure
    slb = start_with_admin_listener(cfg)
    stub = peers.echo_stub(cfg["listeners"][0]["address"])
    t0 = time.monotonic()
    futures = [stub.Unary.future(req(payload=b"c"), timeout=10) for _ in range(40)]
    for f in futures:
        f.result()
    elapsed = time.monotonic() - t0
    written = metric(slb, "sidelb_access_log_lines_total")
    limited = metric(slb, "sidelb_access_log_rate_limited_total")
    assert written + limited == 40
    # at most 5 per second of the loop's clock over the seconds the calls spanned
    assert 5 <= written <= 5 * (int(elapsed) + 2), (written, elapsed)
    assert len(wait_lines(path, int(written))) == written


def test_lines_buffered_at_sigterm_are_written_before_exit(tmp_path):
    path = str(tmp_path / "access.log")
    ok = peers.start_c_backend("ok")
    cfg = config([("ok", [ok.addr])], {"path": path})
    slb = start_sidelb(cfg)
    addr = cfg["listeners"][0]["address"]
    for _ in range(5):
        assert unary(addr) == grpc.StatusCode.OK
    slb.signal(signal.SIGTERM)  # at once: the lines may still sit in the buffer
    assert slb.wait(10) == 0
    lines = open(path).read().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["grpc_code"] == "OK" for line in lines)


def test_reload_keeps_logging_to_the_same_file(tmp_path):
    path = str(tmp_path / "access.log")
    ok = peers.start_c_backend("ok")
    cfg = config([("ok", [ok.addr])], {"path": path})
    slb = start_sidelb(cfg)
    addr = cfg["listeners"][0]["address"]
    for _ in range(3):
        assert unary(addr) == grpc.StatusCode.OK
    slb.signal(signal.SIGHUP)
    peers.wait_for(lambda: "reloaded" in slb.log(), 10, 0.02, what="the reload")
    for _ in range(3):
        assert unary(addr) == grpc.StatusCode.OK
    lines = wait_lines(path, 6)
    assert len(lines) == 6 and all(json.loads(line)["grpc_code"] == "OK" for line in lines)
    assert slb.alive()
