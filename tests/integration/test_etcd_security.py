"""etcd auth (username/password, token) and TLS (CA, client cert) through the
sidelb daemon against a real etcd-server: sidelb follows an etcd prefix of a
secured etcd, and fails clearly (without crashing) when the credentials are wrong."""

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import grpc
import pytest

import peers
from etcd_harness import EtcdServer, _b64
from peers import req
from pki import RSA_KEY, make_ca, make_cert
from sidelb_harness import start_sidelb
import test_discovery
from test_discovery import spread, wait_spread

PREFIX = "/grpclb/sidelb.test.Echo/"
ETCDCTL = "/usr/bin/etcdctl"


def slb_config(etcd_section, port=None, **cluster_extra):
    port = port or peers.free_port()
    cluster = {"name": "echo", "discovery": {"etcd_prefix": PREFIX}, "policy": {"round_robin": {}},
               "backoff": {"initial_ms": 100, "max_ms": 500}}
    cluster.update(cluster_extra)
    etcd = {"dial_timeout_ms": 500, "request_timeout_ms": 1000}
    etcd.update(etcd_section)
    return {"etcd": etcd,
            "listeners": [{"address": "127.0.0.1:%d" % port,
                           "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
            "clusters": [cluster]}


class Relay(test_discovery.Relay):
    """test_discovery's cuttable TCP relay, minus the 2 s socket timeout its
    upstream socket inherits from create_connection (it broke idle watch
    streams every 2 s, which would hide token-expiry problems)."""

    @staticmethod
    def _pipe(a, b):
        a.settimeout(None)
        test_discovery.Relay._pipe(a, b)


def etcdctl(url, *args, user=None, tls=None, timeout=10):
    argv = [ETCDCTL, "--endpoints", url, "--command-timeout=5s"]
    if user:
        argv += ["--user", user]
    if tls:
        argv += ["--cacert", tls["ca_file"], "--cert", tls["cert_file"], "--key", tls["key_file"]]
    env = dict(os.environ, ETCDCTL_API="3")
    r = subprocess.run(argv + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    out = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, "etcdctl %s failed (%d): %s" % (" ".join(args), r.returncode, out)
    return out


def wait_log(proc, text, timeout):
    EtcdServer.wait_for(lambda: text in proc.log(), timeout, what="log line %r" % text)


def assert_unavailable(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value


# ---------------------------------------------------------------- auth


class AuthEtcd(EtcdServer):
    """One member with auth enabled: root:rootpw (all), sidelb:secret (read /grpclb/).
    The harness helpers (put/get/...) authenticate as root through the gateway."""

    ROOT = ("root", "rootpw")

    def __init__(self, token_ttl=None, **kw):
        self.token_ttl = token_ttl
        self.token = None
        super().__init__(**kw)
        etcdctl(self.url, "user", "add", "root:rootpw")
        etcdctl(self.url, "user", "add", "sidelb:secret")
        etcdctl(self.url, "role", "add", "reader")
        etcdctl(self.url, "role", "grant-permission", "reader", "--prefix=true", "read", "/grpclb/")
        etcdctl(self.url, "user", "grant-role", "sidelb", "reader")
        etcdctl(self.url, "auth", "enable")
        self.auth = True

    def _argv(self):
        argv = super()._argv()
        if self.token_ttl:
            argv += ["--auth-token-ttl", str(self.token_ttl)]
        return argv

    def _raw_post(self, path, body, headers=None, timeout=3.0):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        rq = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST", headers=h)
        with urllib.request.urlopen(rq, timeout=timeout) as r:
            return json.loads(r.read().decode() or "{}")

    def _post(self, path, body, timeout=3.0):
        if not getattr(self, "auth", False):
            return self._raw_post(path, body, timeout=timeout)
        for attempt in range(2):
            if self.token is None:
                self.token = self._raw_post("/v3/auth/authenticate",
                                            {"name": self.ROOT[0], "password": self.ROOT[1]})["token"]
            try:
                return self._raw_post(path, body, {"Authorization": self.token}, timeout)
            except urllib.error.HTTPError as e:
                if e.code != 401 or attempt:
                    raise
                self.token = None  # expired simple token

    def ctl_put(self, key, value):
        etcdctl(self.url, "put", key, value, user="root:rootpw")


def auth_section(etcd_url, password="secret"):
    # these tests run etcd over http:// on loopback: the password in clear must be allowed explicitly
    return {"endpoints": [etcd_url], "username": "sidelb", "password": password, "allow_insecure_password": True}


@pytest.fixture
def auth_etcd():
    e = AuthEtcd()
    yield e
    e.destroy()


@pytest.mark.serial  # a watch update within 1.5 s
@pytest.mark.timeout(40)
def test_auth_discovers_balances_and_watches(auth_etcd):
    bes = [peers.start_c_backend("a%d" % i) for i in range(3)]
    # auth really is on: anonymous reads are refused
    with pytest.raises(urllib.error.HTTPError):
        auth_etcd._raw_post("/v3/kv/range", {"key": _b64(PREFIX)})
    for b in bes[:2]:
        auth_etcd.ctl_put(PREFIX + b.addr, b.addr)
    slb = start_sidelb(slb_config(auth_section(auth_etcd.url)))
    stub = peers.echo_stub(slb.addr)
    wait_spread(stub, lambda c: c == {"a0": 6, "a1": 6}, 5)
    assert spread(stub, 20) == {"a0": 10, "a1": 10}
    # the watch stream carries the token: a key added later shows up
    auth_etcd.ctl_put(PREFIX + bes[2].addr, bes[2].addr)
    took = wait_spread(stub, lambda c: c == {"a0": 4, "a1": 4, "a2": 4}, 5)
    assert took < 1.5, "watch update took %.2f s" % took
    auth_etcd.delete(PREFIX + bes[0].addr)  # as root through the gateway
    wait_spread(stub, lambda c: c == {"a1": 6, "a2": 6}, 5)
    assert slb.alive()
    assert "authentication failed" not in slb.log()


@pytest.mark.timeout(40)
def test_auth_wrong_password_clear_error_no_crash(auth_etcd):
    b = peers.start_c_backend("w0")
    auth_etcd.ctl_put(PREFIX + b.addr, b.addr)
    # at the default log level (notice): the error must be visible without -l info
    slb = start_sidelb(slb_config(auth_section(auth_etcd.url, password="Wr0ngPassw0rd"), wait_for_ready_ms=0),
                       log_level="notice")
    stub = peers.echo_stub(slb.addr)
    wait_log(slb, "authentication failed", 5)
    assert_unavailable(stub)
    time.sleep(1.0)
    assert slb.alive()
    log = slb.log()
    assert "warn: etcd http://127.0.0.1:%d/v3/auth/authenticate: HTTP 400: etcdserver: authentication failed" % (
        auth_etcd.port) in log, log
    # no password leaks into the log
    assert "Wr0ngPassw0rd" not in log, log


@pytest.mark.timeout(40)
def test_auth_user_without_permission_clear_error(auth_etcd):
    """Right password, but the role does not cover the followed prefix."""
    etcdctl(auth_etcd.url, "user", "add", "nobody:pw", user="root:rootpw")
    b = peers.start_c_backend("p0")
    auth_etcd.ctl_put(PREFIX + b.addr, b.addr)
    cfg = slb_config({"endpoints": [auth_etcd.url], "username": "nobody", "password": "pw",
                      "allow_insecure_password": True}, wait_for_ready_ms=0)
    slb = start_sidelb(cfg, log_level="notice")
    stub = peers.echo_stub(slb.addr)
    wait_log(slb, "permission denied", 5)
    assert_unavailable(stub)
    assert slb.alive()


@pytest.mark.timeout(50)
def test_auth_token_expiry_watch_reconnect_reauthenticates():
    """Simple tokens expire after --auth-token-ttl of disuse. sidelb's watch is
    cut, stays away longer than the TTL, comes back: the reconnect must
    authenticate again (the old token is gone) and pick up new keys."""
    etcd = AuthEtcd(token_ttl=2)
    relay = Relay(etcd.port)
    try:
        bes = [peers.start_c_backend("t%d" % i) for i in range(3)]
        etcd.ctl_put(PREFIX + bes[0].addr, bes[0].addr)
        slb = start_sidelb(slb_config(auth_section(relay.url)))
        stub = peers.echo_stub(slb.addr)
        wait_spread(stub, lambda c: c == {"t0": 12}, 5)
        # an established stream outlives the token TTL
        time.sleep(3.0)
        etcd.ctl_put(PREFIX + bes[1].addr, bes[1].addr)
        wait_spread(stub, lambda c: c == {"t0": 6, "t1": 6}, 5)
        # the stream breaks; sidelb's token expires meanwhile
        relay.cut()
        time.sleep(3.0)
        relay.restore()
        etcd.ctl_put(PREFIX + bes[2].addr, bes[2].addr)
        took = wait_spread(stub, lambda c: c == {"t0": 4, "t1": 4, "t2": 4}, 10)
        assert took < 5, "resume after token expiry took %.2f s" % took
        # and the resumed watch keeps working
        etcd.delete(PREFIX + bes[0].addr)
        wait_spread(stub, lambda c: c == {"t1": 6, "t2": 6}, 5)
        assert slb.alive()
        # the path under test was taken: the stale token was refused, then sidelb logged in again
        assert "watch canceled" in slb.log() and "invalid auth token" in slb.log(), slb.log()
    finally:
        relay.close()
        etcd.destroy()


@pytest.mark.timeout(50)
def test_auth_etcd_restart_forgets_tokens(auth_etcd):
    """etcd keeps simple tokens in memory: after a restart every token is
    invalid, and sidelb must log in again to resume its watch."""
    bes = [peers.start_c_backend("r%d" % i) for i in range(2)]
    auth_etcd.ctl_put(PREFIX + bes[0].addr, bes[0].addr)
    slb = start_sidelb(slb_config(auth_section(auth_etcd.url)))
    stub = peers.echo_stub(slb.addr)
    wait_spread(stub, lambda c: c == {"r0": 12}, 5)
    auth_etcd.stop()
    auth_etcd.start()
    auth_etcd.token = None
    auth_etcd.ctl_put(PREFIX + bes[1].addr, bes[1].addr)
    took = wait_spread(stub, lambda c: c == {"r0": 6, "r1": 6}, 10)
    assert took < 5, "resume after an etcd restart took %.2f s" % took
    assert slb.alive()


# ---------------------------------------------------------------- TLS


def make_pki(d):
    """CA, server cert for 127.0.0.1 (server+client auth: etcd's gateway dials
    its own gRPC port with it), client cert, and a second unrelated CA."""
    usage = "keyUsage=digitalSignature,keyEncipherment\n"
    for ca in ("ca", "otherca"):
        make_ca(d, ca, newkey=RSA_KEY)
    make_cert(d, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n" + usage,
              cn="127.0.0.1", newkey=RSA_KEY)
    make_cert(d, "client", "ca", "extendedKeyUsage=clientAuth\n" + usage, cn="sidelb", newkey=RSA_KEY)
    return {k: os.path.join(d, k) for k in ("ca.pem", "otherca.pem", "server.pem", "server.key",
                                            "client.pem", "client.key")}


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="sidelb-pki-")
    try:
        yield make_pki(d)
    finally:
        shutil.rmtree(d, True)


class TlsEtcd(EtcdServer):
    """One member serving https with --client-cert-auth; helpers use the client cert."""

    def __init__(self, pki, **kw):
        self.pki = pki
        self.ctx = ssl.create_default_context(cafile=pki["ca.pem"])
        self.ctx.load_cert_chain(pki["client.pem"], pki["client.key"])
        EtcdServer.__init__(self, start=False, **kw)
        self.url = "https://127.0.0.1:%d" % self.port
        self.start()

    def _argv(self):
        return super()._argv() + ["--cert-file", self.pki["server.pem"], "--key-file", self.pki["server.key"],
                                  "--trusted-ca-file", self.pki["ca.pem"], "--client-cert-auth"]

    def _post(self, path, body, timeout=3.0):
        rq = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                    headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(rq, timeout=timeout, context=self.ctx) as r:
            return json.loads(r.read().decode() or "{}")


@pytest.fixture
def tls_etcd(pki):
    e = TlsEtcd(pki)
    yield e
    e.destroy()


def tls_section(etcd, pki, client_cert=True, ca="ca.pem"):
    tls = {"ca_file": pki[ca]}
    if client_cert:
        tls.update(cert_file=pki["client.pem"], key_file=pki["client.key"])
    return {"endpoints": [etcd.url], "tls": tls}


@pytest.mark.serial  # a watch update within 1.5 s
@pytest.mark.timeout(40)
def test_tls_client_cert_discovers_and_watches(tls_etcd, pki):
    bes = [peers.start_c_backend("s%d" % i) for i in range(3)]
    # etcd really requires the client cert
    noclient = ssl.create_default_context(cafile=pki["ca.pem"])
    with pytest.raises((OSError, urllib.error.URLError)):
        rq = urllib.request.Request(tls_etcd.url + "/v3/kv/range", data=b'{"key":"eA=="}', method="POST")
        urllib.request.urlopen(rq, timeout=3, context=noclient).read()
    # written with etcdctl over TLS, read by sidelb over TLS
    tls = {"ca_file": pki["ca.pem"], "cert_file": pki["client.pem"], "key_file": pki["client.key"]}
    for b in bes[:2]:
        etcdctl(tls_etcd.url, "put", PREFIX + b.addr, b.addr, tls=tls)
    slb = start_sidelb(slb_config(tls_section(tls_etcd, pki)))
    stub = peers.echo_stub(slb.addr)
    wait_spread(stub, lambda c: c == {"s0": 6, "s1": 6}, 5)
    assert spread(stub, 20) == {"s0": 10, "s1": 10}
    tls_etcd.put(PREFIX + bes[2].addr, bes[2].addr)
    took = wait_spread(stub, lambda c: c == {"s0": 4, "s1": 4, "s2": 4}, 5)
    assert took < 1.5, "watch update took %.2f s" % took
    tls_etcd.delete(PREFIX + bes[0].addr)
    wait_spread(stub, lambda c: c == {"s1": 6, "s2": 6}, 5)
    assert slb.alive()


@pytest.mark.timeout(40)
def test_tls_without_client_cert_clear_error_no_crash(tls_etcd, pki):
    b = peers.start_c_backend("n0")
    tls_etcd.put(PREFIX + b.addr, b.addr)
    slb = start_sidelb(slb_config(tls_section(tls_etcd, pki, client_cert=False), wait_for_ready_ms=0),
                       log_level="notice")
    stub = peers.echo_stub(slb.addr)
    EtcdServer.wait_for(lambda: _tls_error_line(slb.log()) is not None, 5, what="a TLS error in the log")
    # the server's alert (TLS 1.3: after the handshake, on the first read), not just "failure receiving data"
    line = _tls_error_line(slb.log())
    assert "alert" in line and "certificate" in line, slb.log()
    assert_unavailable(stub)
    time.sleep(1.0)
    assert slb.alive()


@pytest.mark.timeout(40)
def test_tls_untrusted_server_clear_error_no_crash(tls_etcd, pki):
    """The server's cert is not signed by the configured CA: verification fails, no fallback to trusting it."""
    b = peers.start_c_backend("u0")
    tls_etcd.put(PREFIX + b.addr, b.addr)
    slb = start_sidelb(slb_config(tls_section(tls_etcd, pki, ca="otherca.pem"), wait_for_ready_ms=0),
                       log_level="notice")
    stub = peers.echo_stub(slb.addr)
    EtcdServer.wait_for(lambda: _tls_error_line(slb.log()) is not None, 5, what="a TLS error in the log")
    assert "certificate" in _tls_error_line(slb.log()).lower(), slb.log()
    assert_unavailable(stub)
    assert slb.alive()


def _tls_error_line(log):
    """The first etcd log line that names an SSL/TLS failure, or None."""
    for line in log.splitlines():
        low = line.lower()
        if "warn: etcd https://" in low and ("ssl" in low or "tls" in low or "certificate" in low):
            return line
    return None


def test_pki_helper_sanity(pki):
    """The server cert carries the loopback SAN (else every TLS test would fail for the wrong reason)."""
    out = subprocess.run(["openssl", "x509", "-in", pki["server.pem"], "-noout", "-text"], stdout=subprocess.PIPE,
                         timeout=10).stdout.decode()
    assert "IP Address:127.0.0.1" in out
