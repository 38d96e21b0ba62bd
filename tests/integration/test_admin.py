"""The admin listener (lib/admin.c), end to end: sidelb with an "admin"
address, real backends, and plain HTTP/1.1 clients (raw sockets, so bad
requests can be sent too)."""

import collections
import json
import re
import signal
import socket
import threading
import time

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb


def start_with_admin(backends, workers=None, **kw):
    cfg = simple_config([b.addr if hasattr(b, "addr") else b for b in backends], **kw)
    if workers is not None:
        cfg["workers"] = workers
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg)
    slb.admin_port = admin_port
    assert peers.wait_port(admin_port, 5), "admin port never opened"
    return slb


def read_all(s):
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def parse_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0])
    assert m, "bad status line %r" % lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), headers, body


def http_raw(port, raw, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return parse_response(read_all(s))


def http(port, method, path, timeout=5.0):
    status, headers, body = http_raw(port, ("%s %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t\r\n\r\n" %
                                            (method, path)).encode(), timeout)
    if method != "HEAD":
        assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    return status, headers, body


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_metrics(text):
    """{(name, frozenset(labels)): value}, checking the text format as it goes."""
    samples = {}
    typed = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram") and name not in typed
            typed.add(name)
            continue
        m = SAMPLE.match(line)
        assert m, "bad sample line %r" % line
        name, labels, value = m.groups()
        assert name in typed or re.sub(r"_(bucket|sum|count)$", "", name) in typed, \
            "%s has no TYPE line before it" % name
        lab = {}
        pos = 0
        while labels and pos < len(labels):
            lm = LABEL.match(labels, pos)
            assert lm, "bad labels %r" % labels
            lab[lm.group(1)] = lm.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            pos = lm.end()
        key = (name, frozenset(lab.items()))
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = float(value)
    return samples


def metrics(slb):
    status, headers, body = http(slb.admin_port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(body.decode())


def metric(slb, name, **labels):
    """One sample of /metrics by name and exact label set (0 when absent)."""
    return metrics(slb).get((name, frozenset(labels.items())), 0)


def bm(samples, name, backend, **extra):
    labels = {"cluster": "echo", "backend": backend}
    labels.update(extra)
    return samples[(name, frozenset(labels.items()))]


def test_healthz_and_head():
    b = peers.start_c_backend("b0")
    slb = start_with_admin([b])
    status, headers, body = http(slb.admin_port, "GET", "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert http(slb.admin_port, "GET", "/healthz?verbose=1")[0] == 200
    status, headers, body = http(slb.admin_port, "HEAD", "/healthz")
    assert status == 200 and body == b"" and headers["content-length"] == "3"


def test_metrics_after_30_calls_over_3_backends():
    bes = [peers.start_c_backend("b%d" % i) for i in range(3)]
    slb = start_with_admin(bes)
    stub = peers.echo_stub(slb.addr)
    counts = collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(30))
    assert counts == {"b0": 10, "b1": 10, "b2": 10}
    m = metrics(slb)
    assert m[("sidelb_calls_total", frozenset({"listener": "test", "cluster": "echo", "grpc_code": "OK"}.items()))] == 30
    assert m[("sidelb_calls_started_total", frozenset())] == 30
    assert m[("sidelb_calls_failed_local_total", frozenset())] == 0
    assert m[("sidelb_calls_in_flight", frozenset())] == 0
    assert m[("sidelb_downstream_connections_total", frozenset())] >= 1
    assert m[("sidelb_upstream_connections_total", frozenset())] >= 3
    assert m[("sidelb_cluster_backends", frozenset({("cluster", "echo")}))] == 3
    assert m[("sidelb_cluster_waiting_calls", frozenset({("cluster", "echo")}))] == 0
    for b in bes:
        assert bm(m, "sidelb_backend_state", b.addr, state="READY") == 1
        assert sum(bm(m, "sidelb_backend_state", b.addr, state=s)
                   for s in ("IDLE", "CONNECTING", "READY", "TRANSIENT_FAILURE", "SHUTDOWN")) == 1
        assert bm(m, "sidelb_backend_healthy", b.addr) == 1
        assert bm(m, "sidelb_backend_ejected", b.addr) == 0
        assert bm(m, "sidelb_backend_outstanding_calls", b.addr) == 0
        assert bm(m, "sidelb_backend_weight", b.addr) == 1
        assert bm(m, "sidelb_backend_connections", b.addr) >= 1


def test_killed_backend_shows_unhealthy():
    bes = [peers.start_c_backend("b%d" % i) for i in range(3)]
    slb = start_with_admin(bes)
    stub = peers.echo_stub(slb.addr)
    for _ in range(6):
        stub.Unary(req(payload=b"x"), timeout=5)
    dead = bes[1]
    dead.kill9()
    end = time.monotonic() + 10
    while True:
        try:
            stub.Unary(req(payload=b"x"), timeout=2)
        except grpc.RpcError:
            pass
        m = metrics(slb)
        if (bm(m, "sidelb_backend_state", dead.addr, state="TRANSIENT_FAILURE") == 1 and
                bm(m, "sidelb_backend_healthy", dead.addr) == 0):
            break
        assert time.monotonic() < end, "killed backend never showed TRANSIENT_FAILURE: %r" % m
        time.sleep(0.05)
    for b in (bes[0], bes[2]):
        assert bm(m, "sidelb_backend_healthy", b.addr) == 1
    status, _, body = http(slb.admin_port, "GET", "/clusters")
    be = {x["address"]: x for x in json.loads(body)[0]["backends"]}
    assert be[dead.addr]["state"] == "TRANSIENT_FAILURE" and be[dead.addr]["healthy"] is False


def test_clusters_json():
    bes = [peers.start_c_backend("b%d" % i) for i in range(3)]
    slb = start_with_admin(bes, policy="least_request")
    peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=5)
    status, headers, body = http(slb.admin_port, "GET", "/clusters")
    assert status == 200 and headers["content-type"] == "application/json"
    clusters = json.loads(body)
    assert [c["name"] for c in clusters] == ["echo"]
    c = clusters[0]
    assert c["policy"] == "least_request" and c["waiting"] == 0
    assert sorted(b["address"] for b in c["backends"]) == sorted(b.addr for b in bes)
    keys = {"address", "weight", "zone", "state", "health", "healthy", "ejected", "draining", "outstanding",
            "connections"}
    for b in c["backends"]:
        assert keys <= set(b)
        assert b["weight"] == 1 and b["health"] == "UNKNOWN" and b["ejected"] is False and b["draining"] is False
        assert b["outstanding"] == 0
    assert sum(b["connections"] for b in c["backends"]) >= 1
    assert c["state"] == "READY"  # aggregate: at least one backend is READY


def test_cluster_aggregate_state_follows_backends():
    bes = [peers.start_c_backend("a%d" % i) for i in range(2)]
    # workers 1: the "cluster echo: READY -> ..." notice below is a forwarding loop's (a worker's replica says it at
    # debug level, the control loop's cluster has no connections)
    slb = start_with_admin(bes, workers=1)
    stub = peers.echo_stub(slb.addr)
    for _ in range(4):
        stub.Unary(req(payload=b"x"), timeout=5)
    state = lambda: json.loads(http(slb.admin_port, "GET", "/clusters")[2])[0]["state"]
    assert state() == "READY"
    for b in bes:
        b.kill9()
    time.sleep(0.2)
    for _ in range(2):  # the next attempts find both down
        try:
            stub.Unary(req(payload=b"x"), timeout=1)
        except Exception:
            pass
    assert state() in ("TRANSIENT_FAILURE", "IDLE", "CONNECTING")
    assert "cluster echo: READY ->" in slb.log()


def test_error_statuses():
    b = peers.start_c_backend("b0")
    slb = start_with_admin([b])
    p = slb.admin_port
    assert http(p, "GET", "/nope")[0] == 404
    assert http(p, "GET", "/healthz/extra")[0] == 404
    status, headers, _ = http(p, "POST", "/metrics")
    assert status == 405 and "GET" in headers["allow"]
    assert http(p, "DELETE", "/clusters")[0] == 405
    for raw in (b"garbage\r\n\r\n", b"GET /healthz HTTP/9.9\r\n\r\n", b"GET healthz HTTP/1.1\r\n\r\n",
                b"GET  /healthz HTTP/1.1\r\n\r\n", b"GET /healthz\r\n\r\n", b"GET /healthz HTTP/1.1\r\nnocolon\r\n\r\n",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"G\x00T /healthz HTTP/1.1\r\n\r\n"):
        status, _, _ = http_raw(p, raw)
        assert status == 400, raw
    # still serving after all that
    assert http(p, "GET", "/healthz")[0] == 200


def test_slow_partial_request_does_not_block_others():
    b = peers.start_c_backend("b0")
    slb = start_with_admin([b])
    p = slb.admin_port
    slow = []
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", p), timeout=5)
        s.sendall(b"GET /hea")
        slow.append(s)
    t0 = time.monotonic()
    for _ in range(5):
        assert http(p, "GET", "/healthz", timeout=2)[0] == 200
        assert http(p, "GET", "/metrics", timeout=2)[0] == 200
    assert time.monotonic() - t0 < 2
    # a request that arrives byte by byte still works
    s = slow[0]
    for ch in b"lthz HTTP/1.1\r\nHost: x\r\n\r\n":
        s.sendall(bytes([ch]))
    status, _, body = parse_response(read_all(s))
    assert (status, body) == (200, b"ok\n")
    # stopping with admin connections still open closes them and exits cleanly
    assert slb.stop() == 0
    for s in slow[1:]:
        assert s.recv(100) == b""
        s.close()


def test_huge_request_is_refused_and_closed():
    b = peers.start_c_backend("b0")
    slb = start_with_admin([b])
    p = slb.admin_port
    raw = b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100)) + b"\r\n"
    status, headers, _ = http_raw(p, raw)
    assert status in (400, 431) and headers["connection"] == "close"
    status, _, _ = http_raw(p, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
    assert status in (400, 431)
    # the connection is closed by the server even if the client keeps it open
    with socket.create_connection(("127.0.0.1", p), timeout=5) as s:
        s.sendall(b"X" * 9000)
        data = read_all(s)  # returns only once the server closes
        assert parse_response(data)[0] in (400, 431)
    assert http(p, "GET", "/healthz")[0] == 200


def test_healthz_503_while_draining():
    b = peers.start_c_backend("b0")
    slb = start_with_admin([b])
    stub = peers.echo_stub(slb.addr)
    stub.Unary(req(payload=b"x"), timeout=5)
    result = {}

    def slow_call():
        try:
            result["reply"] = stub.Unary(req(payload=b"slow", delay_ms=2000), timeout=10)
        except grpc.RpcError as e:
            result["error"] = e

    t = threading.Thread(target=slow_call)
    t.start()
    end = time.monotonic() + 1.5
    while metrics(slb)[("sidelb_calls_in_flight", frozenset())] != 1:
        assert time.monotonic() < end, "the slow call never showed in sidelb_calls_in_flight"
        time.sleep(0.01)
    slb.signal(signal.SIGTERM)
    end = time.monotonic() + 1.5
    while True:
        status, _, body = http(slb.admin_port, "GET", "/healthz")
        if status == 503:
            break
        assert time.monotonic() < end, "healthz never went 503"
        time.sleep(0.02)
    assert body == b"draining\n"
    t.join(10)
    assert result.get("reply") is not None and result["reply"].payload == b"slow"
    assert slb.wait(10) == 0


def test_label_values_are_escaped():
    name = 'we"ird\\clu\nster'
    b = peers.start_c_backend("b0")
    cfg = simple_config([b.addr])
    cfg["clusters"][0]["name"] = name
    cfg["listeners"][0]["routes"][0]["cluster"] = name
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg)
    assert peers.wait_port(admin_port, 5)
    status, _, body = http(admin_port, "GET", "/metrics")
    text = body.decode()
    assert 'sidelb_cluster_backends{cluster="we\\"ird\\\\clu\\nster"} 1\n' in text
    m = parse_metrics(text)
    assert m[("sidelb_backend_weight", frozenset({("cluster", name), ("backend", b.addr)}))] == 1
    status, _, body = http(admin_port, "GET", "/clusters")
    assert json.loads(body)[0]["name"] == name
    assert slb.stop() == 0


@pytest.mark.timeout(30)
def test_idle_connection_times_out_with_408():
    b = peers.start_c_backend("b0")
    slb = start_with_admin([b])
    with socket.create_connection(("127.0.0.1", slb.admin_port), timeout=15) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.monotonic()
        data = read_all(s)  # the server answers and closes after its 10 s request timeout
        assert 8 < time.monotonic() - t0 < 14
    assert parse_response(data)[0] == 408
