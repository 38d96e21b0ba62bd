"""Admin actions (lib/admin_actions.c) end to end: drain / undrain a
backend, clear an outlier ejection, GET /config (the effective configuration,
defaults filled in) with secrets redacted,
/ready vs /healthz, and the loopback-only rule, against real sidelb and
test backends."""

import concurrent.futures
import json
import signal
import socket

import grpc
import pytest

import peers
from peers import req, wait_for
from sidelb_harness import simple_config, start_sidelb, start_with_admin_listener, with_test_workers
from test_admin import http, metric, read_all


def start_with_admin(backends, admin_host="127.0.0.1", **kw):
    cfg = simple_config([b.addr for b in backends], **kw)
    if admin_host == "127.0.0.1":
        return start_with_admin_listener(cfg)
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "%s:%d" % (admin_host, admin_port)}
    slb = start_sidelb(cfg)
    slb.admin_port = admin_port
    return slb


def post(slb, path):
    return http(slb.admin_port, "POST", path)


def backends(slb):
    status, _, body = http(slb.admin_port, "GET", "/clusters")
    assert status == 200
    return {b["address"]: b for b in json.loads(body)[0]["backends"]}


def test_drain_lets_calls_in_flight_finish_and_new_calls_avoid_it():
    b0, b1 = peers.start_c_backend("b0"), peers.start_c_backend("b1")
    slb = start_with_admin([b0, b1])
    stub = peers.echo_stub(slb.addr)
    assert {stub.Unary(req(), timeout=5).backend_id for _ in range(4)} == {"b0", "b1"}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        # two slow calls: round robin puts one on each backend
        slow = [pool.submit(stub.Unary, req(delay_ms=1500), timeout=20) for _ in range(2)]
        wait_for(lambda: backends(slb)[b0.addr]["outstanding"] == 1, 10)
        status, _, body = post(slb, "/clusters/echo/backends/%s/drain" % b0.addr)
        assert status == 200, body
        assert b"drained (1 calls in flight finish there)" in body
        assert backends(slb)[b0.addr]["drained"] == {"admin": True, "etcd": False}
        assert metric(slb, "sidelb_backend_drained", cluster="echo", backend=b0.addr) == 1
        assert backends(slb)[b0.addr]["healthy"] is False
        # new calls avoid it while its call in flight goes on
        assert {stub.Unary(req(), timeout=5).backend_id for _ in range(10)} == {"b1"}
        assert sorted(f.result().backend_id for f in slow) == ["b0", "b1"]
    assert b0.stats()["ok"] >= 3
    status, _, body = post(slb, "/clusters/echo/backends/%s/undrain" % b0.addr)
    assert status == 200 and b"undrained" in body, body
    assert backends(slb)[b0.addr]["drained"] == {"admin": False, "etcd": False}
    assert metric(slb, "sidelb_backend_drained", cluster="echo", backend=b0.addr) == 0
    assert "b0" in {stub.Unary(req(), timeout=5).backend_id for _ in range(6)}


def test_every_backend_drained_is_no_usable_backend():
    b0 = peers.start_c_backend("b0")
    slb = start_with_admin([b0], wait_for_ready_ms=0)
    stub = peers.echo_stub(slb.addr)
    assert stub.Unary(req(), timeout=5).backend_id == "b0"
    assert post(slb, "/clusters/echo/backends/%s/drain" % b0.addr)[0] == 200
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert post(slb, "/clusters/echo/backends/%s/undrain" % b0.addr)[0] == 200
    assert stub.Unary(req(), timeout=5).backend_id == "b0"


def test_action_errors():
    b0 = peers.start_c_backend("b0")
    slb = start_with_admin([b0])
    status, headers, _ = http(slb.admin_port, "GET", "/clusters/echo/backends/%s/drain" % b0.addr)
    assert status == 405 and headers["allow"] == "POST"
    assert post(slb, "/clusters/nope/backends/%s/drain" % b0.addr)[:3:2] == (404, b'no cluster "nope"\n')
    assert post(slb, "/clusters/echo/backends/127.0.0.1:1/drain")[0] == 404
    assert post(slb, "/clusters/echo/backends/%s/explode" % b0.addr)[0] == 404
    assert post(slb, "/clusters/echo/backends/%s/drain/x" % b0.addr)[0] == 404
    assert post(slb, "/clusters/echo/backends/%%zz/drain")[0] == 400
    # percent-encoded address
    enc = b0.addr.replace(":", "%3A")
    assert post(slb, "/clusters/echo/backends/%s/drain" % enc)[0] == 200
    assert backends(slb)[b0.addr]["drained"]["admin"] is True


def test_clear_ejection():
    good = peers.start_c_backend("good")
    bad = peers.start_c_backend("bad", extra_args=["--fail-status", "13"])
    slb = start_with_admin([good, bad], outlier_detection={
        "consecutive_failures": 2, "base_ejection_ms": 600000, "max_ejection_ms": 600000,
        "max_ejection_percent": 50})
    stub = peers.echo_stub(slb.addr)
    for _ in range(8):
        try:
            stub.Unary(req(), timeout=5)
        except grpc.RpcError:
            pass
    wait_for(lambda: backends(slb)[bad.addr]["ejected"], 10)
    calls_before = bad.stats()["calls"]
    assert post(slb, "/clusters/echo/backends/%s/clear_ejection" % good.addr)[2].endswith(b"was not ejected\n")
    status, _, body = post(slb, "/clusters/echo/backends/%s/clear_ejection" % bad.addr)
    assert status == 200 and b"ejection cleared" in body, body
    assert backends(slb)[bad.addr]["ejected"] is False
    for _ in range(4):
        try:
            stub.Unary(req(), timeout=5)
        except grpc.RpcError:
            pass
    assert bad.stats()["calls"] > calls_before


def non_loopback_address():
    """A local IPv4 address that is not loopback, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_actions_and_config_refused_unless_over_loopback():
    host = non_loopback_address()
    if host is None:
        pytest.skip("no non-loopback local address (check_admin's unit test covers the check)")
    b0 = peers.start_c_backend("b0")
    slb = start_with_admin([b0], admin_host=host)
    raw = ("POST /clusters/echo/backends/%s/drain HTTP/1.1\r\nHost: x\r\n\r\n" % b0.addr).encode()
    with socket.create_connection((host, slb.admin_port), timeout=5) as s:
        s.sendall(raw)
        data = read_all(s)
    assert data.startswith(b"HTTP/1.1 403 "), data
    assert data.endswith(b"forbidden: admin actions are accepted over loopback only\n")
    with socket.create_connection((host, slb.admin_port), timeout=5) as s:
        s.sendall(b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 403 "), data
    # nothing was drained; read-only endpoints still answer
    with socket.create_connection((host, slb.admin_port), timeout=5) as s:
        s.sendall(b"GET /clusters HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 200 ")
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body[0]["backends"][0]["drained"] == {"admin": False, "etcd": False}
    assert "refused: the peer is not on loopback" in slb.log()


def test_config_is_redacted(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("Fil3Secr3t\n")
    b0 = peers.start_c_backend("b0")
    # etcd that never answers: /config must not wait for it
    dead = peers.free_port()
    cfg = simple_config([b0.addr])
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    cfg["etcd"] = {"endpoints": ["http://127.0.0.1:%d" % dead], "username": "u", "password_file": str(pw),
                   "allow_insecure_password": True}
    slb = start_sidelb(cfg)
    status, headers, body = http(admin_port, "GET", "/config")
    assert status == 200 and headers["content-type"] == "application/json"
    assert b"Fil3Secr3t" not in body
    doc = json.loads(body)
    assert doc["etcd"]["password_file"] == str(pw)
    assert "password" not in doc["etcd"]
    assert doc["clusters"][0]["discovery"]["static"] == [b0.addr]
    slb.stop()
    cfg["etcd"] = {"endpoints": ["http://127.0.0.1:%d" % dead], "username": "u", "password": "Inl1neSecr3t",
                   "allow_insecure_password": True}
    cfg["listeners"][0]["address"] = "127.0.0.1:%d" % peers.free_port()
    slb = start_sidelb(cfg)
    status, _, body = http(admin_port, "GET", "/config")
    assert status == 200 and b"Inl1neSecr3t" not in body
    doc = json.loads(body)
    assert doc["etcd"]["password"] == "<redacted>"
    # the effective configuration: defaults filled in, given values as given
    assert doc["etcd"]["dial_timeout_ms"] == 2000 and doc["etcd"]["request_timeout_ms"] == 5000
    assert doc["listeners"][0]["max_concurrent_streams"] == 100
    assert doc["listeners"][0]["name"] == "test"
    assert doc["clusters"][0]["connect_timeout_ms"] == 5000
    assert doc["clusters"][0]["backoff"]["max_ms"] == 120000
    assert doc["clusters"][0]["discovery"]["static"] == [b0.addr]
    assert doc["budgets"]["total_bytes"] == 268435456
    assert "tls" not in doc["clusters"][0] and "access_log" not in doc  # absent means off: stays absent


def test_config_shows_the_values_in_effect_after_a_reload():
    b0 = peers.start_c_backend("b0")
    cfg = simple_config([b0.addr], max_waiting_calls=7)
    slb = start_with_admin_listener(cfg)
    doc = json.loads(http(slb.admin_port, "GET", "/config")[2])
    assert doc["clusters"][0]["max_waiting_calls"] == 7
    assert doc["listeners"][0]["max_concurrent_streams"] == 100
    assert doc["state_dir"] == slb.state_dir and "log_level" not in doc  # -l overrides it: not filled in
    # reload: a new given value shows, and a removed one shows its default again
    cfg = json.load(open(slb.config_path))
    del cfg["clusters"][0]["max_waiting_calls"]
    cfg["listeners"][0]["max_concurrent_streams"] = 50
    with open(slb.config_path, "w") as f:
        json.dump(with_test_workers(cfg), f)
    slb.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in slb.log() or "reload:" in slb.log(), 10, what="the reload")
    assert "reload:" not in slb.log(), slb.log()
    doc = json.loads(http(slb.admin_port, "GET", "/config")[2])
    assert doc["listeners"][0]["max_concurrent_streams"] == 50
    assert doc["clusters"][0]["max_waiting_calls"] == 1000
    assert doc["budgets"]["connection_bytes"] == 16777216


def test_ready_waits_for_etcd_while_healthz_answers_at_once():
    from etcd_harness import EtcdServer
    etcd = EtcdServer(start=False)
    try:
        b0 = peers.start_c_backend("b0")
        cfg = simple_config([b0.addr])
        cfg["clusters"].append({"name": "remote", "discovery": {"etcd_prefix": "/ready-test/"}})
        cfg["etcd"] = {"endpoints": [etcd.url], "dial_timeout_ms": 200, "request_timeout_ms": 500}
        slb = start_with_admin_listener(cfg)
        admin_port = slb.admin_port
        assert http(admin_port, "GET", "/healthz")[:3:2] == (200, b"ok\n")
        status, _, body = http(admin_port, "GET", "/ready")
        assert (status, body) == (503, b"not ready: cluster remote has no answer from etcd yet\n")
        assert http(admin_port, "HEAD", "/ready")[0] == 503
        etcd.start()
        wait_for(lambda: http(admin_port, "GET", "/ready")[0] == 200, 30, what="/ready 200 after etcd answered")
        assert http(admin_port, "GET", "/ready")[2] == b"ready\n"
    finally:
        etcd.destroy()


def test_ready_at_once_with_static_clusters_and_503_when_stopping():
    b0 = peers.start_c_backend("b0")
    slb = start_with_admin([b0])
    assert http(slb.admin_port, "GET", "/ready")[:3:2] == (200, b"ready\n")
    stub = peers.echo_stub(slb.addr)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(stub.Unary, req(delay_ms=2000), timeout=20)
        wait_for(lambda: backends(slb)[b0.addr]["outstanding"] == 1, 10)
        slb.signal(signal.SIGTERM)
        wait_for(lambda: http(slb.admin_port, "GET", "/ready")[0] == 503, 10)
        assert http(slb.admin_port, "GET", "/ready")[2] == b"not ready: stopping\n"
        assert slow.result().backend_id == "b0"
    assert slb.wait(10) == 0


def test_admin_drain_survives_a_reload():
    b0, b1 = peers.start_c_backend("b0"), peers.start_c_backend("b1")
    slb = start_with_admin([b0, b1])
    stub = peers.echo_stub(slb.addr)
    assert post(slb, "/clusters/echo/backends/%s/drain" % b0.addr)[0] == 200
    slb.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in slb.log() or "reload:" in slb.log(), 10, what="the reload")
    assert "reload:" not in slb.log(), slb.log()
    assert backends(slb)[b0.addr]["drained"] == {"admin": True, "etcd": False}
    # the old server may take a call or two right after SIGHUP; the new one never sends to b0
    wait_for(lambda: {stub.Unary(req(), timeout=5).backend_id for _ in range(10)} == {"b1"}, 10,
             what="calls only to b1 after the reload")
    assert post(slb, "/clusters/echo/backends/%s/undrain" % b0.addr)[0] == 200
    assert "b0" in {stub.Unary(req(), timeout=5).backend_id for _ in range(6)}
