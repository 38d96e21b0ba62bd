"""TLS and mTLS to backends (clusters' "tls"), health checks over the same
TLS, and TLS on app listeners, with certificates made by openssl here: a CA,
a server certificate for 127.0.0.1 and localhost, a client certificate, an
expired server certificate and one from another CA. Backends are grpcio
servers with ssl credentials (require_client_auth for mTLS) and, for a peer
without ALPN h2, `openssl s_server -alpn http/1.1`.

Every bad case must give a clear log line, a call that ends UNAVAILABLE with
the reason in its message, a failure counted in the metrics, and no crash."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request

import grpc
import pytest

import peers
from pki import make_ca, make_cert
from peers import req
from sidelb_harness import simple_config, start_sidelb
from test_admin import metric as admin_metric


def make_pki(d):
    """EC P-256 keys (quick to make on a loaded machine)."""
    server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    for ca in ("ca", "otherca"):
        make_ca(d, ca)
    make_cert(d, "server", "ca", server)
    make_cert(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    make_cert(d, "expired", "ca", server, days="-1")
    make_cert(d, "other", "otherca", server)
    with open(os.path.join(d, "garbage.key"), "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    return {n: os.path.join(d, n) for n in os.listdir(d)}


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="sidelb-tls-")
    try:
        yield make_pki(d)
    finally:
        shutil.rmtree(d, True)


def tls_backend(pki, id, cert="server", client_ca=None, extra=()):
    args = ["--tls-cert", pki[cert + ".pem"], "--tls-key", pki[cert + ".key"]]
    if client_ca:
        args += ["--tls-client-ca", pki[client_ca]]
    return peers.start_py_backend(id, extra_args=args + list(extra))


def start(backends, tls, admin=True, **kw):
    cfg = simple_config(backends, tls=tls, **kw)
    if admin:
        cfg["admin"] = {"address": "127.0.0.1:%d" % peers.free_port()}
    slb = start_sidelb(cfg)
    slb.admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1]) if admin else None
    return slb


def metric(slb, name):
    return admin_metric(slb, name, cluster="echo")


def clusters(slb):
    return json.loads(urllib.request.urlopen("http://127.0.0.1:%d/clusters" % slb.admin_port, timeout=5).read())


def calls_ok(slb, n=10):
    stub = peers.echo_stub("127.0.0.1:%d" % slb.port)
    for i in range(n):
        r = stub.Unary(req(payload=b"x%d" % i), timeout=10)
        assert r.payload == b"x%d" % i


def failing_call(slb):
    """A call that must end UNAVAILABLE; returns its message."""
    stub = peers.echo_stub("127.0.0.1:%d" % slb.port)
    with pytest.raises(grpc.RpcError) as ei:
        stub.Unary(req(payload=b"x"), timeout=15)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    return ei.value.details()


def wait_log(proc, pattern, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if re.search(pattern, proc.log()):
            return
        time.sleep(0.05)
    raise AssertionError("no log line matching %r in:\n%s" % (pattern, proc.log()[-3000:]))


# Failing backends get short waits, so a failing call ends in about a second.
FAST_FAIL = {"wait_for_ready_ms": 1000, "backoff": {"initial_ms": 100, "max_ms": 500}}


def test_calls_over_tls_with_health_checks(pki):
    be = tls_backend(pki, "t1")
    slb = start([be.addr], {"ca_file": pki["ca.pem"]}, health_check={"interval_ms": 200})
    calls_ok(slb, 20)
    b = clusters(slb)[0]["backends"][0]
    assert b["health"] == "SERVING", b  # the health check spoke TLS too
    assert metric(slb, "sidelb_upstream_tls_handshakes_total") >= 2  # calls + health check
    assert metric(slb, "sidelb_upstream_tls_handshake_failures_total") == 0
    assert be.stats()["calls"] >= 20


def test_mtls_calls(pki):
    be = tls_backend(pki, "m1", client_ca="ca.pem")
    slb = start([be.addr], {"ca_file": pki["ca.pem"], "cert_file": pki["client.pem"], "key_file": pki["client.key"],
                            "min_version": "1.3"}, health_check={})
    calls_ok(slb, 10)
    assert clusters(slb)[0]["backends"][0]["health"] == "SERVING"


def test_localhost_address_verifies_dns_name(pki):
    """A backend named localhost:port is verified against the DNS SAN localhost (and sent as SNI)."""
    be = tls_backend(pki, "l1")
    port = be.addr.rsplit(":", 1)[1]
    slb = start(["localhost:" + port], {"ca_file": pki["ca.pem"]})
    calls_ok(slb, 3)


def test_server_name_overrides_the_address(pki):
    """server_name: SNI and the name verified, whatever the backend's address (an IP here)."""
    be = tls_backend(pki, "sn")
    slb = start([be.addr], {"ca_file": pki["ca.pem"], "server_name": "localhost"}, health_check={})
    calls_ok(slb, 3)
    assert clusters(slb)[0]["backends"][0]["health"] == "SERVING"


@pytest.mark.serial  # its status carries the TLS reason only if the 1 s wait ends outside a reconnect attempt
@pytest.mark.parametrize("case,cert,tls_extra,reason", [
    ("wrong_ca", "other", {}, r"certificate verify failed: unable to get local issuer certificate"),
    ("wrong_name", "server", {"server_name": "wrong.example.com"}, r"certificate verify failed: hostname mismatch"),
    ("expired", "expired", {}, r"certificate verify failed: certificate has expired"),
])
def test_bad_server_certificate(pki, case, cert, tls_extra, reason):
    be = tls_backend(pki, case, cert=cert)
    tls = {"ca_file": pki["ca.pem"]}
    tls.update(tls_extra)
    slb = start([be.addr], tls, **FAST_FAIL)
    msg = failing_call(slb)
    assert re.search(reason, msg), msg
    assert "no reachable backend" in msg
    wait_log(slb, r"backend 127\.0\.0\.1:\d+: connect failed: " + reason)
    assert metric(slb, "sidelb_upstream_tls_handshake_failures_total") >= 1
    assert be.stats()["calls"] == 0
    # the failure is logged loudly once per state change, not per attempt
    time.sleep(0.5)
    assert len(re.findall(r"connect failed: ", slb.log())) == 1, slb.log()[-3000:]
    assert slb.alive()


@pytest.mark.serial  # its status carries the TLS reason only if the 1 s wait ends outside a reconnect attempt
def test_missing_client_certificate(pki):
    be = tls_backend(pki, "nocert", client_ca="ca.pem")
    slb = start([be.addr], {"ca_file": pki["ca.pem"]}, **FAST_FAIL)
    msg = failing_call(slb)
    # TLS 1.3: the server's alert comes after the client's handshake ended; TLS 1.2: during it
    assert re.search(r"alert certificate required|alert handshake failure|requires a client certificate", msg), msg
    assert metric(slb, "sidelb_upstream_tls_handshake_failures_total") >= 1
    assert be.stats()["calls"] == 0
    assert slb.alive()


def test_health_check_over_tls_fails_with_reason(pki):
    """A health check that cannot verify the backend keeps it out, and says why."""
    be = tls_backend(pki, "hc_bad", cert="other")
    slb = start([be.addr], {"ca_file": pki["ca.pem"]}, health_check={"interval_ms": 200}, **FAST_FAIL)
    wait_log(slb, r"health 127\.0\.0\.1:\d+ \"\": connection closed: certificate verify failed")
    assert clusters(slb)[0]["backends"][0]["health"] == "NOT_SERVING"


@pytest.mark.serial  # its status carries the TLS reason only if the 1 s wait ends outside a reconnect attempt
@pytest.mark.parametrize("alpn,reason", [
    (["-alpn", "http/1.1"], r"alert no application protocol"),  # it refuses our h2 offer
    ([], r'the peer did not agree to ALPN "h2" \(it chose none\)'),  # it ignores ALPN
])
def test_backend_without_alpn_h2(pki, alpn, reason):
    port = peers.free_port()
    srv = peers.Proc(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", pki["server.pem"], "-key",
                      pki["server.key"], "-www"] + alpn, name="s_server", ready=r"ACCEPT", port=port)
    assert srv.alive()
    slb = start(["127.0.0.1:%d" % port], {"ca_file": pki["ca.pem"]}, **FAST_FAIL)
    msg = failing_call(slb)
    assert re.search(reason, msg), msg
    wait_log(slb, r"connect failed: .*" + reason)
    assert metric(slb, "sidelb_upstream_tls_handshake_failures_total") >= 1
    assert slb.alive()


@pytest.mark.serial  # its status carries the TLS reason only if the 1 s wait ends outside a reconnect attempt
def test_plaintext_backend_behind_tls_cluster(pki):
    """A cleartext h2c backend where TLS is expected: a clear TLS reason, no hang, no crash."""
    be = peers.start_py_backend("plain")
    slb = start([be.addr], {"ca_file": pki["ca.pem"]}, **FAST_FAIL)
    msg = failing_call(slb)
    assert "last connect error: backend" in msg, msg
    assert slb.alive()


def test_session_resumed_on_reconnect(pki):
    """Each call on its own connection (max_requests_per_connection 1): the
    later handshakes resume the session an earlier one got (the backend's
    newest, kept per backend)."""
    be = tls_backend(pki, "resume")
    slb = start([be.addr], {"ca_file": pki["ca.pem"]}, max_requests_per_connection=1)
    calls_ok(slb, 6)
    handshakes = metric(slb, "sidelb_upstream_tls_handshakes_total")
    resumed = metric(slb, "sidelb_upstream_tls_resumed_total")
    assert handshakes >= 6
    # the first is full; a second may start before the first's ticket arrived
    assert resumed >= handshakes - 2, (resumed, handshakes)
    assert metric(slb, "sidelb_upstream_tls_handshake_failures_total") == 0


def check_config(tmpdir, cfg):
    path = os.path.join(tmpdir, "c.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    r = subprocess.run([peers.binary("sidelb"), "--check-config", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    return r.returncode, r.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize("tls,path,words", [
    ({"ca_file": "/nonexistent/ca.pem"}, "clusters[0].tls.ca_file", "/nonexistent/ca.pem: cannot load the CA"),
    ({"cert_file": "CLIENT", "key_file": "/nonexistent/k.pem"}, "clusters[0].tls.key_file",
     "/nonexistent/k.pem: cannot load the private key"),
    ({"cert_file": "CLIENT", "key_file": "GARBAGE"}, "clusters[0].tls.key_file", "cannot load the private key"),
    ({"cert_file": "CLIENT", "key_file": "SERVERKEY"}, "clusters[0].tls.key_file", "key values mismatch"),
    ({"cert_file": "CLIENT"}, "clusters[0].tls", "cert_file and key_file go together"),
    ({"min_version": "1.1"}, "clusters[0].tls.min_version", 'unknown TLS version "1.1"'),
    ({"client_ca_file": "x"}, "clusters[0].tls.client_ca_file", "unknown key"),
])
def test_bad_tls_config_is_rejected(pki, tmp_path, tls, path, words):
    subst = {"CLIENT": pki["client.pem"], "GARBAGE": pki["garbage.key"], "SERVERKEY": pki["server.key"]}
    tls = {k: subst.get(v, v) for k, v in tls.items()}
    rc, out = check_config(str(tmp_path), simple_config(["127.0.0.1:1"], tls=tls))
    assert rc != 0, out
    assert path + ":" in out and words in out, out


def test_reload_rereads_certificates(pki, tmp_path):
    """SIGHUP builds new TLS contexts: a client key replaced on disk is used after the reload."""
    be = tls_backend(pki, "reload", client_ca="ca.pem")
    cert, key = str(tmp_path / "c.pem"), str(tmp_path / "c.key")
    shutil.copy(pki["client.pem"], cert)
    shutil.copy(pki["client.key"], key)
    cfg = simple_config([be.addr], tls={"ca_file": pki["ca.pem"], "cert_file": cert, "key_file": key},
                        wait_for_ready_ms=1000)
    slb = start_sidelb(cfg)
    calls_ok(slb, 3)
    # a client certificate from another CA (with its key) replaces the good one: the backend refuses it
    shutil.copy(pki["other.pem"], cert)
    shutil.copy(pki["other.key"], key)
    slb.signal(1)
    wait_log(slb, r"reloaded ")
    end = time.time() + 15
    while time.time() < end:
        try:
            calls_ok(slb, 1)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the reloaded config still used the old client certificate")
    assert slb.alive()


# ---- app listeners with TLS ----

def tls_listener_config(pki, backend, client_ca=False):
    cfg = simple_config([backend])
    tls = {"cert_file": pki["server.pem"], "key_file": pki["server.key"]}
    if client_ca:
        tls["client_ca_file"] = pki["ca.pem"]
    cfg["listeners"][0]["tls"] = tls
    return cfg


def read(path):
    with open(path, "rb") as f:
        return f.read()


def tls_stub(pki, port, client_cert=True, ca="ca.pem"):
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(pki[ca]),
        private_key=read(pki["client.key"]) if client_cert else None,
        certificate_chain=read(pki["client.pem"]) if client_cert else None)
    return peers.echo_grpc.EchoStub(grpc.secure_channel("127.0.0.1:%d" % port, creds))


def test_app_listener_tls(pki):
    be = peers.start_py_backend("down1")
    slb = start_sidelb(tls_listener_config(pki, be.addr))
    stub = tls_stub(pki, slb.port, client_cert=False)
    for i in range(10):
        assert stub.Unary(req(payload=b"d%d" % i), timeout=10).payload == b"d%d" % i
    # idle for over a second: the sweep hands OpenSSL's buffers back; the connection goes on
    time.sleep(2.5)
    assert stub.Unary(req(payload=b"after idle"), timeout=10).payload == b"after idle"
    # a cleartext client is not served
    with pytest.raises(grpc.RpcError) as ei:
        peers.echo_stub("127.0.0.1:%d" % slb.port).Unary(req(payload=b"x"), timeout=3)
    assert ei.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert slb.alive()


def test_app_listener_certificate_reread_on_reload(pki, tmp_path):
    """SIGHUP: new app connections get the certificate now on disk."""
    be = peers.start_py_backend("down3")
    cert, key = str(tmp_path / "s.pem"), str(tmp_path / "s.key")
    shutil.copy(pki["server.pem"], cert)
    shutil.copy(pki["server.key"], key)
    cfg = simple_config([be.addr])
    cfg["listeners"][0]["tls"] = {"cert_file": cert, "key_file": key}
    slb = start_sidelb(cfg)
    assert tls_stub(pki, slb.port, client_cert=False).Unary(req(payload=b"a"), timeout=10).payload == b"a"
    shutil.copy(pki["other.pem"], cert)  # from the other CA
    shutil.copy(pki["other.key"], key)
    slb.signal(1)
    wait_log(slb, r"reloaded ")
    # a client trusting only the first CA is refused now; one trusting the other CA is served
    with pytest.raises(grpc.RpcError) as ei:
        tls_stub(pki, slb.port, client_cert=False).Unary(req(payload=b"x"), timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert tls_stub(pki, slb.port, client_cert=False, ca="otherca.pem").Unary(
        req(payload=b"b"), timeout=10).payload == b"b"


def test_app_listener_mtls(pki):
    be = peers.start_py_backend("down2")
    cfg = tls_listener_config(pki, be.addr, client_ca=True)
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg)
    assert tls_stub(pki, slb.port).Unary(req(payload=b"m"), timeout=10).payload == b"m"
    with pytest.raises(grpc.RpcError) as ei:
        tls_stub(pki, slb.port, client_cert=False).Unary(req(payload=b"x"), timeout=5)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    wait_log(slb, r"listener test: an app's TLS connection failed: .*(certificate|handshake)")
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port, timeout=5).read().decode()
    n = re.search(r'^sidelb_downstream_tls_handshake_failures_total\{listener="test"\} (\d+)$', body, re.M)
    assert n and int(n.group(1)) >= 1, body
    assert slb.alive()


# ---- registration health checks ----

@pytest.mark.timeout(60)
def test_register_health_check_over_tls(pki):
    """A register[] entry's health check speaks its own "tls" to the local
    service: with the right CA the key is published; with a CA that does not
    verify the service it stays out, and the log says why."""
    from etcd_harness import EtcdServer
    etcd = EtcdServer()
    be = tls_backend(pki, "reg")
    good, bad = "/sidelb-tls/good/", "/sidelb-tls/bad/"
    cfg = simple_config([be.addr], tls={"ca_file": pki["ca.pem"]})
    cfg["etcd"] = {"endpoints": [etcd.url]}
    hc = {"interval_ms": 200, "timeout_ms": 1000}
    cfg["register"] = [
        {"prefix": good, "address": be.addr, "ttl_s": 5, "health_check": hc, "tls": {"ca_file": pki["ca.pem"]}},
        {"prefix": bad, "address": be.addr, "ttl_s": 5, "health_check": hc, "tls": {"ca_file": pki["otherca.pem"]}},
    ]
    slb = start_sidelb(cfg)
    etcd.wait_for(lambda: etcd.get(good + be.addr) == be.addr, 10, what="key registered over TLS")
    wait_log(slb, r"health 127\.0\.0\.1:\d+ \"\": connection closed: certificate verify failed")
    assert etcd.get(bad + be.addr) is None


def test_register_tls_needs_health_check(pki, tmp_path):
    cfg = simple_config(["127.0.0.1:1"])
    cfg["etcd"] = {"endpoints": ["http://127.0.0.1:2379"]}
    cfg["register"] = [{"prefix": "/p/", "address": "127.0.0.1:1", "tls": {"ca_file": pki["ca.pem"]}}]
    rc, out = check_config(str(tmp_path), cfg)
    assert rc != 0 and "register[0].tls:" in out and "needs \"health_check\"" in out, out


# ---- the C test backend over TLS (libsidelb's filter on the server side) ----

def c_tls_backend(pki, id, client_ca=None):
    args = ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]]
    if client_ca:
        args += ["--tls-client-ca", pki[client_ca]]
    return peers.start_c_backend(id, extra_args=args)


def test_c_backend_over_mtls_with_resumption(pki):
    be = c_tls_backend(pki, "ctls", client_ca="ca.pem")
    # a grpcio client straight to it: the C backend's TLS is real TLS
    assert tls_stub(pki, be.port).Unary(req(payload=b"direct"), timeout=10).payload == b"direct"
    slb = start([be.addr], {"ca_file": pki["ca.pem"], "cert_file": pki["client.pem"], "key_file": pki["client.key"]},
                health_check={}, max_requests_per_connection=1)
    calls_ok(slb, 8)
    resumed = metric(slb, "sidelb_upstream_tls_resumed_total")
    handshakes = metric(slb, "sidelb_upstream_tls_handshakes_total")
    assert handshakes >= 9 and resumed >= handshakes - 3, (resumed, handshakes)
    assert be.stats()["ok"] >= 9
