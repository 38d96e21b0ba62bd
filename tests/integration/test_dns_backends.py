"""Host names as backends (static list and etcd values): every address a
name resolves to is a backend, looked up off the loop and again every
dns_refresh_ms; an unchanged answer changes nothing (no reconnect); a failed
lookup keeps the previous addresses and logs once; a name that never
resolves logs, leaves other backends working and names itself in the
UNAVAILABLE status.

The names are under the test's control: sidelb runs in a private mount
namespace (unshare -m, as root) where a temp file is bind-mounted over
/etc/hosts and nsswitch.conf says "hosts: files" (no DNS server is asked, so
the tests do not depend on the network). Rewriting the temp file in place
changes what the names resolve to. /etc/hosts of this machine maps localhost
to 127.0.0.1 only, so a name with both 127.0.0.1 and ::1 comes from there.
"""

import collections
import json
import os
import shutil
import socket
import signal
import subprocess
import tempfile
import time
import urllib.request

import grpc
import pytest

import peers
from etcd_harness import EtcdServer
from peers import req
from pki import make_ca, make_cert
from sidelb_harness import start_sidelb

NAME = "multi.sidelb.test"
PREFIX = "/grpclb/sidelb.test.Echo/"


def _can_unshare():
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root for a private mount namespace (unshare -m)")


class Hosts:
    """The hosts file sidelb sees, and a wrapper that runs sidelb with it."""

    def __init__(self, nameserver=None):
        """nameserver: an IP for DNS after /etc/hosts (resolv.conf: 1 s timeout, 1 attempt); None: no DNS."""
        self.dir = tempfile.mkdtemp(prefix="sidelb-dns-")
        self.path = os.path.join(self.dir, "hosts")
        self.nsswitch = os.path.join(self.dir, "nsswitch.conf")
        self.resolv = os.path.join(self.dir, "resolv.conf")
        with open(self.nsswitch, "w") as f:
            f.write("hosts: files dns\n" if nameserver else "hosts: files\n")
        with open(self.resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:1\n" % (nameserver or "127.0.0.1"))
        self.set({})
        self.wrapper = os.path.join(self.dir, "sidelb")
        with open(self.wrapper, "w") as f:
            # each step execs the next: the pid the harness signals is sidelb's
            f.write('#!/bin/sh\nexec unshare -m sh -c \'mount --bind "$0" /etc/hosts && '
                    'mount --bind "$1" /etc/nsswitch.conf && mount --bind "$2" /etc/resolv.conf && '
                    'shift 2 && exec "$@"\' %s %s %s %s "$@"\n'
                    % (self.path, self.nsswitch, self.resolv, peers.binary("sidelb")))
        os.chmod(self.wrapper, 0o755)

    def set(self, names):
        """names: {"host": ["ip", ...]}. Rewritten in place: the bind mount follows the inode."""
        lines = ["127.0.0.1 localhost"] + ["%s %s" % (ip, h) for h, ips in names.items() for ip in ips]
        with open(self.path, "r+" if os.path.exists(self.path) else "w") as f:
            f.seek(0)
            f.write("\n".join(lines) + "\n")
            f.truncate()

    def remove(self):
        shutil.rmtree(self.dir, True)


@pytest.fixture
def hosts():
    h = Hosts()
    yield h
    h.remove()


def dns_config(static=None, etcd=None, port=None, **cluster_extra):
    port = port or peers.free_port()
    discovery = {"static": static} if static is not None else {"etcd_prefix": PREFIX}
    cluster = {"name": "echo", "discovery": discovery, "policy": {"round_robin": {}},
               "backoff": {"initial_ms": 100, "max_ms": 500}}
    cluster.update(cluster_extra)
    cfg = {"listeners": [{"address": "127.0.0.1:%d" % port,
                          "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
           "clusters": [cluster]}
    if etcd is not None:
        cfg["etcd"] = {"endpoints": [etcd.url], "dial_timeout_ms": 500, "request_timeout_ms": 1000}
    return cfg


def spread(stub, n=20):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(n))


def settles_to(stub, want, timeout=10.0):
    end = time.monotonic() + timeout
    while True:
        got = spread(stub, 20)
        if set(got) == want:
            return got
        assert time.monotonic() < end, "calls went to %r, want %r" % (got, want)
        time.sleep(0.1)


def dual_stack_pair():
    """Backend a on 127.0.0.1:P and b on [::1]:P: the two addresses of one name and port."""
    a = peers.start_c_backend("a")
    b = peers.start_c_backend("b", port=a.port, extra_args=["--host", "::1"])
    return a, b


def test_name_with_two_addresses_and_one_that_never_resolves(hosts):
    a, b = dual_stack_pair()
    c = peers.start_c_backend("c")
    hosts.set({NAME: ["127.0.0.1", "::1"]})
    cfg = dns_config(["%s:%d" % (NAME, a.port), "no-such-host.invalid:81", c.addr], dns_refresh_ms=200)
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg, binary=hosts.wrapper)
    stub = peers.echo_stub(slb.addr)
    got = settles_to(stub, {"a", "b", "c"})
    assert sum(got.values()) == 20
    with urllib.request.urlopen("http://127.0.0.1:%d/clusters" % admin_port, timeout=5) as r:
        listed = {be["address"]: be.get("host_name") for be in json.loads(r.read())[0]["backends"]}
    assert listed == {"127.0.0.1:%d" % a.port: NAME, "[::1]:%d" % a.port: NAME, c.addr: None}
    log = slb.log()
    assert "backend 127.0.0.1:%d added" % a.port in log and "backend [::1]:%d added" % a.port in log
    # looked up again every 200 ms: still one line for the failure streak
    EtcdServer.wait_for(lambda: "cannot resolve no-such-host.invalid" in slb.log(), 5, what="the failure logged")
    time.sleep(1.0)
    assert slb.log().count("cannot resolve no-such-host.invalid") == 1
    assert slb.alive()


def test_reresolution_keeps_backends_when_unchanged_and_follows_changes(hosts):
    a, b = dual_stack_pair()
    hosts.set({NAME: ["127.0.0.1", "::1"]})
    slb = start_sidelb(dns_config(["%s:%d" % (NAME, a.port)], dns_refresh_ms=200), binary=hosts.wrapper)
    stub = peers.echo_stub(slb.addr)
    settles_to(stub, {"a", "b"})
    conns = (a.stats()["connections"], b.stats()["connections"])
    time.sleep(1.5)  # ~7 lookups with the same answer
    spread(stub, 10)
    assert (a.stats()["connections"], b.stats()["connections"]) == conns  # no reconnect
    assert "removed" not in slb.log()
    # the name loses ::1: b leaves, a stays (its connection too)
    hosts.set({NAME: ["127.0.0.1"]})
    settles_to(stub, {"a"})
    assert "backend [::1]:%d removed" % a.port in slb.log()
    assert a.stats()["connections"] == conns[0]
    # a failed lookup keeps what it had, and says so once
    hosts.set({})
    EtcdServer.wait_for(lambda: "keeping its 1 previous addresses" in slb.log(), 5, what="the failure logged")
    assert spread(stub, 10) == {"a": 10}
    time.sleep(0.6)
    assert slb.log().count("cannot resolve %s" % NAME) == 1
    # back with both addresses
    hosts.set({NAME: ["::1", "127.0.0.1"]})
    settles_to(stub, {"a", "b"})
    assert "%s resolves again" % NAME in slb.log()


def test_unresolved_name_only_gives_unavailable_naming_the_host(hosts):
    slb = start_sidelb(dns_config(["no-such-host.invalid:81"], wait_for_ready_ms=0), binary=hosts.wrapper)
    EtcdServer.wait_for(lambda: "cannot resolve no-such-host.invalid" in slb.log(), 5, what="the lookup")
    with pytest.raises(grpc.RpcError) as exc:
        peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no-such-host.invalid does not resolve" in exc.value.details()
    assert slb.alive()


def test_etcd_values_with_host_names(hosts):
    a, b = dual_stack_pair()
    c = peers.start_c_backend("c")
    hosts.set({NAME: ["127.0.0.1", "::1"], "c.sidelb.test": ["127.0.0.1"]})
    etcd = EtcdServer()
    try:
        etcd.put(PREFIX + "one", "%s:%d" % (NAME, a.port))  # the seeds' plain format
        etcd.put(PREFIX + "two", '{"addr": "c.sidelb.test:%d", "weight": 2}' % c.port)
        slb = start_sidelb(dns_config(etcd=etcd, dns_refresh_ms=200), binary=hosts.wrapper)
        stub = peers.echo_stub(slb.addr)
        settles_to(stub, {"a", "b", "c"})
        assert "weight 2" in slb.log()
        # "drain": true in the value drains every address of the name; false undrains them
        etcd.put(PREFIX + "one", '{"addr": "%s:%d", "drain": true}' % (NAME, a.port))
        settles_to(stub, {"c"})
        etcd.put(PREFIX + "one", '{"addr": "%s:%d"}' % (NAME, a.port))
        settles_to(stub, {"a", "b", "c"})
        # the key goes: both addresses of its name go
        etcd.delete(PREFIX + "one")
        settles_to(stub, {"c"})
        # a key naming an unknown host: logged, the rest keeps working
        etcd.put(PREFIX + "bad", "no-such-host.invalid:81")
        EtcdServer.wait_for(lambda: "cannot resolve no-such-host.invalid" in slb.log(), 5, what="the lookup")
        assert spread(stub, 5) == {"c": 5}
        assert slb.alive()
    finally:
        etcd.destroy()


def test_connect_failure_looks_the_name_up_again_soon(hosts):
    """dns_refresh_ms is a minute, yet when the name's backend stops answering
    and the name now points elsewhere, calls move there within seconds: a
    connect failure brings the next lookup forward (at most one a second)."""
    a = peers.start_c_backend("a")
    b = peers.start_c_backend("b", port=a.port, extra_args=["--host", "127.0.0.2"])
    hosts.set({NAME: ["127.0.0.1"]})
    slb = start_sidelb(dns_config(["%s:%d" % (NAME, a.port)], dns_refresh_ms=60000, wait_for_ready_ms=5000),
                       binary=hosts.wrapper)
    stub = peers.echo_stub(slb.addr)
    assert spread(stub, 5) == {"a": 5}
    hosts.set({NAME: ["127.0.0.2"]})
    a.stop()
    start = time.monotonic()
    settles_to(stub, {"b"}, timeout=15)
    assert time.monotonic() - start < 15
    assert "backend 127.0.0.2:%d added" % a.port in slb.log()
    assert "backend 127.0.0.1:%d removed" % a.port in slb.log()


def test_reload_keeps_the_addresses_a_name_had(hosts):
    """A SIGHUP while the name does not resolve (a DNS outage): the new server
    starts from the addresses the old one had, so calls keep working (without
    that, it would have no backend: UNAVAILABLE)."""
    a, b = dual_stack_pair()
    hosts.set({NAME: ["127.0.0.1", "::1"]})
    slb = start_sidelb(dns_config(["%s:%d" % (NAME, a.port)], dns_refresh_ms=200, wait_for_ready_ms=0),
                       binary=hosts.wrapper)
    stub = peers.echo_stub(slb.addr)
    settles_to(stub, {"a", "b"})
    hosts.set({})
    slb.signal(signal.SIGHUP)
    EtcdServer.wait_for(lambda: "reloaded" in slb.log(), 10, what="the reload")
    time.sleep(0.5)  # the old server is gone: every call is the new server's
    assert set(spread(stub, 20)) == {"a", "b"}
    assert "%s starts from the 2 addresses it had before the reload" % NAME in slb.log()
    EtcdServer.wait_for(lambda: "keeping its 2 previous addresses" in slb.log(), 5, what="the failed lookup")


def test_calls_wait_for_the_first_lookup(tmp_path):
    """Calls that arrive while a name's first lookup runs wait for it, even
    without wait-for-ready (gRPC queues calls until its resolver's first
    answer). The lookup is made slow by a DNS server that never answers (1 s
    resolver timeout); calls then fail UNAVAILABLE naming the host, not before."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        silent.bind(("127.0.0.77", 53))
    except OSError:
        pytest.skip("cannot bind 127.0.0.77:53")
    h = Hosts(nameserver="127.0.0.77")
    try:
        a = peers.start_c_backend("a")
        slb = start_sidelb(dns_config(["slow.sidelb.test:%d" % a.port], wait_for_ready_ms=0), binary=h.wrapper)
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as exc:
            peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=10)
        waited = time.monotonic() - start
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "slow.sidelb.test does not resolve" in exc.value.details()
        assert waited > 0.5, "the call failed after %.3f s, before the lookup ended" % waited
        assert "cannot resolve slow.sidelb.test" in slb.log()
    finally:
        silent.close()
        h.remove()


def test_tls_verifies_the_host_name_a_backend_was_resolved_from(hosts, tmp_path):
    """A backend resolved from tls.sidelb.test:P is verified (and gets SNI)
    against tls.sidelb.test, the name its certificate carries (no IP in it),
    not against the address it resolved to."""
    d = str(tmp_path)

    make_ca(d, "ca")
    make_cert(d, "srv", "ca", "subjectAltName=DNS:tls.sidelb.test\nextendedKeyUsage=serverAuth\n",
              cn="tls.sidelb.test")
    a = peers.start_c_backend("a", extra_args=["--tls-cert", os.path.join(d, "srv.pem"),
                                               "--tls-key", os.path.join(d, "srv.key")])
    hosts.set({"tls.sidelb.test": ["127.0.0.1"]})
    slb = start_sidelb(dns_config(["tls.sidelb.test:%d" % a.port], tls={"ca_file": os.path.join(d, "ca.pem")}),
                       binary=hosts.wrapper)
    assert spread(peers.echo_stub(slb.addr), 5) == {"a": 5}


def test_reload_keeps_the_addresses_of_names_in_etcd_values(hosts):
    """The same for a name read from etcd: the new server takes the old one's
    table and the addresses its names had, even if the name does not resolve now."""
    a, b = dual_stack_pair()
    hosts.set({NAME: ["127.0.0.1", "::1"]})
    etcd = EtcdServer()
    try:
        etcd.put(PREFIX + "one", "%s:%d" % (NAME, a.port))
        # default wait_for_ready_ms: the first calls may come before etcd's first answer
        slb = start_sidelb(dns_config(etcd=etcd, dns_refresh_ms=200), binary=hosts.wrapper)
        stub = peers.echo_stub(slb.addr)
        settles_to(stub, {"a", "b"})
        hosts.set({})
        slb.signal(signal.SIGHUP)
        EtcdServer.wait_for(lambda: "reloaded" in slb.log(), 10, what="the reload")
        time.sleep(0.5)
        assert set(spread(stub, 20)) == {"a", "b"}
        assert "%s starts from the 2 addresses it had before the reload" % NAME in slb.log()
    finally:
        etcd.destroy()
